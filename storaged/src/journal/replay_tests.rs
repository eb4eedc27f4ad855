//! One test per row of the replay decision table, on journal files written by hand.

use bytes::Bytes;
use protocol::{
    AzId, Epoch, Epochs, Lsn, NodeId, PageId, PgId, PgRef, Record, RecordKind, RecordMeta, VolumeId,
};

use super::files::{log_path, JournalPosition, JOURNAL_PREFIX};
use super::group::{build_group, GroupImage};
use super::replay::{replay, ReplayOutcome};
use crate::core::{EntryBody, JournalEntry};
use crate::keyring::Keyring;
use crate::seal::Kek;
use crate::storage::sim::{complete, SimDisk};
use crate::storage::Storage;

type Keys = Keyring<SimDisk>;

const PG: PgRef = PgRef { volume_id: VolumeId(4), pg_id: PgId(0) };

fn keyring(disk: &SimDisk) -> Keys {
    complete(Keyring::open(disk, NodeId(1), Kek::from_bytes([9; 32]))).unwrap()
}

fn path(file: u64) -> String {
    log_path(JOURNAL_PREFIX, file)
}

fn record(lsn: u64) -> Record {
    let meta = RecordMeta::after(Lsn(lsn - 1), Lsn(lsn), RecordKind::Marker, PageId(0));
    Record::new(meta, Bytes::from(format!("commit {lsn}"))).unwrap()
}

/// Group `seq` of file 1, written at `offset`, holding two entries: records `2*seq-1` and
/// `2*seq`.
fn group(keys: &Keys, seq: u64, offset: usize) -> GroupImage {
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
    let sealed = keys.seal(std::iter::once(PG.volume_id), 2, |map, nonces| {
        build_group(seq, 1, offset as u64, &entries, |v| map.sealing(v), nonces)
    });
    complete(sealed).unwrap().unwrap()
}

/// Writes groups 1..=count to journal file 1 and returns each group's offset.
fn write_journal(disk: &SimDisk, keys: &Keys, count: u64) -> Vec<usize> {
    let mut bytes = vec![0u8; 1 << 20];
    let mut offsets = Vec::new();
    let mut at = 0;
    for seq in 1..=count {
        let image = group(keys, seq, at);
        bytes[at..at + image.bytes.len()].copy_from_slice(image.bytes.as_slice());
        offsets.push(at);
        at += image.bytes.len();
    }
    complete(disk.put(&path(1), bytes)).unwrap();
    offsets
}

fn damage(disk: &SimDisk, offset: usize, len: usize) {
    let mut bytes = disk.contents(&path(1)).unwrap();
    bytes[offset..offset + len].iter_mut().for_each(|b| *b ^= 0x5a);
    complete(disk.put(&path(1), bytes)).unwrap();
}

fn run(disk: &SimDisk, keys: &Keys) -> (ReplayOutcome, Vec<u64>) {
    let mut lsns = Vec::new();
    let outcome = complete(replay(disk, JOURNAL_PREFIX, keys, None, |pg, body, _| {
        assert_eq!(pg, PG);
        if let EntryBody::Records { records, .. } = body {
            lsns.extend(records.iter().map(|r| r.lsn().0));
        }
    }))
    .unwrap();
    (outcome, lsns)
}

#[test]
fn a_clean_journal_replays_every_group_and_resumes_after_the_last() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    let (outcome, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4, 5, 6]);
    assert_eq!((outcome.next_group_seq, outcome.tail_file), (4, 1));
    assert_eq!(outcome.tail_offset as usize, offsets[2] + 4096);
    let _ = AzId(0);
}

#[test]
fn a_torn_last_group_is_cut_and_its_records_are_not_replayed() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    damage(&disk, offsets[2] + 200, 16);
    let (outcome, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    assert!(outcome.report.torn_tail_cut);
    assert_eq!((outcome.tail_offset as usize, outcome.next_group_seq), (offsets[2], 3));
}

#[test]
fn a_damaged_entry_mid_log_is_skipped_and_everything_after_it_survives() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    damage(&disk, offsets[1] + 64 + 90, 1);
    let (outcome, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2, 4, 5, 6], "record 3 is missing, nothing else");
    assert_eq!(outcome.report.corrupt_entries, 1);
    assert!(!outcome.report.torn_tail_cut);
    assert_eq!(outcome.next_group_seq, 4);
}

#[test]
fn a_damaged_group_header_mid_log_loses_only_that_group() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    damage(&disk, offsets[1], 8);
    let (outcome, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2, 5, 6]);
    assert_eq!(outcome.report.missing_groups, 1);
    assert_eq!(outcome.next_group_seq, 4);
}

#[test]
fn a_damaged_last_group_header_ends_the_log_there() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    damage(&disk, offsets[2], 8);
    let (outcome, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2, 3, 4]);
    assert_eq!((outcome.tail_offset as usize, outcome.next_group_seq), (offsets[2], 3));
}

#[test]
fn a_group_written_to_the_wrong_file_is_not_replayed() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    write_journal(&disk, &keys, 1);
    complete(disk.put(&path(2), disk.contents(&path(1)).unwrap())).unwrap();
    complete(disk.remove(&path(1))).unwrap();
    let (_, lsns) = run(&disk, &keys);
    assert!(lsns.is_empty(), "a group claiming file 1 found in file 2 is misdirected");
}

#[test]
fn sealed_entries_do_not_open_under_another_nodes_key() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    write_journal(&disk, &keys, 1);
    let stranger = keyring(&SimDisk::new());
    let (outcome, lsns) = run(&disk, &stranger);
    assert!(lsns.is_empty());
    assert_eq!(outcome.report.corrupt_entries, 2);
    let _ = Epochs::INITIAL;
}

#[test]
fn replay_from_a_checkpoint_position_reads_only_the_groups_after_it() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 3);
    let start = JournalPosition { file: 1, offset: offsets[2] as u64, next_group_seq: 3 };
    let mut lsns = Vec::new();
    let outcome = complete(replay(&disk, JOURNAL_PREFIX, &keys, Some(start), |_, body, _| {
        if let EntryBody::Records { records, .. } = body {
            lsns.extend(records.iter().map(|r| r.lsn().0));
        }
    }))
    .unwrap();
    assert_eq!(lsns, vec![5, 6]);
    assert_eq!(outcome.next_group_seq, 4);
}

#[test]
fn an_entry_is_valid_only_where_it_was_written() {
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let offsets = write_journal(&disk, &keys, 2);
    // Group 1's bytes copied over group 2's place (a misdirected write): the group header
    // no longer continues the sequence, and its entries no longer verify there either.
    let mut bytes = disk.contents(&path(1)).unwrap();
    let group_one = bytes[offsets[0]..offsets[1]].to_vec();
    bytes[offsets[1]..offsets[1] + group_one.len()].copy_from_slice(&group_one);
    let entry = &bytes[offsets[1] + super::format::GROUP_HEADER_BYTES..];
    let here =
        super::format::EntryAt { file: 1, offset: (offsets[1] + super::format::GROUP_HEADER_BYTES) as u64 };
    let there =
        super::format::EntryAt { file: 1, offset: (offsets[0] + super::format::GROUP_HEADER_BYTES) as u64 };
    assert!(super::format::EntryHeader::decode(entry, there).is_ok(), "valid where it was written");
    assert_eq!(
        super::format::EntryHeader::decode(entry, here),
        Err(super::format::JournalFault::EntryChecksum)
    );
    complete(disk.put(&path(1), bytes)).unwrap();
    let (_, lsns) = run(&disk, &keys);
    assert_eq!(lsns, vec![1, 2], "group 2's place holds no valid group");
}

#[test]
fn a_file_created_for_a_group_a_crash_lost_is_deleted_at_open_and_made_again() {
    use super::commit::write_group;
    use super::writer::{Journal, JournalConfig};
    let disk = SimDisk::new();
    let keys = keyring(&disk);
    let config = JournalConfig { prefix: JOURNAL_PREFIX, file_bytes: 4 * 4096 };
    // Records 1-3 each make a one-sector group; record 4 (with a 5000-byte payload) two.
    let entries = |seq: u64| {
        let mut records = vec![record(seq)];
        if seq == 4 {
            records = vec![Record::new(*records[0].meta(), Bytes::from(vec![7u8; 5000])).unwrap()];
        }
        let body = EntryBody::Records { epoch: Epoch(1), page_bytes: 4096, records };
        vec![JournalEntry { seq, pg: PG, body }]
    };
    let replayed = complete(replay(&disk, JOURNAL_PREFIX, &keys, None, |_, _, _| {})).unwrap();
    let mut journal = complete(Journal::open(disk.clone(), config, &replayed)).unwrap();
    // Three one-sector groups leave one sector of file 1; the fourth does not fit, rolls to
    // file 2, and is lost with the power.
    for seq in 1..=4 {
        complete(write_group(&mut journal, &keys, &entries(seq))).unwrap();
        if seq < 4 {
            complete(journal.flush()).unwrap();
        }
    }
    disk.crash(0, 0);
    assert_eq!(disk.list(JOURNAL_PREFIX).unwrap().len(), 2, "file 2 was created before the write");
    let (replayed, lsns) = run(&disk, &keys);
    assert_eq!((lsns, replayed.tail_file), (vec![1, 2, 3], 1));
    let mut journal = complete(Journal::open(disk.clone(), config, &replayed)).unwrap();
    assert_eq!(journal.reader().files(), vec![1], "the unused file is gone");
    complete(write_group(&mut journal, &keys, &entries(4))).unwrap();
    complete(journal.flush()).unwrap();
    assert_eq!(run(&disk, &keys).1, vec![1, 2, 3, 4], "the roll made file 2 again");
}
