//! `storaged`: parse the configuration, start the node on an io_uring runtime, and turn any
//! start-up failure into one clear line on stderr and exit status 1.

use clap::Parser;
use storaged::config::{Cli, Config};

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOREALIS_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = match Config::load(&cli) {
        Ok(config) => config,
        Err(error) => fail(&error),
    };
    if let Err(error) = tokio_uring::start(storaged::server::run(config)) {
        fail(&error);
    }
}

fn fail(error: &dyn std::fmt::Display) -> ! {
    eprintln!("storaged: {error}");
    std::process::exit(1);
}
