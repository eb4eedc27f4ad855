//! The binary's subcommands: each runs its benchmark (the `bench` library's load generators)
//! and prints its report. `main` parses the command line and dispatches here.

pub(crate) mod append;
pub(crate) mod budget;
pub(crate) mod compare;
pub(crate) mod limits;
pub(crate) mod nbd;
pub(crate) mod node;
pub(crate) mod read;
pub(crate) mod recovery;
pub(crate) mod repair;
pub(crate) mod sqlite;
