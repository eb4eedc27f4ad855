//! LSN allocation: `append` builds records with their LSNs and backlinks (all or none) and
//! queues each in its PG.

use std::collections::HashMap;

use protocol::{Lsn, PageId, PgId, Record, RecordFlags, RecordKind, RecordMeta};

use super::{AppendRefusal, NewRecord, WriterCore};

impl WriterCore {
    /// Allocates LSNs and backlinks for `records` (all or none) and queues them. Returns the
    /// first and last LSN.
    pub fn append(&mut self, records: Vec<NewRecord>) -> Result<(Lsn, Lsn), AppendRefusal> {
        if self.fenced {
            return Err(AppendRefusal::Fenced);
        }
        if let Some(code) = self.refused_by {
            return Err(AppendRefusal::refused(code));
        }
        if self.ladder.tracked() + records.len() > self.limits.pending_records_max {
            return Err(AppendRefusal::WindowFull);
        }
        let built = self.build(&records)?;
        let (first, last) = (built[0].lsn(), built[built.len() - 1].lsn());
        for record in built {
            self.enqueue(record);
        }
        let touched: Vec<PgId> = records.iter().map(|r| self.geometry.pg_of(r.page)).collect();
        for pg in dedup(touched) {
            self.flush_pg(pg);
        }
        Ok((first, last))
    }

    /// Builds the records with their LSNs and backlinks without changing any state.
    fn build(&self, records: &[NewRecord]) -> Result<Vec<Record>, AppendRefusal> {
        assert!(!records.is_empty(), "append needs at least one record");
        let mut last = self.last_lsn;
        let mut pg_last: HashMap<PgId, Lsn> = HashMap::new();
        let mut page_last: HashMap<PageId, Lsn> = HashMap::new();
        // After a recovery the window starts at the end of the truncation range: the first
        // LSNs allocated lie above it while VDL is still below it.
        let window_end = self.ladder.vdl().max(self.lsn_floor).0.saturating_add(self.limits.lal);
        let mut built = Vec::with_capacity(records.len());
        for new in records {
            let floor = last.max(self.lsn_floor);
            let lsn = new.lsn.unwrap_or(Lsn(floor.0 + 1));
            if lsn <= floor {
                return Err(AppendRefusal::LsnNotIncreasing { lsn, last: floor });
            }
            if lsn.0 > window_end {
                return Err(AppendRefusal::WindowFull);
            }
            let pg = self.geometry.pg_of(new.page);
            let prev_pg =
                *pg_last.entry(pg).or_insert_with(|| self.pgs.get(&pg).map_or(Lsn::ZERO, |s| s.last_lsn));
            let prev_page = match new.kind {
                RecordKind::Marker => Lsn::ZERO,
                _ => *page_last
                    .entry(new.page)
                    .or_insert_with(|| self.page_last.get(&new.page).copied().unwrap_or(Lsn::ZERO)),
            };
            let meta = RecordMeta {
                kind: new.kind,
                flags: if new.cpl { RecordFlags::CPL } else { RecordFlags::empty() },
                lsn,
                prev_volume_lsn: last,
                prev_pg_lsn: prev_pg,
                prev_page_lsn: prev_page,
                page_id: new.page,
                epoch: self.epochs.volume,
            };
            built.push(Record::new(meta, new.payload.clone()).map_err(AppendRefusal::Format)?);
            last = lsn;
            pg_last.insert(pg, lsn);
            if new.kind != RecordKind::Marker {
                page_last.insert(new.page, lsn);
            }
        }
        Ok(built)
    }

    fn enqueue(&mut self, record: Record) {
        let meta = *record.meta();
        let pg = self.geometry.pg_of(meta.page_id);
        self.ensure_pgs_through(pg);
        self.last_lsn = meta.lsn;
        if meta.kind != RecordKind::Marker {
            if self.page_last.len() >= self.limits.page_backlinks_max {
                self.page_last.clear();
            }
            self.page_last.insert(meta.page_id, meta.lsn);
        }
        self.ladder.allocate(meta.lsn, pg, meta.is_cpl());
        self.read_points.record(pg, meta.lsn);
        let state = self.pgs.get_mut(&pg).expect("ensured above");
        state.last_lsn = meta.lsn;
        state.unsent_bytes += record.encoded_len();
        state.unsent.push_back(record);
    }
}

fn dedup(mut pgs: Vec<PgId>) -> Vec<PgId> {
    pgs.sort();
    pgs.dedup();
    pgs
}
