//! [`watch`]: follows the map in etcd and hands every newer version to a `tokio::sync::watch`
//! channel.
//!
//! The task never interprets watch events: any event under the prefix only means "read the map
//! again", and the whole map is then read in one range request. So a burst of events costs one
//! read per watch response, a compacted or canceled watch loses nothing (the next read has
//! everything), and what receivers see is always a map as stored at one revision. Receivers get
//! a new value only when the nodes, the generation or an ACL changed.
//!
//! Any failure (etcd down, stream ended, watch canceled, a bad entry) ends the session: the task
//! warns once per outage, sleeps [`WATCH_RETRY`], connects again, re-reads the map and watches
//! from the revision it read at. The task ends when every receiver is dropped. It does not
//! validate map changes: each receiver applies `ClusterMap::check_change` itself.

use std::convert::Infallible;
use std::time::Duration;

use etcd_client::{ConnectOptions, WatchOptions};
use tokio::sync::watch::{Receiver, Sender};

use crate::layout::{normalize_prefix, Snapshot};
use crate::{EtcdMap, EtcdMapError, EtcdSource};

/// Time to retry a broken watch / reconnect.
pub const WATCH_RETRY: Duration = Duration::from_millis(500);
/// Connect timeout, and the timeout of each request (for the watch itself: until etcd accepts
/// it; the stream then stays open as long as the connection lives).
const WATCH_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive ping interval and timeout, so an etcd that stops answering without closing
/// the connection (a partition, a frozen host) breaks the session instead of hanging it.
pub const WATCH_KEEPALIVE: Duration = Duration::from_secs(5);

/// Watches the map: returns a receiver holding `initial` and then every newer snapshot.
///
/// A background task (`tokio::spawn`, so this must be called within a tokio runtime; a
/// current-thread runtime is enough) watches the prefix from `initial.revision + 1`; see the
/// module docs for what it does on events and errors. It ends when every receiver is dropped.
pub fn watch(source: EtcdSource, initial: Snapshot) -> Receiver<Snapshot> {
    watch_with_state(source, initial).0
}

/// Whether the watch is following etcd now: what says how current a receiver's map is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatchState {
    /// The watch stream is open: changes arrive within moments (a stalled connection is found
    /// by keep-alive pings within twice [`WATCH_KEEPALIVE`]).
    pub following: bool,
    /// Since when it has been so.
    pub since: std::time::Instant,
}

/// [`watch`], and a receiver of the watch's [`WatchState`] (following from the start: the
/// caller just read `initial`).
pub fn watch_with_state(source: EtcdSource, initial: Snapshot) -> (Receiver<Snapshot>, Receiver<WatchState>) {
    let now = std::time::Instant::now();
    let (state, state_rx) = tokio::sync::watch::channel(WatchState { following: true, since: now });
    let watcher = Watcher {
        prefix: normalize_prefix(&source.prefix),
        state,
        source,
        revision: initial.revision,
        reload: false,
        outage: false,
    };
    let (tx, rx) = tokio::sync::watch::channel(initial);
    tokio::spawn(watcher.run(tx));
    (rx, state_rx)
}

/// Why a watch session ended.
#[derive(Debug)]
enum Break {
    Map(EtcdMapError),
    Etcd(etcd_client::Error),
    Ended,
    Canceled { reason: String, compact_revision: i64 },
}

impl From<EtcdMapError> for Break {
    fn from(error: EtcdMapError) -> Break {
        Break::Map(error)
    }
}

impl From<etcd_client::Error> for Break {
    fn from(error: etcd_client::Error) -> Break {
        Break::Etcd(error)
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Break::Map(error) => write!(f, "{error}"),
            Break::Etcd(error) => write!(f, "etcd watch failed: {error}"),
            Break::Ended => write!(f, "etcd ended the watch stream"),
            Break::Canceled { reason, compact_revision } => {
                write!(f, "etcd canceled the watch ({reason:?}, compacted up to revision {compact_revision})")
            }
        }
    }
}

#[derive(Debug)]
struct Watcher {
    source: EtcdSource,
    prefix: String,
    /// The revision of the last read (or of `initial`): the next watch starts just after it.
    revision: i64,
    /// Whether the next session reads the map before watching (every session but the first:
    /// changes made while no watch was open are seen only by reading).
    reload: bool,
    /// Whether the outage has been logged: one warning per outage, however many retries.
    outage: bool,
    state: Sender<WatchState>,
}

impl Watcher {
    async fn run(mut self, tx: Sender<Snapshot>) {
        loop {
            let broken = tokio::select! {
                () = tx.closed() => return,
                result = self.session(&tx) => {
                    let Err(broken) = result;
                    broken
                }
            };
            self.set_following(false);
            if !std::mem::replace(&mut self.outage, true) {
                tracing::warn!(
                    prefix = %self.prefix, endpoints = %self.source.endpoints.join(","), error = %broken,
                    "cluster map watch broken; retrying every {WATCH_RETRY:?}"
                );
            }
            self.reload = true;
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(WATCH_RETRY) => {}
            }
        }
    }

    /// Connects, reads if needed, and follows the watch until something breaks.
    async fn session(&mut self, tx: &Sender<Snapshot>) -> Result<Infallible, Break> {
        let options = self.source.options(connect_options());
        let mut map = EtcdMap::connect_with(&self.source.endpoints, &self.prefix, options).await?;
        if self.reload {
            self.offer(tx, map.load().await?);
            self.reload = false;
        }
        let options = WatchOptions::new().with_prefix().with_start_revision(self.revision + 1);
        let mut stream = map.client.watch(self.prefix.as_str(), Some(options)).await?;
        self.set_following(true);
        if std::mem::take(&mut self.outage) {
            tracing::info!(prefix = %self.prefix, "cluster map watch restored");
        }
        loop {
            let response = stream.message().await?.ok_or(Break::Ended)?;
            if response.canceled() {
                let reason = response.cancel_reason().to_owned();
                return Err(Break::Canceled { reason, compact_revision: response.compact_revision() });
            }
            // Events at or below the last read are already in the map we hold.
            let newer =
                |kv: Option<&etcd_client::KeyValue>| kv.is_none_or(|kv| kv.mod_revision() > self.revision);
            if response.events().iter().any(|event| newer(event.kv())) {
                self.offer(tx, map.load().await?);
            }
        }
    }

    fn set_following(&self, following: bool) {
        self.state.send_if_modified(|state| {
            let changed = state.following != following;
            if changed {
                *state = WatchState { following, since: std::time::Instant::now() };
            }
            changed
        });
    }

    /// Takes `snapshot` as the newest read and hands it to receivers if the map changed.
    fn offer(&mut self, tx: &Sender<Snapshot>, snapshot: Snapshot) {
        self.revision = snapshot.revision;
        tx.send_if_modified(|current| {
            let changed = current.nodes != snapshot.nodes
                || current.generation != snapshot.generation
                || current.acls != snapshot.acls
                || current.admins != snapshot.admins
                || current.deleted != snapshot.deleted;
            if changed {
                *current = snapshot;
            }
            changed
        });
    }
}

fn connect_options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(WATCH_REQUEST_TIMEOUT)
        .with_timeout(WATCH_REQUEST_TIMEOUT)
        .with_keep_alive(WATCH_KEEPALIVE, WATCH_KEEPALIVE)
        // A member cut off from the leader cancels the watch instead of going silent.
        .with_require_leader(true)
}
