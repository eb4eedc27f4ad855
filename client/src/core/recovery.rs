//! Writer recovery computations (DESIGN §3), pure. The driver gathers the inputs from the
//! segments and carries out the decisions.
