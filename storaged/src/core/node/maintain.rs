//! The node core's clocks and housekeeping decisions: when the next gossip round and the next
//! maintenance pass are due (quinn-proto style: `poll_timeout` says when to call again, the
//! `poll_*` calls act only once their time has come), and which journal and page store files
//! may be recycled. Drivers sleep until a deadline and carry out what the core decides; the
//! simulator calls the same methods with virtual time.

use std::collections::BTreeMap;

use super::NodeCore;

/// Time between maintenance passes: floor reports expire, the index estimate is recounted,
/// compaction is planned and files are recycled.
pub const MAINTAIN_INTERVAL_MS: u64 = 1_000;
/// The daemon's time between gossip rounds (`Limits::gossip_interval_ms`).
pub const GOSSIP_INTERVAL_MS_DEFAULT: u64 = 1_000;

/// When the periodic work is next due, in the driver's milliseconds.
#[derive(Debug, Default)]
pub(super) struct Timers {
    next_gossip_ms: u64,
    next_maintain_ms: u64,
    /// The journal file being written at the last maintenance pass.
    maintained_at_journal_head: u64,
}

/// Files nothing refers to any more: delete them after a checkpoint that no longer needs them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecyclePlan {
    pub journal: Vec<u64>,
    pub pages: Vec<u64>,
}

impl RecyclePlan {
    pub fn is_empty(&self) -> bool {
        self.journal.is_empty() && self.pages.is_empty()
    }
}

impl NodeCore {
    /// The earliest time any periodic work of the core is due (gossip, maintenance, scrub).
    pub fn poll_timeout(&self) -> Option<u64> {
        [self.poll_gossip_timeout(), Some(self.poll_maintenance_timeout()), self.poll_scrub_timeout()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the next gossip round is due (`None`: the node does not gossip).
    pub fn poll_gossip_timeout(&self) -> Option<u64> {
        // A draining node starts no more rounds: what they fetch would keep its journal busy.
        (self.limits.peer_lease_ms > 0 && !self.draining).then_some(self.timers.next_gossip_ms)
    }

    /// True (once per `Limits::gossip_interval_ms`) if a gossip round is due at `now`.
    pub(super) fn gossip_round_due(&mut self, now: u64) -> bool {
        if now < self.timers.next_gossip_ms {
            return false;
        }
        self.timers.next_gossip_ms = now.saturating_add(self.limits.gossip_interval_ms);
        true
    }

    /// When the next maintenance pass is due.
    pub fn poll_maintenance_timeout(&self) -> u64 {
        self.timers.next_maintain_ms
    }

    /// Runs the periodic bookkeeping if it is due at `now` (floor reports and peer leases
    /// expire, the index estimate is recounted, scrub faults settle). True if it ran or the
    /// journal has moved to a new file since the last pass: the driver should then plan
    /// compaction and recycling. Recycling on every new file, not only on the clock, bounds
    /// the journal's files by space however fast records arrive.
    pub fn poll_maintenance(&mut self, now: u64) -> bool {
        let new_file = self.journal_head != self.timers.maintained_at_journal_head;
        let due = now >= self.timers.next_maintain_ms;
        if due {
            self.timers.next_maintain_ms = now.saturating_add(MAINTAIN_INTERVAL_MS);
            self.handle_tick(now);
        }
        if due || new_file {
            self.timers.maintained_at_journal_head = self.journal_head;
        }
        due || new_file
    }

    /// The files that may be recycled: journal files older than every file a held record is in
    /// and than the one being written (`journal_head`), and page store files older than the one
    /// being written that hold no live image. `journal_files` and `page_files` are the files on
    /// disk; `live_images` is `image_bytes_by_file()`.
    pub fn plan_recycle(
        &self,
        journal_files: &[u64],
        journal_head: u64,
        page_files: &[u64],
        page_head: u64,
        live_images: &BTreeMap<u64, u64>,
    ) -> RecyclePlan {
        let oldest_needed = self.oldest_journal_file_in_use().unwrap_or(journal_head).min(journal_head);
        RecyclePlan {
            journal: journal_files.iter().copied().filter(|f| *f < oldest_needed).collect(),
            pages: page_files
                .iter()
                .copied()
                .filter(|f| *f < page_head && !live_images.contains_key(f))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use protocol::{AzId, NodeId};

    use super::*;
    use crate::core::Limits;

    fn core(gossip_interval_ms: u64) -> NodeCore {
        let limits = Limits { peer_lease_ms: 1_000, gossip_interval_ms, ..Limits::default() };
        NodeCore::new(NodeId(1), AzId(0), limits)
    }

    #[test]
    fn a_gossip_round_is_due_once_per_interval_and_the_timeout_says_when() {
        let mut core = core(1_000);
        assert_eq!(core.poll_gossip_timeout(), Some(0), "the first round is due at once");
        assert!(core.gossip_round_due(0));
        assert!(!core.gossip_round_due(999));
        assert_eq!(core.poll_gossip_timeout(), Some(1_000));
        assert!(core.gossip_round_due(1_000));
        assert_eq!(core.poll_timeout(), Some(0), "maintenance is due too");
    }

    #[test]
    fn a_node_without_peers_has_no_gossip_timer() {
        let core = NodeCore::new(NodeId(1), AzId(0), Limits::default());
        assert_eq!(core.poll_gossip_timeout(), None);
    }

    #[test]
    fn maintenance_runs_once_per_interval() {
        let mut core = core(0);
        assert!(core.poll_maintenance(5));
        assert!(!core.poll_maintenance(5 + MAINTAIN_INTERVAL_MS - 1));
        assert_eq!(core.poll_maintenance_timeout(), 5 + MAINTAIN_INTERVAL_MS);
        assert!(core.poll_maintenance(5 + MAINTAIN_INTERVAL_MS));
    }

    #[test]
    fn a_new_journal_file_makes_a_recycling_pass_due_before_the_clock_does() {
        let mut core = core(0);
        assert!(core.poll_maintenance(5));
        core.set_journal_head(2);
        assert!(core.poll_maintenance(6), "the journal moved to file 2");
        assert!(!core.poll_maintenance(7), "once per new file");
        assert_eq!(core.poll_maintenance_timeout(), 5 + MAINTAIN_INTERVAL_MS, "the clock is unchanged");
    }

    #[test]
    fn recycling_keeps_the_heads_the_files_in_use_and_pages_with_live_images() {
        let core = core(0);
        let live = BTreeMap::from([(3, 4096)]);
        let plan = core.plan_recycle(&[1, 2, 3, 4], 3, &[1, 2, 3, 4], 4, &live);
        // No record is held: everything before the journal head may go.
        assert_eq!(plan.journal, vec![1, 2]);
        assert_eq!(plan.pages, vec![1, 2], "file 3 holds a live image, 4 is being written");
    }
}
