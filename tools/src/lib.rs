//! Borealis operator and developer programs. The local cluster launcher (`borealis dev`) arrives
//! with step 3 of the plan and the simulator (`borealis-sim`) with step 5 (see the README).
