//! The end-of-run checks of a healed cluster, beside `World::converge`: every live node serves
//! every written page right (a hydration that claimed pages it never stored, or a repair that
//! stored a wrong version, shows here even if no read happened to ask), and every scrub fault
//! found was repaired; and the scrub and hydration counters the run reports.

use protocol::messages::ReadPage;
use protocol::{Message, NodeId, PageId};

use super::node::HealCounts;
use super::World;

impl World {
    /// Every live member of each written page's PG answers a read of it at VDL with the model's
    /// page.
    pub(super) fn check_every_page(&mut self) {
        let vdl = self.writer.vdl();
        let mut pages: Vec<PageId> = self.appended.values().map(|a| a.page).collect();
        pages.sort();
        pages.dedup();
        for page in pages {
            let pg = self.geometry.pg_of(page);
            let Ok((need, _)) = self.writer.read_route(pg, vdl) else { continue };
            let read = ReadPage {
                pg: self.geometry.pg_ref(pg),
                epochs: self.writer.epochs(),
                page_id: page,
                read_lsn: vdl,
                pg_newest_lsn: need,
                page_bytes: self.geometry.page_bytes,
            };
            let mut members = self.writer.members(pg);
            members.retain(|id| !self.dead.contains(id));
            for id in members {
                if let Some(wrong) = self.read_after_healing(id, &read) {
                    self.failures.push(wrong);
                    return;
                }
            }
        }
    }

    /// Why `id`'s answer to `read` is wrong, if it is.
    fn read_after_healing(&mut self, id: NodeId, read: &ReadPage) -> Option<String> {
        match self.node(id).read_page(read) {
            Message::Page(page) => self.wrong_page(id, &page).map(|w| {
                let n = self.node(id);
                let seg = n.core().segment(&read.pg).map(|s| {
                    let versions = s.page(read.page_id).map(|v| v.images().collect::<Vec<_>>());
                    let records: Vec<_> =
                        s.all_records().filter(|(_, r)| r.page_id == read.page_id).map(|(l, _)| l).collect();
                    format!(
                        "scl {} folded {} floor {} images {versions:?} records {records:?} hydrated {:?}",
                        s.scl(),
                        s.folded_through(),
                        s.floor(),
                        n.hydrated_through(read.pg)
                    )
                });
                format!("after healing, {w} [{seg:?}]")
            }),
            Message::Error(error) => {
                let segment = self.node(id).core().segment(&read.pg);
                let (scl, epochs) = (segment.map(|s| s.scl()), segment.map(|s| s.epochs()));
                Some(format!(
                    "after healing, {id} could not serve page {} at {} (PG newest {}, SCL {scl:?}, segment epochs {epochs:?}, read epochs {:?}): {:?} ({})",
                    read.page_id.0, read.read_lsn, read.pg_newest_lsn, read.epochs, error.code, error.message
                ))
            }
            other => {
                Some(format!("after healing, {id} answered a page read with type {}", other.type_code()))
            }
        }
    }

    /// Every scrub fault found is repaired once the cluster converged: each node's bookkeeping
    /// runs once (as its maintenance timer would) so the core settles its faults, then none may
    /// be open, but in an orphan segment (of a PG the node was replaced out of while away, and
    /// never told: see `unsettled`).
    pub(super) fn check_faults_repaired(&mut self) {
        let now_ms = self.clock.now_us / 1000;
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if !node.up {
                continue;
            }
            let open = node.settle_scrub_faults(now_ms);
            let node = &self.nodes[index];
            let orphans: usize = node
                .core()
                .segments()
                .filter(|s| !s.is_retired(node.id) && !self.is_member(node.id, s.pg()))
                .map(|s| node.core().scrub_faults_open_in(s.pg()))
                .sum();
            if open > orphans {
                let segments: Vec<String> = node
                    .core()
                    .segments()
                    .map(|s| {
                        let pg = s.pg().pg_id;
                        let retired = if s.is_retired(node.id) { ", retired" } else { "" };
                        let state = if node.core().is_repairing(s.pg()) { ", repairing" } else { "" };
                        format!("{pg}: SCL {}{retired}{state}", s.scl())
                    })
                    .collect();
                let failure = format!(
                    "{} has {open} scrub faults still open after healing (segments: {})",
                    node.id,
                    segments.join("; ")
                );
                self.failures.push(failure);
                return;
            }
        }
    }

    /// Scrub and hydration counters over every node and life.
    pub(super) fn heal_counts(&self) -> HealCounts {
        let mut counts = HealCounts::default();
        self.nodes.iter().for_each(|n| counts.add(n.heal_counts()));
        counts
    }
}
