//! What the checkers see of a node's disk: the bytes read back and verified with the store's
//! own read functions (never a cache), so "stored intact" means what a restarted node would
//! find.

use protocol::{Lsn, PageId, PgRef, Record};
use storaged::core::{EntryBody, Stored as StoredAt};
use storaged::journal::files::{JOURNAL_PREFIX, PAGES_PREFIX};
use storaged::journal::replay::replay;
use storaged::storage::sim::complete;
use storaged::store::reads::{read_image, read_verified};

use super::SimNode;

/// What a node's disk holds intact.
#[derive(Debug, Default)]
pub struct Held {
    /// Records of the journal, whatever the core claims.
    pub records: Vec<(PgRef, Record)>,
    /// Page versions of the page store: (PG, page, version).
    pub images: Vec<(PgRef, PageId, Lsn)>,
}

impl SimNode {
    /// Everything the disk holds intact: the journal and page store walked from their first
    /// files as a restart without a checkpoint would (every entry verified), the images read
    /// back and opened.
    pub fn held(&self) -> Held {
        let store = &self.running.store;
        let mut held = Held::default();
        let mut visit = |pg: PgRef, body: &EntryBody, _| {
            if let EntryBody::Records { records, .. } = body {
                held.records.extend(records.iter().map(|r| (pg, r.clone())));
            }
        };
        let _ = complete(replay(&self.disk, JOURNAL_PREFIX, &store.keyring, None, &mut visit));
        let mut images = Vec::new();
        let _ = complete(replay(&self.disk, PAGES_PREFIX, &store.keyring, None, |pg, body, location| {
            if let EntryBody::Image { version_lsn, .. } = body {
                images.push((pg, *version_lsn, location));
            }
        }));
        for (pg, version, location) in images {
            if let Ok((page, _)) = complete(read_image(store, location)) {
                held.images.push((pg, page, version));
            }
        }
        held
    }

    /// A record or image this node's core still claims whose stored copy does not read back
    /// verified, if any, in a segment of a PG `is_member` says it belongs to and that no
    /// membership change retired (a retired segment serves nobody and is repaired by nobody):
    /// after a scrub pass over the damage, none may be left.
    pub fn damaged_claim(&self, is_member: impl Fn(PgRef) -> bool) -> Option<String> {
        let store = &self.running.store;
        for segment in self.core.segments().filter(|s| is_member(s.pg()) && !s.is_retired(self.id)) {
            let retired = if segment.is_retired(self.id) { ", retired" } else { "" };
            for (lsn, record) in segment.all_records() {
                let read = complete(read_verified(store, &store.journal, record.location));
                let intact = matches!(&read, Ok(EntryBody::Records { records, .. }) if records.iter().any(|r| r.lsn() == lsn));
                if !intact {
                    return Some(format!(
                        "{} claims record {lsn} of {:?}{retired} at {:?}, but its copy is damaged ({})",
                        self.id,
                        segment.pg(),
                        record.location,
                        read.err().map_or("another entry".to_string(), |e| e.to_string())
                    ));
                }
            }
            for (page, versions) in segment.pages() {
                for (version, stored) in versions.images() {
                    let StoredAt::At(location) = stored else { continue };
                    let read = complete(read_verified(store, &store.pages, location));
                    let fault = match read {
                        Ok(EntryBody::Image { page_id, version_lsn, .. })
                            if page_id == page && version_lsn == version =>
                        {
                            continue
                        }
                        Ok(_) => "another entry".to_string(),
                        Err(fault) => fault.to_string(),
                    };
                    {
                        return Some(format!(
                            "{} claims the image of page {} of {}{retired} at {version}, but it is damaged ({fault}; {} scrub faults open{}; floor {} vdl hint {} scl {})",
                            self.id,
                            page.0,
                            segment.pg().pg_id,
                            self.core.scrub_faults_open(),
                            if self.core.is_repairing(segment.pg()) { ", repairing" } else { "" },
                            segment.floor(), segment.vdl_hint(), segment.scl(),
                        ));
                    }
                }
            }
        }
        None
    }
}
