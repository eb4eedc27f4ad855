//! The Borealis storage daemon: a sans-IO core (`core`) that decides what to store, acknowledge
//! and refuse, driven by thin drivers for the io_uring journal and the QUIC endpoint.

pub(crate) mod checkpoint;
pub(crate) mod config;
pub mod core;
pub mod data_key_rotation;
pub(crate) mod dual;
pub mod journal;
pub mod kek_rotation;
pub(crate) mod keyring;
pub(crate) mod meta;
pub mod seal;
pub(crate) mod server;
pub mod storage;
pub mod store;

/// How long a node's drain on SIGTERM may take, and the grace its last acknowledgements get:
/// what a process manager waits before it kills a stopping node.
pub use server::lifecycle::{ACK_GRACE, DRAIN_MAX};

use clap::Parser;

/// The `storaged` command line: parse the configuration, start the node on an io_uring
/// runtime, and turn any start-up failure into one clear line on stderr. Returns the exit
/// status. Other binaries (the local cluster launcher, benchmarks) run nodes through this too.
/// `storaged rotate-kek ...` is the offline KEK rotation instead (`kek_rotation::cli_main`).
pub fn cli_main(args: impl IntoIterator<Item = std::ffi::OsString>) -> i32 {
    let mut args = args.into_iter().peekable();
    let program = args.next();
    if args.peek().is_some_and(|arg| arg == "rotate-kek") {
        return kek_rotation::cli_main(args.skip(1));
    }
    let cli = match config::Cli::try_parse_from(program.into_iter().chain(args)) {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return error.exit_code();
        }
    };
    let result = config::Config::load(&cli).map_err(|e| e.to_string()).and_then(|config| {
        let filter = tracing_subscriber::EnvFilter::try_new(&config.log)
            .map_err(|e| format!("log filter {:?}: {e}", config.log))?;
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            // Colour codes only for a terminal: journald and log files get plain text.
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_filter_reloading();
        let filters = subscriber.reload_handle();
        // A process that runs several nodes (tests) keeps the first subscriber.
        let _ = subscriber.try_init();
        let reload = server::lifecycle::Reload {
            config: Box::new(move || config::Config::load(&cli).map_err(|e| e.to_string())),
            log: Box::new(move |log| {
                let filter = tracing_subscriber::EnvFilter::try_new(log).map_err(|e| e.to_string())?;
                filters.reload(filter).map_err(|e| e.to_string())
            }),
        };
        tokio_uring::start(server::run(config, reload)).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("storaged: {error}");
            1
        }
    }
}
