//! How the daemon meets its service manager (`packaging/systemd/storaged.service`):
//! `READY=1` once the journal is replayed and the node serves, `WATCHDOG=1` pings from the
//! node's own thread (so a stuck serving loop stops them), and on SIGTERM or SIGINT
//! `STOPPING=1` and a bounded drain: no new connection or write is taken, what was taken is
//! made durable and acknowledged, a checkpoint is written, and the node exits 0. SIGHUP
//! reloads what can change without a restart: the log filter, the TLS files and the CRL (for
//! new connections: established ones go on, so a certificate revoked now is refused from its
//! next handshake) and the KEK (a new `key_file` re-wraps every data key: `kek_rotation`).
//! Without `NOTIFY_SOCKET` the notifications are no-ops.

use std::rc::Rc;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{signal, Signal, SignalKind};

use super::cluster_view::SharedView;
use super::shared::Shared;
use crate::config::Config;
use crate::keyring::Keyring;
use crate::storage::uring::UringDir;

/// Longest a drain waits for the writes the node took to become durable and acknowledged.
pub const DRAIN_MAX: Duration = Duration::from_secs(10);
/// How long the acknowledgements of the last group get to leave before connections close.
pub const ACK_GRACE: Duration = Duration::from_millis(200);
/// How often a drain checks whether the node is drained.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Reads the configuration again, from the same file and flags.
pub type ReadConfig = Box<dyn Fn() -> Result<Config, String>>;
/// Applies a log filter (`tracing_subscriber::EnvFilter` syntax).
pub type ApplyLog = Box<dyn Fn(&str) -> Result<(), String>>;

/// What SIGHUP re-reads and re-applies.
pub struct Reload {
    pub config: ReadConfig,
    pub log: ApplyLog,
}

/// What the service manager is told.
pub fn notify(state: &[NotifyState]) {
    // Keep the environment: the watchdog and later notifications read it too.
    if let Err(error) = sd_notify::notify(false, state) {
        tracing::warn!(%error, "service manager notification failed");
    }
}

/// Pings the watchdog at half the interval the service manager asks for, from the node's
/// thread, if it asks at all.
pub fn spawn_watchdog() {
    let mut usec = 0;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    tracing::info!(?every, "watchdog pings on");
    tokio::task::spawn_local(async move {
        loop {
            tokio::time::sleep(every).await;
            notify(&[NotifyState::Watchdog]);
        }
    });
}

/// The signals the daemon acts on.
pub struct Signals {
    terminate: Signal,
    interrupt: Signal,
    hangup: Signal,
}

/// What a signal asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asked {
    Stop,
    Reload,
}

impl Signals {
    /// Installs the handlers (before READY, so no signal is missed).
    pub fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    pub async fn next(&mut self) -> Asked {
        tokio::select! {
            _ = self.terminate.recv() => Asked::Stop,
            _ = self.interrupt.recv() => Asked::Stop,
            _ = self.hangup.recv() => Asked::Reload,
        }
    }
}

/// Applies what SIGHUP can change; the rest of a changed configuration needs a restart, and
/// says so in the log. READY follows once a new KEK, if any, wraps every data key.
pub async fn reload(
    reload: &Reload,
    running: &Config,
    endpoint: &quinn::Endpoint,
    view: &SharedView,
    keyring: &Keyring<UringDir>,
) {
    notify(&[NotifyState::Reloading]);
    match (reload.config)() {
        Err(error) => tracing::error!(%error, "reload: configuration unusable; nothing changed"),
        Ok(config) => {
            if let Err(error) = (reload.log)(&config.log) {
                tracing::error!(%error, "reload: log filter unusable; kept the old one");
            }
            match server_tls(&config) {
                Ok(server) => {
                    endpoint.set_server_config(Some(server));
                    let crl = config.crl.as_ref().map(|path| path.display().to_string());
                    tracing::info!(?crl, "reload: TLS files re-read; new connections use them");
                }
                Err(error) => tracing::error!(%error, "reload: TLS files unusable; kept the old ones"),
            }
            reload_peers(&config, running, view);
            crate::kek_rotation::on_reload(&config, keyring).await;
        }
    }
    notify(&[NotifyState::Ready]);
}

/// The QUIC server config of `config`'s TLS files and CRL: what start-up binds with and SIGHUP
/// swaps in.
pub fn server_tls(config: &Config) -> Result<quinn::ServerConfig, transport::TransportError> {
    transport::server_config_with_crls(&config.tls, config.crl.as_deref(), &config.tuning)
}

/// Takes the re-read static `peers` if they only add spares to the map (an etcd map follows
/// etcd instead); the listen address and the map's source change only at a restart.
fn reload_peers(config: &Config, running: &Config, view: &SharedView) {
    if config.listen != running.listen || config.etcd != running.etcd {
        tracing::warn!("reload: the listen address and the map's source change only at a restart");
    }
    if running.etcd.is_some() || config.peers == running.peers {
        return;
    }
    let map = match config.static_map() {
        Ok(Some(map)) => map,
        Ok(None) => return tracing::error!("reload: the new configuration has no peers; kept the old ones"),
        Err(error) => return tracing::error!(%error, "reload: peers unusable; kept the old ones"),
    };
    match view.borrow_mut().apply(map, 0) {
        Ok(applied) => tracing::info!(?applied, "reload: peers re-read"),
        Err(error) => tracing::error!(%error, "reload: the new peers would move PGs; kept the old ones"),
    }
}

/// Stops taking work and finishes what was taken (see the module docs). Returns whether the
/// node drained within `DRAIN_MAX`.
pub async fn drain(shared: &Rc<Shared>, endpoint: &quinn::Endpoint) -> bool {
    notify(&[NotifyState::Stopping]);
    endpoint.set_server_config(None);
    shared.with_core(|core| core.begin_drain());
    shared.journal_wake.notify_one();
    let deadline = tokio::time::Instant::now() + DRAIN_MAX;
    let drained = loop {
        if shared.with_core(|core| core.is_drained()) {
            break true;
        }
        if tokio::time::Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    };
    tokio::time::sleep(ACK_GRACE).await;
    let checkpointed = shared.store.checkpoint(&**shared, true).await;
    tracing::info!(drained, checkpointed, "drained");
    drained && checkpointed
}
