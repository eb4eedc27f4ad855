//! The simulated world's clock and event queue: every message and disk completion is an event
//! at a virtual time; ties break by insertion order, so one seed always gives one history.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use protocol::{Message, NodeId};

/// Who a message travels between.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Endpoint {
    /// A writer, by generation: a takeover starts a new one while the old may still run.
    Writer(u32),
    Node(NodeId),
    /// The reader that checks pages, with the writer's read points (`ReadPage`).
    Reader,
    /// A reader that is not the writer (`ReadPageAsOf`), reading at VDLs writers declared.
    AsOfReader,
}

/// Something that happens at a virtual time.
#[derive(Clone, Debug)]
pub enum Event {
    /// A message; `tag` pairs a node's ask to a peer with its answer (a stream, in the daemon).
    Deliver {
        from: Endpoint,
        to: Endpoint,
        message: Message,
        tag: Option<u64>,
    },
    /// A node's in-flight journal group reached the disk (if the node still runs that life).
    Flushed {
        node: NodeId,
        life: u64,
    },
    /// A node crashes, if the budget still allows (at any instant: between a write and its
    /// flush too).
    Crash {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    /// A node's full disk has space again (if it is still the same episode).
    SpaceBack {
        node: NodeId,
    },
}

#[derive(Debug)]
struct Queued {
    at: u64,
    order: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// Virtual time in microseconds and the pending events.
#[derive(Debug, Default)]
pub struct Clock {
    pub now_us: u64,
    next_order: u64,
    queue: BinaryHeap<Reverse<Queued>>,
}

impl Clock {
    pub fn schedule(&mut self, delay_us: u64, event: Event) {
        self.next_order += 1;
        self.queue.push(Reverse(Queued { at: self.now_us + delay_us, order: self.next_order, event }));
    }

    /// The next event, advancing the clock to it.
    pub fn pop_next(&mut self) -> Option<Event> {
        let Reverse(queued) = self.queue.pop()?;
        self.now_us = queued.at;
        Some(queued.event)
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Moves the clock forward to `at` (nothing may be pending before it).
    pub fn advance_to(&mut self, at: u64) {
        assert!(at >= self.now_us && self.peek_time().is_none_or(|t| t >= at), "time only moves forward");
        self.now_us = at;
    }

    /// The time of the next event, if any.
    pub fn peek_time(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse(q)| q.at)
    }
}
