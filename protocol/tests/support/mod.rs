//! Seeded generators of valid records and messages, shared by the property and random-input
//! tests. Values are small so that exhaustive bit-flip checks stay fast.

#![allow(dead_code)]

use bytes::Bytes;
use protocol::messages::*;
use protocol::patch::{self, PatchEdit};
use protocol::quorum::{Membership, SegmentSet};
use protocol::{
    AzId, Epoch, Epochs, Lsn, LsnRange, Message, NodeId, PageId, PgId, PgRef, Record, RecordFlags,
    RecordKind, RecordMeta, VolumeId,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

fn bytes(rng: &mut SmallRng, max: usize) -> Bytes {
    let len = rng.random_range(0..=max);
    (0..len).map(|_| rng.random::<u8>()).collect::<Vec<u8>>().into()
}

fn epochs(rng: &mut SmallRng) -> Epochs {
    Epochs {
        volume: Epoch(rng.random_range(1..5)),
        membership: Epoch(rng.random_range(1..5)),
        geometry: Epoch(rng.random_range(1..5)),
    }
}

fn pg(rng: &mut SmallRng) -> PgRef {
    PgRef { volume_id: VolumeId(rng.random()), pg_id: PgId(rng.random_range(0..8)) }
}

fn range(rng: &mut SmallRng) -> LsnRange {
    let after = rng.random_range(0..1_000_000u64);
    LsnRange::new(Lsn(after), Lsn(after + rng.random_range(1..1000))).unwrap()
}

fn payload(rng: &mut SmallRng, kind: RecordKind, payload_max: usize) -> Bytes {
    match kind {
        RecordKind::PageImage | RecordKind::Marker => bytes(rng, payload_max),
        RecordKind::PageZero | RecordKind::PageTrim => Bytes::new(),
        RecordKind::PagePatch => {
            let edit_count = rng.random_range(1..4);
            let data: Vec<Bytes> =
                (0..edit_count).map(|_| bytes(rng, payload_max)).filter(|d| !d.is_empty()).collect();
            let data = if data.is_empty() { vec![Bytes::from_static(b"x")] } else { data };
            let edits: Vec<PatchEdit<'_>> =
                data.iter().map(|d| PatchEdit { offset: rng.random_range(0..4096), data: d }).collect();
            patch::encode(&edits).unwrap()
        }
    }
}

/// A chain of records of one PG: strictly increasing LSNs, each `prev_pg_lsn` the previous LSN.
pub fn record_chain(rng: &mut SmallRng, count: usize, epoch: Epoch, payload_max: usize) -> Vec<Record> {
    let mut prev = Lsn(rng.random_range(0..1000));
    (0..count)
        .map(|_| {
            let kind = RecordKind::ALL[rng.random_range(0..RecordKind::ALL.len())];
            let lsn = Lsn(prev.0 + rng.random_range(1..50));
            let prev_volume_lsn = Lsn(rng.random_range(prev.0..lsn.0));
            let prev_page_lsn =
                if kind == RecordKind::Marker { Lsn::ZERO } else { Lsn(rng.random_range(0..=prev.0)) };
            let flags = if rng.random_bool(0.3) { RecordFlags::CPL } else { RecordFlags::empty() };
            let meta = RecordMeta {
                kind,
                flags,
                lsn,
                prev_volume_lsn,
                prev_pg_lsn: prev,
                prev_page_lsn,
                page_id: PageId(rng.random_range(0..64)),
                epoch,
            };
            prev = lsn;
            Record::new(meta, payload(rng, kind, payload_max)).unwrap()
        })
        .collect()
}

/// Any message, valid by construction.
pub fn message(rng: &mut SmallRng, payload_max: usize) -> Message {
    let pg = pg(rng);
    let epochs = epochs(rng);
    let node = NodeId(rng.random_range(0..100));
    let lsn = |rng: &mut SmallRng| Lsn(rng.random_range(0..1_000_000));
    match rng.random_range(1..=25u8) {
        1 => {
            let count = rng.random_range(0..5);
            let records = record_chain(rng, count, epochs.volume, payload_max);
            let vdl = lsn(rng);
            Message::AppendBatch(AppendBatch {
                pg,
                epochs,
                vdl,
                pg_vdl_lsn: Lsn(rng.random_range(0..=vdl.0)),
                page_bytes: 512 << rng.random_range(0..8),
                records,
            })
        }
        2 => Message::AppendAck(AppendAck {
            pg,
            node,
            epochs,
            first_lsn: lsn(rng),
            last_lsn: lsn(rng),
            scl: lsn(rng),
            credit_bytes: rng.random(),
        }),
        3 => Message::ReadRecords(ReadRecords { pg, epochs, range: range(rng), bytes_max: rng.random() }),
        4 => {
            let count = rng.random_range(0..4);
            let records = record_chain(rng, count, epochs.volume, payload_max);
            Message::Records(Records { pg, node, scl: lsn(rng), more: rng.random(), records })
        }
        5 => {
            let read_lsn = lsn(rng);
            Message::ReadPage(ReadPage {
                pg,
                epochs,
                page_id: PageId(rng.random()),
                read_lsn,
                pg_newest_lsn: Lsn(rng.random_range(0..=read_lsn.0)),
                page_bytes: 512 << rng.random_range(0..8),
            })
        }
        6 => {
            let read_lsn = lsn(rng);
            let page: Vec<u8> = (0..512).map(|_| rng.random()).collect();
            Message::Page(Page {
                pg,
                page_id: PageId(rng.random()),
                read_lsn,
                version_lsn: Lsn(rng.random_range(0..=read_lsn.0)),
                bytes: page.into(),
            })
        }
        7 => {
            let scl = lsn(rng);
            let holes = (0..rng.random_range(0..4)).map(|_| range(rng)).collect();
            Message::GossipSummary(GossipSummary {
                pg,
                node,
                epochs,
                scl,
                highest_lsn: Lsn(scl.0 + rng.random_range(0..100)),
                folded_through: Lsn(rng.random_range(0..=scl.0)),
                floor: lsn(rng),
                open: rng.random(),
                holes,
            })
        }
        8 => Message::GossipFetch(GossipFetch {
            pg,
            epochs,
            ranges: (0..rng.random_range(0..4)).map(|_| range(rng)).collect(),
            bytes_max: rng.random(),
        }),
        9 => Message::EpochBump(EpochBump { pg, epochs }),
        10 => {
            let truncations =
                (0..rng.random_range(0..3)).map(|_| (Epoch(rng.random_range(1..9)), range(rng))).collect();
            Message::EpochAck(EpochAck {
                pg,
                node,
                epochs,
                scl: lsn(rng),
                highest_lsn: lsn(rng),
                vdl_hint: lsn(rng),
                truncations,
            })
        }
        11 => Message::Truncate(Truncate { pg, epochs, range: range(rng) }),
        12 => Message::TruncateAck(TruncateAck { pg, node, epochs, range: range(rng) }),
        13 => Message::StatusRequest,
        14 => {
            let segments = (0..rng.random_range(0..4))
                .map(|_| SegmentStatus {
                    pg,
                    epochs,
                    scl: lsn(rng),
                    highest_lsn: lsn(rng),
                    floor: lsn(rng),
                    state: SegmentState::from_u16(rng.random_range(0..5)),
                    membership: membership(rng),
                })
                .collect();
            Message::Status(Status { node, az: AzId(rng.random_range(0..3)), segments })
        }
        16 => Message::FloorReport(FloorReport {
            pg,
            client: rng.random(),
            floor: lsn(rng),
            lease_ms: rng.random(),
        }),
        17 => Message::FloorAck(FloorAck {
            pg,
            node,
            floor: lsn(rng),
            scl: lsn(rng),
            vdl: lsn(rng),
            replace: rng.random::<bool>().then(|| NodeId(rng.random_range(1..100))),
        }),
        18 => Message::HydrateFetch(HydrateFetch {
            pg,
            epochs,
            read_lsn: lsn(rng),
            from_page: PageId(rng.random_range(0..1000)),
            bytes_max: rng.random(),
        }),
        19 => {
            let read_lsn = lsn(rng);
            let pg_newest_lsn = Lsn(rng.random_range(0..=read_lsn.0));
            let mut page_id = rng.random_range(0..100u64);
            let pages = (0..rng.random_range(0..3))
                .map(|_| {
                    page_id += rng.random_range(1..10);
                    let version_lsn = Lsn(rng.random_range(0..=pg_newest_lsn.0));
                    let bytes = (0..512).map(|_| rng.random::<u8>()).collect::<Vec<u8>>().into();
                    HydratedPage { page_id: PageId(page_id), version_lsn, bytes }
                })
                .collect();
            let truncations =
                (0..rng.random_range(0..3)).map(|_| (Epoch(rng.random_range(1..9)), range(rng))).collect();
            Message::HydratePages(HydratePages {
                pg,
                node,
                epochs,
                read_lsn,
                pg_newest_lsn,
                page_bytes: 512,
                more: rng.random(),
                next_page: PageId(page_id + 1),
                truncations,
                pages,
            })
        }
        20 => Message::MembershipChange(MembershipChange {
            pg,
            epochs,
            membership: membership(rng).unwrap_or_else(|| Membership::stable(Epoch(2), six(rng, 1))),
        }),
        21 => Message::MembershipAck(MembershipAck {
            pg,
            node,
            epochs,
            membership_epoch: Epoch(rng.random_range(1..1 << 40)),
            scl: lsn(rng),
        }),
        22 => Message::ReadPageAsOf(ReadPageAsOf {
            pg,
            page_id: PageId(rng.random()),
            read_lsn: lsn(rng),
            page_bytes: 512 << rng.random_range(0..8),
        }),
        23 => Message::ReplaceNodeAsk(ReplaceNodeAsk { node }),
        24 => Message::AclChange(AclChange {
            volume: pg.volume_id,
            role: rng.random_range(AclChange::ROLE_READ..=AclChange::ROLE_ADMIN),
            grant: rng.random(),
            identity: format!("borealis://client/c{}", rng.random::<u16>()),
        }),
        25 => Message::DeleteVolume(DeleteVolume { volume: pg.volume_id }),
        _ => {
            let code = ErrorCode::from_u16(rng.random_range(1..=12));
            Message::Error(ErrorReply { code, pg, epochs, message: "stale epoch: node holds epoch:3".into() })
        }
    }
}

/// Six distinct node ids starting at `first`, shuffled by the rng.
fn six(rng: &mut impl Rng, first: u32) -> SegmentSet {
    let mut ids: [u32; 6] = std::array::from_fn(|i| first + i as u32);
    if rng.random::<bool>() {
        ids.reverse();
    }
    SegmentSet::new(ids.map(NodeId)).expect("distinct")
}

/// No stored membership, a stable one or a change.
fn membership(rng: &mut impl Rng) -> Option<Membership> {
    let epoch = Epoch(rng.random_range(1..1 << 40));
    match rng.random_range(0..3) {
        0 => None,
        1 => Some(Membership::stable(epoch, six(rng, 1))),
        _ => Some(Membership::transition(epoch, six(rng, 1), six(rng, 2)).expect("different sets")),
    }
}
