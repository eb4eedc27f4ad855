//! One test per row of the replay decision table, on journal files written by hand.

use std::path::Path;

use bytes::Bytes;
use protocol::{
    AzId, Epoch, Epochs, Lsn, NodeId, PageId, PgId, PgRef, Record, RecordFlags, RecordKind, RecordMeta,
    VolumeId,
};

use super::group::{build_group, GroupImage};
use super::replay::{file_name, replay, ReplayOutcome, JOURNAL_PREFIX};
use crate::core::{EntryBody, JournalEntry};
use crate::keyring::Keyring;
use crate::seal::Kek;

const PG: PgRef = PgRef { volume_id: VolumeId(4), pg_id: PgId(0) };

fn keyring(dir: &Path) -> Keyring {
    Keyring::open(dir, NodeId(1), Kek::from_bytes([9; 32])).unwrap()
}

fn record(lsn: u64) -> Record {
    let meta = RecordMeta {
        kind: RecordKind::Marker,
        flags: RecordFlags::CPL,
        lsn: Lsn(lsn),
        prev_volume_lsn: Lsn(lsn - 1),
        prev_pg_lsn: Lsn(lsn - 1),
        prev_page_lsn: Lsn(0),
        page_id: PageId(0),
        epoch: Epoch(1),
    };
    Record::new(meta, Bytes::from(format!("commit {lsn}"))).unwrap()
}

/// Group `seq` of file 1 holding two entries: records `2*seq-1` and `2*seq`.
fn group(keys: &mut Keyring, seq: u64) -> GroupImage {
    let entries: Vec<JournalEntry> = (0..2)
        .map(|i| JournalEntry {
            seq: 2 * seq + i,
            pg: PG,
            body: EntryBody::Records {
                epoch: Epoch(1),
                page_bytes: 4096,
                records: vec![record(2 * seq - 1 + i)],
            },
        })
        .collect();
    keys.prepare(std::iter::once(PG.volume_id), 2).unwrap();
    let (map, nonces) = keys.sealing();
    build_group(seq, 1, &entries, |v| map.get(&v), nonces).unwrap()
}

/// Writes groups 1..=count to journal file 1 and returns each group's offset.
fn write_journal(dir: &Path, keys: &mut Keyring, count: u64) -> Vec<usize> {
    let mut bytes = vec![0u8; 1 << 20];
    let mut offsets = Vec::new();
    let mut at = 0;
    for seq in 1..=count {
        let image = group(keys, seq);
        bytes[at..at + image.bytes.len()].copy_from_slice(image.bytes.as_slice());
        offsets.push(at);
        at += image.bytes.len();
    }
    std::fs::write(dir.join(file_name(1)), bytes).unwrap();
    offsets
}

fn damage(dir: &Path, offset: usize, len: usize) {
    let path = dir.join(file_name(1));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset..offset + len].iter_mut().for_each(|b| *b ^= 0x5a);
    std::fs::write(path, bytes).unwrap();
}

fn run(dir: &Path, keys: &Keyring) -> (ReplayOutcome, Vec<u64>) {
    let mut lsns = Vec::new();
    let outcome = replay(dir, JOURNAL_PREFIX, keys, None, |pg, body, _| {
        assert_eq!(pg, PG);
        if let EntryBody::Records { records, .. } = body {
            lsns.extend(records.iter().map(|r| r.lsn().0));
        }
    })
    .unwrap();
    (outcome, lsns)
}

#[test]
fn a_clean_journal_replays_every_group_and_resumes_after_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    let (outcome, lsns) = run(dir.path(), &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!((outcome.next_group_seq, outcome.tail_file), (4, 1));
    assert_eq!(outcome.tail_offset as usize, offsets[2] + 4096);
    let _ = AzId(0);
}

#[test]
fn a_torn_last_group_is_cut_and_its_records_are_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    damage(dir.path(), offsets[2] + 200, 16);
    let (outcome, lsns) = run(dir.path(), &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    assert!(outcome.report.torn_tail_cut);
    assert_eq!((outcome.tail_offset as usize, outcome.next_group_seq), (offsets[2], 3));
}

#[test]
fn a_damaged_entry_mid_log_is_skipped_and_everything_after_it_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    damage(dir.path(), offsets[1] + 64 + 90, 1);
    let (outcome, lsns) = run(dir.path(), &keys);
    assert_eq!(lsns, vec![1, 2, 4, 5, 6], "record 3 is missing, nothing else");
    assert_eq!(outcome.report.corrupt_entries, 1);
    assert!(!outcome.report.torn_tail_cut);
    assert_eq!(outcome.next_group_seq, 4);
}

#[test]
fn a_damaged_group_header_mid_log_loses_only_that_group() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    damage(dir.path(), offsets[1], 8);
    let (outcome, lsns) = run(dir.path(), &keys);
    assert_eq!(lsns, vec![1, 2, 5, 6]);
    assert_eq!(outcome.report.missing_groups, 1);
    assert_eq!(outcome.next_group_seq, 4);
}

#[test]
fn a_damaged_last_group_header_ends_the_log_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    damage(dir.path(), offsets[2], 8);
    let (outcome, lsns) = run(dir.path(), &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    assert_eq!((outcome.tail_offset as usize, outcome.next_group_seq), (offsets[2], 3));
}

#[test]
fn a_group_written_to_the_wrong_file_is_not_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    write_journal(dir.path(), &mut keys, 1);
    std::fs::copy(dir.path().join(file_name(1)), dir.path().join(file_name(2))).unwrap();
    std::fs::remove_file(dir.path().join(file_name(1))).unwrap();
    let (_, lsns) = run(dir.path(), &keys);
    assert!(lsns.is_empty(), "a group claiming file 1 found in file 2 is misdirected");
}

#[test]
fn sealed_entries_do_not_open_under_another_nodes_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    write_journal(dir.path(), &mut keys, 1);
    let other = tempfile::tempdir().unwrap();
    let stranger = Keyring::open(other.path(), NodeId(1), Kek::from_bytes([9; 32])).unwrap();
    let (outcome, lsns) = run(dir.path(), &stranger);
    assert!(lsns.is_empty());
    assert_eq!(outcome.report.corrupt_entries, 2);
    let _ = Epochs::INITIAL;
}

#[test]
fn replay_from_a_checkpoint_position_reads_only_the_groups_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = keyring(dir.path());
    let offsets = write_journal(dir.path(), &mut keys, 3);
    let start = super::writer::JournalPosition { file: 1, offset: offsets[2] as u64, next_group_seq: 3 };
    let mut lsns = Vec::new();
    let outcome = replay(dir.path(), JOURNAL_PREFIX, &keys, Some(start), |_, body, _| {
        if let EntryBody::Records { records, .. } = body {
            lsns.extend(records.iter().map(|r| r.lsn().0));
        }
    })
    .unwrap();
    assert_eq!(lsns, vec![5, 6]);
    assert_eq!(outcome.next_group_seq, 4);
}
