//! Dropping a volume from a store on the simulated disk: what a drop stores, that a restart
//! (from the checkpoint or from the whole journal) brings nothing of it back and counts its
//! entries as dropped rather than damaged, and that a group the journal had taken before the
//! drop is sealed under no stored key.

use std::cell::RefCell;

use protocol::{AzId, KeyVersion, NodeId, PgId, PgRef};

use super::*;
use crate::core::node_tests::{batch, PG};
use crate::core::{JournalEntry, Limits, NodeCore, RequestId};
use crate::journal::commit::{write_group, GROUP_ENTRIES_MAX};
use crate::journal::group::{entry_len, group_len};
use crate::seal::Kek;
use crate::storage::sim::{complete, SimDisk};
use crate::store::{open, Opened, StoreSettings};

const OTHER: PgRef = PgRef { volume_id: protocol::VolumeId(10), pg_id: PgId(0) };

struct Lent(RefCell<NodeCore>);

impl CoreAccess for Lent {
    fn with_core<T>(&self, f: impl FnOnce(&mut NodeCore) -> T) -> T {
        f(&mut self.0.borrow_mut())
    }
}

fn start(disk: &SimDisk) -> (Lent, Opened<SimDisk>) {
    let mut core = NodeCore::new(NodeId(1), AzId(0), Limits::default());
    let settings = StoreSettings {
        file_bytes: 1 << 20,
        checkpoint_interval_bytes: 1 << 20,
        entry_cache_bytes: 1 << 20,
        coalesce_jobs_max: 8,
    };
    let opened = complete(open(disk.clone(), &mut core, Kek::from_bytes([7; 32]), settings, 0)).unwrap();
    (Lent(RefCell::new(core)), opened)
}

/// Takes every entry queued, as the journal task does.
fn take_group(core: &Lent) -> Vec<JournalEntry> {
    core.with_core(|core| core.poll_journal_group(1 << 20, GROUP_ENTRIES_MAX, entry_len))
}

/// Writes and flushes `entries` as one group, and tells the store.
fn commit(core: &Lent, opened: &mut Opened<SimDisk>, entries: Vec<JournalEntry>) {
    let len = group_len(&entries) as u64;
    complete(write_group(&mut opened.journal, &opened.store.keyring, &entries)).unwrap();
    let placed = complete(opened.journal.flush()).unwrap();
    opened.store.journal_durable(core, &opened.journal, entries, &placed, len);
}

/// Appends records `lsns` (chained) to `pg`, durably.
fn append(core: &Lent, opened: &mut Opened<SimDisk>, pg: PgRef, chain: &[(u64, u64)]) {
    let mut records = batch(1, chain);
    records.pg = pg;
    core.with_core(|core| core.handle_append(RequestId(1), records)).unwrap();
    commit(core, opened, take_group(core));
}

fn lsns(core: &Lent, pg: PgRef) -> Vec<u64> {
    core.with_core(|core| core.segment(&pg).map(|s| s.all_records().map(|(l, _)| l.0).collect()))
        .unwrap_or_default()
}

#[test]
fn a_dropped_volume_stays_dropped_after_a_restart_from_the_checkpoint_or_the_whole_journal() {
    let disk = SimDisk::new();
    let (core, mut opened) = start(&disk);
    append(&core, &mut opened, PG, &[(10, 0), (20, 10)]);
    append(&core, &mut opened, OTHER, &[(10, 0), (20, 10)]);
    append(&core, &mut opened, PG, &[(30, 20)]);

    let dropped = complete(opened.store.drop_volume(&core, PG.volume_id)).unwrap();
    assert!(dropped.newly_tombstoned && dropped.checkpointed);
    assert_eq!((dropped.segments, dropped.records), (vec![PG], 3));
    assert_eq!((dropped.keys_destroyed, dropped.metadata_copies_stored), (vec![KeyVersion(1)], 2));
    assert!(opened.store.keyring.is_dropped(PG.volume_id));
    let again = complete(opened.store.drop_volume(&core, PG.volume_id)).unwrap();
    assert!(!again.newly_tombstoned && again.segments.is_empty() && again.keys_destroyed.is_empty());
    assert_eq!(again.metadata_copies_stored, 0, "both copies already hold the tombstone");
    drop((core, opened));

    let (core, opened) = start(&disk);
    assert!(core.with_core(|core| core.is_dropped(PG.volume_id)));
    assert_eq!((lsns(&core, PG), lsns(&core, OTHER)), (vec![], vec![10, 20]));

    // Without a checkpoint the whole journal is replayed: its entries are dropped, not damage.
    drop((core, opened));
    complete(disk.remove("checkpoint.0")).unwrap();
    complete(disk.remove("checkpoint.1")).unwrap();
    let (core, opened) = start(&disk);
    assert_eq!((lsns(&core, PG), lsns(&core, OTHER)), (vec![], vec![10, 20]));
    let report = &opened.journal_report;
    assert_eq!(report.corrupt_entries, 0, "{report:?}");
    assert_eq!(report.dropped_entries, 3, "its segment's creation and two of records: {report:?}");
}

#[test]
fn a_group_the_journal_took_before_the_drop_is_sealed_under_no_stored_key_and_never_comes_back() {
    let disk = SimDisk::new();
    let (core, mut opened) = start(&disk);
    append(&core, &mut opened, PG, &[(10, 0)]);
    core.with_core(|core| core.handle_append(RequestId(2), batch(1, &[(20, 10)]))).unwrap();
    let mut other = batch(1, &[(10, 0)]);
    other.pg = OTHER;
    core.with_core(|core| core.handle_append(RequestId(3), other)).unwrap();
    let taken = take_group(&core);
    assert_eq!(taken.iter().filter(|e| e.pg == PG).count(), 1);

    complete(opened.store.drop_volume(&core, PG.volume_id)).unwrap();
    commit(&core, &mut opened, taken);
    assert!(lsns(&core, PG).is_empty(), "written after the drop, never indexed");
    assert_eq!(lsns(&core, OTHER), vec![10]);
    for path in crate::meta::COPY_PATHS {
        let meta = crate::meta::decode_copy(&disk.contents(path).unwrap()).unwrap();
        assert!(meta.keys.iter().all(|k| k.volume != PG.volume_id) && meta.is_dropped(PG.volume_id));
    }
    drop((core, opened));

    complete(disk.remove("checkpoint.0")).unwrap();
    complete(disk.remove("checkpoint.1")).unwrap();
    let (core, opened) = start(&disk);
    assert!(lsns(&core, PG).is_empty());
    assert_eq!(lsns(&core, OTHER), vec![10]);
    assert_eq!(opened.journal_report.corrupt_entries, 0, "{:?}", opened.journal_report);
    assert_eq!(opened.journal_report.dropped_entries, 3);
}

#[test]
fn dropping_a_volume_this_node_never_held_stores_its_tombstone_and_refuses_it() {
    let disk = SimDisk::new();
    let (core, opened) = start(&disk);
    let never = protocol::VolumeId(77);
    let dropped = complete(opened.store.drop_volume(&core, never)).unwrap();
    assert!(dropped.newly_tombstoned && dropped.segments.is_empty() && dropped.keys_destroyed.is_empty());
    drop((core, opened));
    let (core, _opened) = start(&disk);
    let mut create = batch(1, &[(10, 0)]);
    create.pg = PgRef { volume_id: never, pg_id: PgId(0) };
    let refused = core.with_core(|core| core.handle_append(RequestId(1), create)).unwrap_err();
    assert!(refused.message.starts_with(crate::core::VOLUME_DELETED), "{refused:?}");
}
