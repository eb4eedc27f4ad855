//! The running daemon: opens the data directory, replays the journal into the core, and runs
//! the journal task and the QUIC accept loop on one io_uring thread until told to stop.

pub mod admin;
pub mod coalescer;
pub mod gossip;
pub mod hydrate;
pub mod journal_task;
pub mod pages;
pub mod scrub;
pub mod shared;
pub mod streams;

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use protocol::placement::NodeInfo;

use crate::checkpoint::CheckpointStore;
use crate::config::Config;
use crate::core::NodeCore;
use crate::journal::replay::{replay, JOURNAL_PREFIX, PAGES_PREFIX};
use crate::journal::writer::{Journal, JournalConfig};
use crate::keyring::{Keyring, KeyringError};
use crate::seal::{Kek, SealError};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error(transparent)]
    Key(#[from] SealError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("journal: {0}")]
    Journal(std::io::Error),
    #[error("listen address {addr} is already in use")]
    AddrInUse { addr: std::net::SocketAddr },
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("{0}")]
    Admin(String),
}

/// Starts the node and serves until SIGINT or SIGTERM.
pub async fn run(config: Config) -> Result<(), StartError> {
    let _lock = lock_data_dir(&config.data_dir)?;
    let journal_dir = config.data_dir.join("journal");
    std::fs::create_dir_all(&journal_dir).map_err(|e| data_dir_error(&journal_dir, e))?;
    let pages_dir = config.data_dir.join("pages");
    std::fs::create_dir_all(&pages_dir).map_err(|e| data_dir_error(&pages_dir, e))?;
    let keyring = Keyring::open(&config.data_dir, config.node_id, Kek::load(&config.key_file)?)?;
    let mut core = NodeCore::new(config.node_id, config.az, config.limits);
    let started = Instant::now();
    let (checkpoints, checkpoint) = CheckpointStore::open(&config.data_dir);
    let mut rebuilds = Vec::new();
    let (start, pages_start) = match checkpoint {
        Ok(Some(checkpoint)) => {
            checkpoint.segments.into_iter().for_each(|segment| core.restore_segment(segment));
            rebuilds = checkpoint.hydrations;
            (Some(checkpoint.position), Some(checkpoint.pages_position))
        }
        Ok(None) => (None, None),
        Err(error) => {
            tracing::warn!(%error, "no usable checkpoint; replaying the whole journal and page store");
            (None, None)
        }
    };
    // Records first: an image found in the page store tail applies only to records held.
    let mut visit = |pg, body: &_, location| core.replay(pg, body, location);
    let replayed =
        replay(&journal_dir, JOURNAL_PREFIX, &keyring, start, &mut visit).map_err(StartError::Journal)?;
    let pages_replayed =
        replay(&pages_dir, PAGES_PREFIX, &keyring, pages_start, &mut visit).map_err(StartError::Journal)?;
    tracing::info!(
        journal = ?replayed.report,
        pages = ?pages_replayed.report,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal and page store replayed"
    );
    let log_config = |dir, prefix| JournalConfig {
        dir,
        prefix,
        file_bytes: config.journal_file_bytes,
        direct_io: config.direct_io,
    };
    let journal =
        Journal::open(log_config(journal_dir, JOURNAL_PREFIX), &replayed).map_err(StartError::Journal)?;
    let pages =
        Journal::open(log_config(pages_dir, PAGES_PREFIX), &pages_replayed).map_err(StartError::Journal)?;
    core.set_journal_head(journal.position().file);
    // Rebuilds the crash interrupted go on where the checkpoint left them (time starts at 0).
    rebuilds.into_iter().for_each(|kept| core.resume_hydration(kept, 0));
    // Counts what replay indexed, so the memory cap holds from the first append.
    core.handle_tick(0);
    let endpoint =
        transport::server_endpoint(config.listen, &config.tls, &config.tuning).map_err(|e| match e {
            e if e.is_addr_in_use() => StartError::AddrInUse { addr: config.listen },
            e => StartError::Transport(e),
        })?;
    let checkpoints = shared::Checkpoints::new(
        checkpoints,
        config.checkpoint_interval_bytes,
        journal.position(),
        pages.position(),
    );
    let readers = (journal.reader(), pages.reader());
    let shared = shared::Shared::new(core, readers, keyring, checkpoints, config.entry_cache_bytes);
    if let Some(addr) = config.admin {
        let (snapshot, asks) = Rc::clone(&shared).admin_snapshot();
        admin::start(addr, snapshot, asks).map_err(StartError::Admin)?;
    }
    tokio::task::spawn_local(journal_task::run(Rc::clone(&shared), journal));
    tokio::task::spawn_local(coalescer::run(Rc::clone(&shared), pages, config.journal_file_bytes));
    tokio::task::spawn_local(scrub::run(Rc::clone(&shared)));
    let peer_names = config.peers.iter().map(|p| (p.name.clone(), p.id)).collect();
    tokio::task::spawn_local(streams::accept_loop(endpoint.clone(), Rc::clone(&shared), Rc::new(peer_names)));
    if !config.peers.is_empty() {
        let client =
            transport::client_endpoint(transport::any_addr_for(config.listen), &config.tls, &config.tuning)
                .map_err(StartError::Transport)?;
        let me = NodeInfo { id: config.node_id, az: config.az, addr: config.listen, name: String::new() };
        tokio::task::spawn_local(gossip::run(Rc::clone(&shared), me, config.peers.clone(), client));
    }
    let address = endpoint.local_addr().map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    // The first line on stdout says the node is serving (tools wait for it).
    println!(
        "storaged {} ready on {address} (az {}, data {})",
        config.node_id,
        config.az.0,
        config.data_dir.display()
    );
    wait_for_shutdown().await;
    tracing::info!("shutting down");
    endpoint.close(0u32.into(), b"node shutting down");
    Ok(())
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate()).expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

/// Creates the data directory if needed and takes an exclusive lock on it for the life of the
/// process, so two nodes can never share one.
fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
    std::fs::create_dir_all(dir).map_err(|e| data_dir_error(dir, e))?;
    let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"));
    let lock = lock.map_err(|e| data_dir_error(dir, e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let reason = "in use by another storaged process".to_string();
        return Err(StartError::DataDir { dir: dir.display().to_string(), reason });
    }
    Ok(lock)
}

fn data_dir_error(dir: &Path, error: std::io::Error) -> StartError {
    StartError::DataDir { dir: dir.display().to_string(), reason: error.to_string() }
}
