//! The running daemon: opens the data directory, replays the journal into the core, and runs
//! the journal task and the QUIC accept loop on one io_uring thread until told to stop.

pub mod admin;
pub mod cluster_view;
pub mod coalescer;
pub mod gossip;
pub mod hydrate;
pub mod journal_task;
pub mod lifecycle;
pub mod map_source;
pub mod page_read;
pub mod scrub;
pub mod shared;
pub mod streams;

use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use crate::config::Config;
use crate::core::NodeCore;
use crate::journal::files::{JOURNAL_PREFIX, PAGES_PREFIX};
use crate::seal::{Kek, SealError};
use crate::storage::uring::UringDir;
use crate::store::{OpenError, StoreSettings};

/// Why the node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    #[error("data directory {dir}: {reason}")]
    DataDir { dir: String, reason: String },
    #[error(transparent)]
    Key(#[from] SealError),
    #[error(transparent)]
    KekRotation(#[from] crate::kek_rotation::RotationError),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("listen address {addr} is already in use")]
    AddrInUse { addr: std::net::SocketAddr },
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    #[error("{0}")]
    Admin(String),
    #[error("{0}")]
    Map(String),
}

/// Starts the node and serves until SIGINT or SIGTERM, then drains (`lifecycle`); SIGHUP
/// reloads what `reload` can change.
pub async fn run(config: Config, reload: lifecycle::Reload) -> Result<(), StartError> {
    let mut signals =
        lifecycle::Signals::install().map_err(|e| StartError::Admin(format!("signals: {e}")))?;
    let _lock = lock_data_dir(&config.data_dir)?;
    // The map first: a node that cannot learn its cluster should say so before a long replay.
    let (view, etcd_snapshot) = map_source::initial(&config).await?;
    let view = view.shared();
    // The TLS files and CRL too: a bad one is reported before the replay, not after it.
    let server_tls = lifecycle::server_tls(&config)?;
    for log in [JOURNAL_PREFIX, PAGES_PREFIX] {
        let dir = config.data_dir.join(log);
        std::fs::create_dir_all(&dir).map_err(|e| data_dir_error(&dir, e))?;
    }
    let storage = UringDir::new(&config.data_dir, config.direct_io);
    let kek = Kek::load(&config.key_file)?;
    crate::kek_rotation::at_start(&storage, &config, &kek).await?;
    let mut core = NodeCore::new(config.node_id, config.az, config.limits);
    let started = Instant::now();
    let settings = StoreSettings {
        file_bytes: config.journal_file_bytes,
        checkpoint_interval_bytes: config.checkpoint_interval_bytes,
        entry_cache_bytes: config.entry_cache_bytes,
        coalesce_jobs_max: crate::store::COALESCE_JOBS_MAX,
    };
    // Rebuilds the crash interrupted go on where the checkpoint left them (time starts at 0).
    let opened = crate::store::open(storage.clone(), &mut core, kek, settings, 0).await?;
    if let Some(error) = &opened.checkpoint_error {
        tracing::warn!(%error, "no usable checkpoint; replayed the whole journal and page store");
    }
    tracing::info!(
        journal = ?opened.journal_report,
        pages = ?opened.pages_report,
        direct_io = storage.direct_io(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "journal and page store replayed"
    );
    // Counts what replay indexed, so the memory cap holds from the first append.
    core.handle_tick(0);
    let endpoint = transport::server_endpoint_with_config(config.listen, server_tls, &config.tuning)
        .map_err(|e| match e {
            e if e.is_addr_in_use() => StartError::AddrInUse { addr: config.listen },
            e => StartError::Transport(e),
        })?;
    let (journal, pages) = (opened.journal, opened.pages);
    let shared = shared::Shared::new(core, opened.store);
    if let Some(addr) = config.admin {
        let snapshot = Rc::clone(&shared).admin_snapshot();
        admin::start(addr, snapshot, config.data_dir.clone()).map_err(StartError::Admin)?;
    }
    tokio::task::spawn_local(journal_task::run(Rc::clone(&shared), journal));
    tokio::task::spawn_local(journal_task::checkpoints(Rc::clone(&shared)));
    tokio::task::spawn_local(coalescer::run(Rc::clone(&shared), pages, config.journal_file_bytes));
    tokio::task::spawn_local(scrub::run(Rc::clone(&shared)));
    tokio::task::spawn_local(streams::accept_loop(endpoint.clone(), Rc::clone(&shared), Rc::clone(&view)));
    if let Some(map) = view.borrow().map() {
        shared.metrics.map_known(map.nodes().len(), view.borrow().revision());
    }
    if let (Some(source), Some(snapshot)) = (&config.etcd, etcd_snapshot) {
        map_source::follow(Rc::clone(&view), source, snapshot, Rc::clone(&shared));
    }
    if view.borrow().map().is_some() {
        let client =
            transport::client_endpoint(transport::any_addr_for(config.listen), &config.tls, &config.tuning)
                .map_err(StartError::Transport)?;
        tokio::task::spawn_local(gossip::run(Rc::clone(&shared), Rc::clone(&view), client));
    }
    let address = endpoint.local_addr().map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    // The first line on stdout says the node is serving (tools wait for it).
    let ready = format!(
        "storaged {} ready on {address} (az {}, data {})",
        config.node_id,
        config.az.0,
        config.data_dir.display()
    );
    println!("{ready}");
    lifecycle::notify(&[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status(&ready)]);
    lifecycle::spawn_watchdog();
    while signals.next().await == lifecycle::Asked::Reload {
        lifecycle::reload(&reload, &config, &endpoint, &view, &shared.store.keyring).await;
    }
    tracing::info!("shutting down: draining");
    lifecycle::drain(&shared, &endpoint).await;
    endpoint.close(0u32.into(), b"node shutting down");
    Ok(())
}

/// Creates the data directory if needed and takes an exclusive lock on it for the life of the
/// process, so two nodes can never share one.
pub(crate) fn lock_data_dir(dir: &Path) -> Result<std::fs::File, StartError> {
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
