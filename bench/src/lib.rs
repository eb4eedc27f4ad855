//! Borealis benchmarks. The end-to-end load generator arrives with step 6 of the plan (see the
//! README).
