//! The Borealis storage daemon. It arrives with step 2 of the plan (see the README): a sans-IO
//! segment core (SCL, epochs, truncation) with io_uring journal and quinn drivers around it.
