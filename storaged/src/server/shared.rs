//! The state the driver tasks share on the node's single thread: the core, and the reply
//! channels of requests the core is holding. Borrowed only between awaits, never across one.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use protocol::messages::ErrorReply;
use protocol::Message;
use tokio::sync::{oneshot, Notify};

use super::admin::{SharedSnapshot, Snapshot, METRICS_SEGMENTS_MAX, SNAPSHOT_INTERVAL};
use crate::core::{NodeCore, RequestId};
use crate::journal::writer::JournalReader;
use crate::keyring::Keyring;
use crate::seal::DataKey;
use protocol::VolumeId;

/// A reply that is ready now or will be sent on a channel.
#[derive(Debug)]
pub enum Pending {
    Ready(Message),
    Waiting(oneshot::Receiver<Message>),
}

impl Pending {
    /// The reply; a dropped sender means the node is shutting down.
    pub async fn resolve(self) -> Option<Message> {
        match self {
            Pending::Ready(message) => Some(message),
            Pending::Waiting(receiver) => receiver.await.ok(),
        }
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct Shared {
    core: RefCell<NodeCore>,
    waiting: RefCell<HashMap<RequestId, oneshot::Sender<Message>>>,
    next_request: RefCell<u64>,
    /// Wakes the journal task when the core has queued entries.
    pub journal_wake: Notify,
    pub reader: JournalReader,
    pub keyring: RefCell<Keyring>,
    /// What the admin port shows; refreshed by `admin_snapshot`'s task.
    pub journal_stats: RefCell<(u64, u64)>,
}

impl Shared {
    pub fn new(core: NodeCore, reader: JournalReader, keyring: Keyring) -> Rc<Shared> {
        Rc::new(Shared {
            core: RefCell::new(core),
            waiting: RefCell::new(HashMap::new()),
            next_request: RefCell::new(0),
            journal_wake: Notify::new(),
            reader,
            keyring: RefCell::new(keyring),
            journal_stats: RefCell::new((0, 0)),
        })
    }

    /// Starts refreshing a snapshot for the admin port every `SNAPSHOT_INTERVAL`.
    pub fn admin_snapshot(self: Rc<Self>) -> SharedSnapshot {
        let snapshot = SharedSnapshot::default();
        let writer = std::sync::Arc::clone(&snapshot);
        tokio::task::spawn_local(async move {
            loop {
                let fresh = self.with_core(|core| {
                    let status = core.status();
                    let (journal_bytes_written, journal_groups_written) = *self.journal_stats.borrow();
                    Snapshot {
                        node: status.node.0,
                        az: status.az.0,
                        state: Some(core.state().clone()),
                        segments_total: core.segments().count(),
                        segments: status.segments.into_iter().take(METRICS_SEGMENTS_MAX).collect(),
                        journal_bytes_written,
                        journal_groups_written,
                        credit_bytes: core.credit_bytes(),
                    }
                });
                *writer.lock().expect("snapshot lock") = fresh;
                tokio::time::sleep(SNAPSHOT_INTERVAL).await;
            }
        });
        snapshot
    }

    /// Runs `f` with the unwrapped data keys.
    pub fn with_keys<T>(&self, f: impl FnOnce(&HashMap<VolumeId, DataKey>) -> T) -> T {
        f(self.keyring.borrow_mut().sealing().0)
    }

    /// Runs `f` on the core, then delivers every reply it released.
    pub fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        let result = f(&mut self.core.borrow_mut());
        self.deliver();
        result
    }

    /// Submits a request whose reply the core may hold until the journal is durable.
    pub fn submit(&self, f: impl FnOnce(&mut NodeCore, RequestId) -> Result<(), ErrorReply>) -> Pending {
        let request = {
            let mut next = self.next_request.borrow_mut();
            *next += 1;
            RequestId(*next)
        };
        let (sender, receiver) = oneshot::channel();
        self.waiting.borrow_mut().insert(request, sender);
        match self.with_core(|core| f(core, request)) {
            Ok(()) => {
                self.journal_wake.notify_one();
                Pending::Waiting(receiver)
            }
            Err(reply) => {
                self.waiting.borrow_mut().remove(&request);
                Pending::Ready(Message::Error(reply))
            }
        }
    }

    fn deliver(&self) {
        loop {
            let Some((request, message)) = self.core.borrow_mut().poll_reply() else { return };
            if let Some(sender) = self.waiting.borrow_mut().remove(&request) {
                // The requester may have gone away; its reply is simply dropped.
                let _ = sender.send(message);
            }
        }
    }
}
