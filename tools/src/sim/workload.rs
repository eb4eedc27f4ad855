//! The workload: the writer's records (mostly patches, some images, zeroings, trims and
//! commit markers) as the checkers remember them, and the reader's page reads at random
//! points in [floor, VDL].

use protocol::messages::ReadPage;
use protocol::{Lsn, Message, PageId, PgId, RecordKind};
use rand::Rng;

use client::NewRecord;

use super::net::Endpoint;
use super::{World, READ_PERCENT};

/// A record the writer appended, as the checkers need it.
#[derive(Clone, Debug)]
pub(super) struct Appended {
    pub(super) pg: PgId,
    pub(super) crc: u32,
    pub(super) page: PageId,
    pub(super) kind: RecordKind,
    pub(super) payload: bytes::Bytes,
}

impl Appended {
    /// The record as far as applying it goes (backlinks do not matter there).
    pub(super) fn record(&self, lsn: Lsn) -> protocol::Record {
        let meta = protocol::RecordMeta {
            flags: protocol::RecordFlags::empty(),
            ..protocol::RecordMeta::after(Lsn(lsn.0 - 1), lsn, self.kind, self.page)
        };
        protocol::Record::new(meta, self.payload.clone()).expect("the workload's records are valid")
    }
}

impl World {
    pub(super) fn workload(&mut self) {
        if self.quiet || self.rng.random_range(0..100) >= 60 {
            return;
        }
        let count = self.rng.random_range(1..=3);
        let records: Vec<NewRecord> = (0..count).map(|i| self.page_record(i == count - 1)).collect();
        let geometry = *self.writer.geometry();
        let keys: Vec<Appended> = records
            .iter()
            .map(|r| Appended {
                pg: geometry.pg_of(r.page),
                crc: crc32c::crc32c(&r.payload),
                page: r.page,
                kind: r.kind,
                payload: r.payload.clone(),
            })
            .collect();
        if let Ok((first, _)) = self.writer.append(records) {
            for (i, key) in keys.into_iter().enumerate() {
                self.appended.insert(Lsn(first.0 + i as u64), key);
            }
        }
    }

    /// A random record: mostly patches, some images, zeroings, trims and commit markers.
    pub(super) fn page_record(&mut self, cpl: bool) -> NewRecord {
        let page = PageId(self.rng.random_range(0..self.config.pages));
        let page_bytes = self.geometry.page_bytes as usize;
        let byte: u8 = self.rng.random();
        let (kind, payload) = match self.rng.random_range(0..20) {
            0..=2 => (RecordKind::PageImage, vec![byte; page_bytes]),
            3 => (RecordKind::PageZero, Vec::new()),
            4 => (RecordKind::PageTrim, Vec::new()),
            5 | 6 => (RecordKind::Marker, format!("commit {byte}").into_bytes()),
            _ => {
                let offset = self.rng.random_range(0..page_bytes as u32 - 32);
                let data = vec![byte; self.rng.random_range(1..32)];
                let patch = protocol::patch::encode(&[protocol::patch::PatchEdit { offset, data: &data }]);
                (RecordKind::PagePatch, patch.expect("a valid patch").to_vec())
            }
        };
        NewRecord { page, kind, payload: payload.into(), cpl, lsn: None }
    }

    /// Now and then, reads a random written page at a random point in [floor, VDL] from the
    /// segment the writer's routing picks first; the answer is checked when it arrives.
    pub(super) fn read_a_page(&mut self) {
        if self.rng.random_range(0..100) >= READ_PERCENT || self.appended.is_empty() {
            return;
        }
        let vdl = self.writer.vdl();
        let floor = self.writer.floor();
        if vdl == Lsn::ZERO || floor > vdl {
            return;
        }
        let index = self.rng.random_range(0..self.appended.len());
        let page = self.appended.values().nth(index).expect("index in range").page;
        let pg = self.geometry.pg_of(page);
        if self.rng.random_bool(0.5) {
            self.read_a_page_as_of(page, floor);
            return;
        }
        let at = Lsn(self.rng.random_range(floor.0..=vdl.0));
        let Ok((need, candidates)) = self.writer.read_route(pg, at) else { return };
        let Some(node) = candidates.first().copied() else { return };
        let read = Message::ReadPage(ReadPage {
            pg: self.geometry.pg_ref(pg),
            epochs: self.writer.epochs(),
            page_id: page,
            read_lsn: at,
            pg_newest_lsn: need,
            page_bytes: self.geometry.page_bytes,
        });
        self.send(Endpoint::Reader, Endpoint::Node(node), read);
    }

    /// A read by a reader that is not the writer: at a VDL some writer reached (not below the
    /// writer's floor, which nodes keep versions from), from any member of the PG, which must
    /// work out the PG's newest LSN itself.
    fn read_a_page_as_of(&mut self, page: protocol::PageId, floor: Lsn) {
        let points: Vec<Lsn> = self.declared_vdls.iter().copied().filter(|l| *l >= floor).collect();
        if points.is_empty() {
            return;
        }
        let at = points[self.rng.random_range(0..points.len())];
        let pg = self.geometry.pg_of(page);
        let members = self.writer.membership(pg).current().members().to_vec();
        let node = members[self.rng.random_range(0..members.len())];
        let read = Message::ReadPageAsOf(protocol::messages::ReadPageAsOf {
            pg: self.geometry.pg_ref(pg),
            page_id: page,
            read_lsn: at,
            page_bytes: self.geometry.page_bytes,
        });
        self.send(Endpoint::AsOfReader, Endpoint::Node(node), read);
    }
}
