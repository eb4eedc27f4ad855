//! The Borealis storage daemon: a sans-IO core (`core`) that decides what to store, acknowledge
//! and refuse, driven by thin drivers for the io_uring journal and the QUIC endpoint.

pub(crate) mod checkpoint;
pub(crate) mod config;
pub mod core;
pub(crate) mod dual;
pub mod journal;
pub(crate) mod keyring;
pub(crate) mod meta;
pub mod seal;
pub(crate) mod server;
pub mod storage;
pub mod store;

use clap::Parser;

/// The `storaged` command line: parse the configuration, start the node on an io_uring
/// runtime, and turn any start-up failure into one clear line on stderr. Returns the exit
/// status. Other binaries (the local cluster launcher, benchmarks) run nodes through this too.
pub fn cli_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let cli = match config::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BOREALIS_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    let result = config::Config::load(&cli)
        .map_err(|e| e.to_string())
        .and_then(|config| tokio_uring::start(server::run(config)).map_err(|e| e.to_string()));
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("storaged: {error}");
            1
        }
    }
}
