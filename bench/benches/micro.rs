//! Criterion micro-benchmarks of the data path's CPU hot spots, one group each:
//!
//! - `record`: building (CRC), encoding and decoding (CRC check) one redo record;
//! - `crc32c`: CRC32C over a batch-sized buffer;
//! - `seal`: AES-256-GCM sealing and opening of a journal block with `storaged::seal::DataKey`
//!   (the public API the journal seals entries with), and `build_group` sealing a whole group;
//! - `apply`: materializing a 4 KiB page from a base image and a chain of `PagePatch` records;
//! - `quorum`: the client's per-ack write-quorum check and one VDL ladder advance.
//!
//! Run with `cargo bench -p borealis-bench --bench micro`.

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};

use client::core::ladder::Ladder;
use protocol::codec::Reader;
use protocol::patch::{self, PatchEdit};
use protocol::quorum::{Membership, SegmentSet};
use protocol::{
    Epoch, KeyVersion, Lsn, NodeId, PageId, PgId, PgRef, Record, RecordFlags, RecordKind, RecordMeta,
    VolumeId,
};
use storaged::core::{EntryBody, JournalEntry};
use storaged::journal::format::{EntryAt, EntryHeader, EntryKind};
use storaged::journal::group::build_group;
use storaged::seal::{DataKey, Kek, NonceCounter, TAG_BYTES};

const KIB: usize = 1024;

/// A human label for a byte count: `100B`, `4KiB`, `1MiB`.
fn size_label(bytes: usize) -> String {
    if bytes >= KIB * KIB && bytes % (KIB * KIB) == 0 {
        format!("{}MiB", bytes / (KIB * KIB))
    } else if bytes >= KIB && bytes % KIB == 0 {
        format!("{}KiB", bytes / KIB)
    } else {
        format!("{bytes}B")
    }
}

/// Deterministic non-constant filler bytes.
fn filler(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// Metadata of record `lsn` of page 7, its predecessor being `lsn - 1` on every chain.
fn meta(kind: RecordKind, lsn: u64) -> RecordMeta {
    RecordMeta {
        flags: RecordFlags::empty(),
        prev_page_lsn: if kind == RecordKind::Marker { Lsn::ZERO } else { Lsn(lsn - 1) },
        ..RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), kind, PageId(7))
    }
}

/// `Record::new` (header + payload CRC32C), `Record::encode` into a reused buffer, and
/// `Record::decode` (header checks, payload slice, CRC32C verification). The payload is an
/// engine `Marker` payload, the one kind whose payload may have any length and content.
fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for payload_bytes in [100, KIB, 16 * KIB] {
        let payload = Bytes::from(filler(payload_bytes, 1));
        let meta = meta(RecordKind::Marker, 42);
        let record = Record::new(meta, payload.clone()).expect("valid record");
        let mut encoded = BytesMut::with_capacity(record.encoded_len());
        record.encode(&mut encoded);
        let encoded = encoded.freeze();
        group.throughput(Throughput::Bytes(record.encoded_len() as u64));
        let label = size_label(payload_bytes);

        group.bench_with_input(BenchmarkId::new("new", &label), &payload, |b, payload| {
            b.iter(|| Record::new(black_box(meta), black_box(payload).clone()).expect("valid record"))
        });
        group.bench_with_input(BenchmarkId::new("encode", &label), &record, |b, record| {
            let mut out = BytesMut::with_capacity(record.encoded_len());
            b.iter(|| {
                out.clear();
                black_box(record).encode(&mut out);
                black_box(out.len())
            })
        });
        group.bench_with_input(BenchmarkId::new("decode", &label), &encoded, |b, encoded| {
            b.iter(|| {
                let mut reader = Reader::new(black_box(encoded).clone());
                Record::decode(&mut reader).expect("decodes")
            })
        });
    }
    group.finish();
}

/// CRC32C over a batch-sized buffer (the journal's group and entry checksums, the record CRC).
fn crc(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for bytes in [64 * KIB, KIB * KIB] {
        let buf = filler(bytes, 2);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size_label(bytes)), &buf, |b, buf| {
            b.iter(|| crc32c::crc32c(black_box(buf)))
        });
    }
    group.finish();
}

/// A volume data key, wrapped and unwrapped as a node does at start-up.
fn data_key() -> DataKey {
    let kek = Kek::from_bytes([7; 32]);
    let (_, wrapped) = kek.new_data_key(VolumeId(1), KeyVersion(1)).expect("os randomness");
    kek.unwrap(&wrapped).expect("unwraps")
}

/// A nonce counter with a reservation far larger than any benchmark run consumes.
fn nonces() -> NonceCounter {
    let mut counter = NonceCounter::resume(NodeId(1), 0);
    counter.reserved(counter.reservation_after(1));
    counter
}

/// `DataKey::seal` and `DataKey::open` (AES-256-GCM in place, detached tag) over one block,
/// with an image entry header as associated data, exactly as `journal::group` seals and opens
/// entries; and `journal::group::build_group` laying out, sealing and checksumming a group that
/// holds one page-image entry of the block's size.
fn seal(c: &mut Criterion) {
    let mut group = c.benchmark_group("seal");
    let key = data_key();
    let pg = PgRef { volume_id: VolumeId(1), pg_id: PgId(0) };
    for bytes in [4 * KIB, 64 * KIB] {
        let label = size_label(bytes);
        group.throughput(Throughput::Bytes(bytes as u64));
        let header = EntryHeader {
            kind: EntryKind::Image,
            entry_len: (storaged::journal::format::ENTRY_HEADER_BYTES + bytes + TAG_BYTES) as u32,
            record_count: 0,
            pg,
            key_version: key.version(),
            epoch: Epoch(7),
            first_lsn: Lsn(100),
            last_lsn: Lsn(100),
            nonce: [0; 12],
            page_bytes: bytes as u32,
        };
        let ad = header.associated_data(EntryAt { file: 1, offset: 4096 });
        let ad = &ad[..];

        let mut counter = nonces();
        let mut block = filler(bytes, 3);
        group.bench_function(BenchmarkId::new("seal", &label), |b| {
            b.iter(|| {
                let nonce = counter.take().expect("nonce reserved");
                key.seal(&nonce, black_box(ad), black_box(&mut block[..]))
            })
        });

        let nonce = nonces().take().expect("nonce reserved");
        let mut sealed = filler(bytes, 4);
        let tag = key.seal(&nonce, ad, &mut sealed);
        group.bench_function(BenchmarkId::new("open", &label), |b| {
            // Opening decrypts in place, so each iteration opens a fresh copy of the ciphertext;
            // the copy is made outside the timed section.
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| key.open(&nonce, black_box(ad), &mut buf[..], &tag).expect("authentic"),
                BatchSize::SmallInput,
            )
        });

        let entries = [JournalEntry {
            seq: 1,
            pg,
            body: EntryBody::Image {
                page_id: PageId(7),
                version_lsn: Lsn(100),
                page: Bytes::from(filler(bytes, 5)),
            },
        }];
        let mut counter = nonces();
        let mut group_seq = 0u64;
        group.bench_function(BenchmarkId::new("build_group_image", &label), |b| {
            b.iter(|| {
                group_seq += 1;
                build_group(group_seq, 1, 0, black_box(&entries), |_| Some(&key), &mut counter)
                    .expect("group builds")
            })
        });
    }
    group.finish();
}

/// A chain of `len` `PagePatch` records of page 7 following a base image at LSN 100. Each
/// patch rewrites the 24-byte page header and one 100-byte row, as a B-tree insert would.
fn patch_chain(page_bytes: usize, len: usize) -> Vec<Record> {
    let header = filler(24, 6);
    let row = filler(100, 7);
    let rows = (page_bytes - 64) / 128;
    (0..len)
        .map(|i| {
            let row_at = 64 + (i % rows) * 128;
            let payload = patch::encode(&[
                PatchEdit { offset: 0, data: &header },
                PatchEdit { offset: row_at as u32, data: &row },
            ])
            .expect("valid patch");
            Record::new(meta(RecordKind::PagePatch, 101 + i as u64), payload).expect("valid record")
        })
        .collect()
}

/// `protocol::apply::materialize` of a 4 KiB page: copy the base image, apply each patch.
fn apply(c: &mut Criterion) {
    let mut group = c.benchmark_group("apply");
    let page_bytes = 4 * KIB;
    let base = filler(page_bytes, 8);
    for chain in [1, 16, 64] {
        let records = patch_chain(page_bytes, chain);
        group.throughput(Throughput::Elements(chain as u64));
        group.bench_with_input(
            BenchmarkId::new("materialize_4KiB", format!("{chain}_patches")),
            &records,
            |b, records| {
                b.iter(|| {
                    protocol::apply::materialize(
                        page_bytes as u32,
                        Some(black_box(&base)),
                        black_box(records),
                    )
                    .expect("applies")
                })
            },
        );
    }
    group.finish();
}

/// The client's per-ack path for one in-flight batch (as `WriterCore` handles an ack): record
/// the acking node once, then check `write_quorum_met`, for every ack of the batch in arrival
/// order. Then one `Ladder::mark_durable` call for a durable batch.
fn quorum(c: &mut Criterion) {
    let mut group = c.benchmark_group("quorum");
    let current = SegmentSet::new([1, 2, 3, 4, 5, 6].map(NodeId)).expect("distinct");
    let next = SegmentSet::new([1, 2, 3, 4, 5, 7].map(NodeId)).expect("distinct");
    let stable = Membership::stable(Epoch(1), current);
    let transition = Membership::transition(Epoch(2), current, next).expect("different sets");
    let arrivals = [3, 1, 5, 2, 6, 4].map(NodeId);
    let arrivals_transition = [3, 1, 7, 5, 2, 6, 4].map(NodeId);
    for (name, membership, arrivals) in
        [("stable", stable, &arrivals[..]), ("transition", transition, &arrivals_transition[..])]
    {
        group.throughput(Throughput::Elements(arrivals.len() as u64));
        let mut acked: Vec<NodeId> = Vec::with_capacity(8);
        group.bench_function(BenchmarkId::new("write_quorum_met_per_ack", name), |b| {
            b.iter(|| {
                acked.clear();
                let mut met_at = 0;
                for (i, node) in black_box(arrivals).iter().enumerate() {
                    if !acked.contains(node) {
                        acked.push(*node);
                    }
                    if black_box(&membership).write_quorum_met(&acked) && met_at == 0 {
                        met_at = i + 1;
                    }
                }
                met_at
            })
        });
    }

    // A ladder with 64 records in flight over 4 PGs, a CPL every 8th record. `advance`: the
    // batch of the 16 oldest becomes durable, so VCL and VDL move past 16 records. `hole`:
    // the next 16 become durable first, so nothing moves.
    let mut ladder = Ladder::starting_at(Lsn(1000));
    for i in 1..=64u64 {
        ladder.allocate(Lsn(1000 + i), PgId((i % 4) as u32), i % 8 == 0);
    }
    let batch = 16u64;
    group.throughput(Throughput::Elements(batch));
    for (name, first) in [("advance", 1001u64), ("hole", 1017u64)] {
        group.bench_function(BenchmarkId::new("ladder_mark_durable_16_of_64", name), |b| {
            b.iter_batched_ref(
                || ladder.clone(),
                |ladder| ladder.mark_durable((first..first + batch).map(Lsn)),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, record, crc, seal, apply, quorum);
criterion_main!(benches);
