//! The engine-facing Borealis library. It arrives with step 3 of the plan (see the README): a
//! sans-IO core (LSN allocation, batching, quorum tracking, recovery) and a quinn driver.
