//! The checkers that read the world's state: what a node's disk holds (`Holdings`), every
//! page a read returns against the model, VDL against the disks that hold each record,
//! durability and acknowledgements at the end, and convergence after healing.

use std::collections::{BTreeMap, HashMap};

use protocol::{Lsn, Message, NodeId, PageId, PgId, RecordKind};

use super::node::SimNode;
use super::workload::Appended;
use super::World;

/// What a node's disk holds intact, indexed for the checkers.
pub(super) struct Holdings {
    /// (PG, LSN, CRC of the payload) of every intact record.
    records: std::collections::HashSet<(protocol::PgRef, Lsn, u32)>,
    /// (PG, LSN) of every intact record.
    lsns: std::collections::HashSet<(protocol::PgRef, Lsn)>,
    /// The newest intact image of each page.
    pub(super) images: HashMap<(protocol::PgRef, PageId), Lsn>,
    /// Per PG, the point through which the node's core folded every record into its page
    /// versions (images, or zeros for pages zeroed or trimmed) and let the records go: what
    /// the end-of-run page checks then hold it to.
    folded: HashMap<protocol::PgRef, Lsn>,
}

impl Holdings {
    pub(super) fn of(node: &SimNode) -> Holdings {
        let held = node.held();
        let records =
            held.records.iter().map(|(pg, r)| (*pg, r.lsn(), crc32c::crc32c(r.payload()))).collect();
        let lsns = held.records.iter().map(|(pg, r)| (*pg, r.lsn())).collect();
        let mut images: HashMap<(protocol::PgRef, PageId), Lsn> = HashMap::new();
        for (pg, page, version) in held.images {
            let newest = images.entry((pg, page)).or_default();
            *newest = version.max(*newest);
        }
        let folded = node.folded().into_iter().collect();
        Holdings { records, lsns, images, folded }
    }

    /// True if record `lsn` (`appended`) is held: itself (with its payload's CRC if
    /// `check_crc`), inside an image of its page at or above it, or folded.
    pub(super) fn holds(&self, pg: protocol::PgRef, appended: &Appended, lsn: Lsn, check_crc: bool) -> bool {
        let record = if check_crc {
            self.records.contains(&(pg, lsn, appended.crc))
        } else {
            self.lsns.contains(&(pg, lsn))
        };
        record
            || self.images.get(&(pg, appended.page)).is_some_and(|version| *version >= lsn)
            || self.folded.get(&pg).is_some_and(|folded| *folded >= lsn)
    }
}

impl World {
    /// What still keeps the healed cluster from having converged, if anything.
    pub(super) fn unsettled(&self, healed_ms: u64) -> Option<String> {
        let live = || self.nodes.iter().filter(|n| n.up && !self.dead.contains(&n.id));
        // A node that stores nothing (a spare, or a node replaced everywhere) has nothing to
        // scrub, and its scrubber counts no pass over nothing.
        let unscrubbed =
            |n: &&SimNode| n.scrub_pass_started_ms.is_none_or(|at| at < healed_ms) && !n.stores_nothing();
        if let Some(node) = live().find(unscrubbed) {
            return Some(format!(
                "{} has not finished a scrub pass begun after healing (healed at {healed_ms} ms, now {} ms, last pass started {:?}, next job at {:?}, {:?})",
                node.id,
                self.clock.now_us / 1000,
                node.scrub_pass_started_ms,
                node.core().poll_scrub_timeout(),
                node.core().scrub_stats()
            ));
        }
        if let Some(node) = live().find(|n| n.is_hydrating()) {
            return Some(format!("{} is still hydrating", node.id));
        }
        // Segments of the writer's members only: a node replaced out of a PG while it was away
        // may keep an orphan segment it was never told about (and never retired); nothing
        // reads it.
        if let Some(claim) = live().find_map(|n| n.damaged_claim(|pg| self.is_member(n.id, pg))) {
            return Some(claim);
        }
        if let Some(unsettled) = self.membership_unsettled() {
            return Some(unsettled);
        }
        self.divergence()
    }

    /// How the live segments of some PG still differ: each must be complete through the PG's
    /// newest record and hold the same records above the highest point any of them folded.
    pub(super) fn divergence(&self) -> Option<String> {
        let mut newest: BTreeMap<PgId, Lsn> = BTreeMap::new();
        for (lsn, appended) in &self.appended {
            newest.insert(appended.pg, *lsn);
        }
        for (pg, newest) in newest {
            let pg_ref = self.geometry.pg_ref(pg);
            // The writer's members, not placement: a membership change may have replaced some.
            let members = self.writer.members(pg);
            let segments: Vec<(NodeId, Option<&storaged::core::Segment>)> = members
                .iter()
                .map(|id| &self.nodes[id.0 as usize - 1])
                .filter(|n| n.up && !self.dead.contains(&n.id))
                .map(|n| (n.id, n.core().segment(&pg_ref)))
                .collect();
            let mut compared = Vec::new();
            // Converged also means open at the writer's epoch: a member that missed the last
            // takeover's truncation is opened by the writer (until then it refuses its reads).
            let volume = self.writer.epochs().volume;
            // (A segment an abandoned takeover bumped above the writer's epoch refuses it; it is
            // compared by SCL only, as before.)
            let opened = |s: &storaged::core::Segment| {
                s.epochs().volume > volume || (s.epochs().volume == volume && s.is_open())
            };
            for (id, segment) in &segments {
                match segment {
                    Some(segment) if segment.scl() >= newest && opened(segment) => {
                        compared.push((*id, *segment))
                    }
                    _ => return Some(self.behind_report(pg, newest, *id, &segments)),
                }
            }
            let above = compared.iter().map(|(_, s)| s.folded_through()).max().unwrap_or(Lsn::ZERO);
            let held = |s: &storaged::core::Segment| -> Vec<Lsn> {
                s.all_records().map(|(lsn, _)| lsn).filter(|lsn| *lsn > above && *lsn <= newest).collect()
            };
            let sets: Vec<(NodeId, Vec<Lsn>)> = compared.iter().map(|(id, s)| (*id, held(s))).collect();
            if let Some((id, set)) = sets.iter().find(|(_, set)| *set != sets[0].1) {
                let (first, first_set) = &sets[0];
                let report = format!(
                    "{pg}: {id} holds {} records in ({above}, {newest}], {first} holds {}",
                    set.len(),
                    first_set.len()
                );
                return Some(report);
            }
        }
        None
    }

    /// Why the segment on `id` is behind, with its peers' state.
    pub(super) fn behind_report(
        &self,
        pg: PgId,
        newest: Lsn,
        id: NodeId,
        segments: &[(NodeId, Option<&storaged::core::Segment>)],
    ) -> String {
        let segment = segments.iter().find(|(n, _)| *n == id).and_then(|(_, s)| *s);
        let state = segment.map_or("no segment".to_string(), |s| {
            let (scl, open, highest, holes) = (s.scl(), s.is_open(), s.highest_lsn(), s.holes(4));
            let next: Vec<(Lsn, Lsn)> =
                s.all_records().filter(|(l, _)| *l > scl).take(3).map(|(l, r)| (l, r.prev_pg_lsn)).collect();
            format!(
                "SCL {scl}, epochs {:?} (open: {open}), highest {highest}, holes {holes:?}, next (LSN, prev) {next:?}, truncations {:?}",
                s.epochs(),
                s.truncations()
            )
        });
        let others: Vec<String> = segments
            .iter()
            .filter_map(|(n, s)| {
                s.map(|s| {
                    let epochs = s.epochs();
                    let (volume, membership) = (epochs.volume, epochs.membership);
                    format!(
                        "{n}: SCL {}, folded {}, epochs {volume}/{membership}",
                        s.scl(),
                        s.folded_through()
                    )
                })
            })
            .collect();
        let damaged = self.rotted_nodes.contains(&id);
        format!(
            "{pg}: newest record {newest}; the segment on {id} (damaged: {damaged}): {state} [{}]",
            others.join("; ")
        )
    }

    /// A page a node returned must be the model's page at the read's LSN.
    pub(super) fn check_page(&mut self, node: NodeId, reply: Message) {
        let Message::Page(page) = reply else {
            self.reads_refused += 1;
            return;
        };
        self.reads_checked += 1;
        if let Some(wrong) = self.wrong_page(node, &page) {
            self.failures.push(wrong);
        }
    }

    /// Why `page`, served by `node`, is not the model's page at its read point, if it is not.
    pub(super) fn wrong_page(&self, node: NodeId, page: &protocol::messages::Page) -> Option<String> {
        let records: Vec<protocol::Record> = self
            .appended
            .range(..=page.read_lsn)
            .filter(|(_, a)| a.page == page.page_id && a.kind != RecordKind::Marker)
            .map(|(lsn, a)| a.record(*lsn))
            .collect();
        let version = records.last().map_or(Lsn::ZERO, protocol::Record::lsn);
        let expected = protocol::apply::materialize(self.geometry.page_bytes, None, &records);
        let expected = expected.expect("the workload writes records that apply");
        (page.version_lsn != version || page.bytes[..] != expected[..]).then(|| {
            format!(
                "{node} served page {} at {} as version {} (model: version {version}{})",
                page.page_id.0,
                page.read_lsn,
                page.version_lsn,
                if page.bytes[..] == expected[..] { ", same bytes" } else { ", other bytes" }
            )
        })
    }

    /// VDL never goes back, and covers a record only once a write quorum (4 of 6) of its PG's
    /// set has it on disk: the writer counted acks right. The set is the first of the writer's
    /// membership when VDL covers it (the only one, or the one a change leaves): whatever the
    /// steps since the record's batch counted, it counted at 4 of that set (4 of both during a
    /// change; after the final step, the new set's members all hold it, the joining one from
    /// the batch itself or by hydration).
    pub(super) fn check_vdl(&mut self) {
        let vdl = self.writer.vdl();
        if vdl < self.vdl_seen {
            self.failures.push(format!("VDL went back from {} to {vdl}", self.vdl_seen));
        }
        let newly: Vec<(Lsn, PgId)> = if vdl > self.vdl_seen {
            self.appended.range(Lsn(self.vdl_seen.0 + 1)..=vdl).map(|(l, a)| (*l, a.pg)).collect()
        } else {
            Vec::new()
        };
        for (lsn, pg) in newly {
            let membership = self.writer.membership(pg);
            let pg_ref = self.geometry.pg_ref(pg);
            let set = membership.current().members();
            let holds = |n: &&NodeId| {
                let node = &self.nodes[n.0 as usize - 1];
                node.has_written(lsn) || node.hydrated_through(pg_ref) >= lsn
            };
            let copies = set.iter().filter(holds).count();
            if copies < 4 {
                let during = if membership.is_joint() { " (during a membership change)" } else { "" };
                let acked: Vec<NodeId> = self
                    .acks
                    .iter()
                    .filter(|(_, p, first, last)| *p == pg && *first <= lsn && lsn <= *last)
                    .map(|(n, ..)| *n)
                    .collect();
                self.failures.push(format!(
                    "VDL {vdl} covered {lsn} while only {copies} disks of {pg}'s set {set:?} had it{during} (acks from {acked:?}, written on {:?})", set.iter().filter(holds).collect::<Vec<_>>()
                ));
                break;
            }
        }
        if vdl > self.vdl_seen {
            if self.declared_vdls.len() == super::DECLARED_VDLS_KEPT {
                self.declared_vdls.pop_front();
            }
            self.declared_vdls.push_back(vdl);
        }
        self.vdl_seen = self.vdl_seen.max(vdl);
    }

    /// Every record VDL covered is stored intact on at least four nodes, less the ones that
    /// rotted: the record itself, or an image of its page at or above it.
    pub(super) fn check_durability(&mut self) {
        let needed = 4usize.saturating_sub(self.rotted_nodes.len()).max(1);
        let held: Vec<Holdings> = self.nodes.iter().map(Holdings::of).collect();
        for (lsn, appended) in self.appended.range(..=self.vdl_seen) {
            let pg = self.geometry.pg_ref(appended.pg);
            let found = held.iter().filter(|h| h.holds(pg, appended, *lsn, true)).count();
            if found < needed {
                self.failures
                    .push(format!("acknowledged record {lsn} intact on {found} nodes, needs {needed}"));
            }
        }
        self.check_acks_were_stored(&held);
    }

    /// A node never acknowledges what it has not stored: every record of every batch a node
    /// acknowledged is on its disk at the end (unless that disk rotted), or at or below the
    /// point a hydration of its segment installed page images through. A batch is the LSNs
    /// the node received in it (a repair batch skips what its source could not read).
    pub(super) fn check_acks_were_stored(&mut self, held: &[Holdings]) {
        for (node, pg, first, last) in std::mem::take(&mut self.acks) {
            if first == Lsn::ZERO || self.rotted_nodes.contains(&node) {
                continue;
            }
            let pg_ref = self.geometry.pg_ref(pg);
            let holdings = &held[node.0 as usize - 1];
            // A record a hydration brought in is held inside the images it installed.
            let hydrated = self.nodes[node.0 as usize - 1].hydrated_through(pg_ref);
            let sent = self.batches.get(&(node, pg, first, last));
            let missing = self.appended.range(first..=last).find(|(lsn, a)| {
                a.pg == pg
                    && sent.is_none_or(|lsns| lsns.contains(lsn))
                    && !holdings.holds(pg_ref, a, **lsn, false)
                    && **lsn > hydrated
            });
            if let Some((lsn, a)) = missing {
                let image = holdings.images.get(&(pg_ref, a.page)).copied();
                self.failures.push(format!(
                    "{node} acknowledged {lsn} ({:?} of page {}) but does not hold it (newest image of the page: {image:?})",
                    a.kind, a.page.0
                ));
                return;
            }
        }
    }
}
