//! The lying disk: an in-memory data directory of 4 KiB sectors that fails the way disks do,
//! for the deterministic simulator and for tests. It keeps what was synced and, at a crash,
//! lands only a prefix of what was not (FoundationDB's `AsyncFileNonDurable`); it can tear a
//! write at a sector boundary, send a write to another file or offset (reporting success),
//! flip bits at rest, fail reads, and run out of space. It decides no fault itself: the
//! simulator's seeded generator picks them and calls `crash`, `misdirect_next_write`, `rot`,
//! `fail_next_read` and `set_full` (TigerBeetle keeps its storage faults in the simulator too).
//!
//! Every operation completes at once, so `complete` runs a future over it to its end without a
//! runtime; the simulator models latency by choosing *when* it calls `sync`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use super::Storage;
use crate::journal::buf::AlignedBuf;

/// The unit a write lands or tears in, and a fault damages.
pub const SECTOR: usize = 4096;

/// Polls a future this many times at most before `complete` calls it stuck.
const POLLS_MAX: usize = 100_000;

/// Runs `future` to completion without a runtime: every `SimDisk` call completes at once, so
/// the only waits are yields to other tasks (which wake at once). A future still waiting after
/// `POLLS_MAX` polls waits for something that never comes: a bug, reported as a panic.
pub fn complete<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..POLLS_MAX {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
    panic!("a future over the simulated disk waits for something that never comes")
}

/// See the module docs. Clones share one disk.
#[derive(Clone, Debug, Default)]
pub struct SimDisk {
    inner: Rc<RefCell<Disk>>,
}

#[derive(Debug, Default)]
struct Disk {
    /// What survives a crash, by path.
    files: BTreeMap<String, SimFile>,
    /// Writes not yet synced, in issue order.
    unsynced: Vec<Unsynced>,
    full: bool,
    fail_reads: u32,
    /// Writes issued so far (numbers them).
    issued: u64,
    /// The next write lands elsewhere: the pick, and the directories it may land in.
    misdirect: Option<(u64, Vec<String>)>,
    /// Where the last misdirected write was meant to go and where it landed (path, sector).
    misdirected: Option<((String, u64), (String, u64))>,
    stats: DiskStats,
}

#[derive(Clone, Debug, Default)]
struct SimFile {
    len: u64,
    /// Sectors ever written, by index, with the number of the write that put them there
    /// (a later write wins, whichever is synced first); the others read as zeros.
    sectors: BTreeMap<u64, (u64, Box<[u8]>)>,
}

impl SimFile {
    /// Lands sector `index` of write number `write`, unless a later write already landed.
    fn land(&mut self, index: u64, write: u64, data: Box<[u8]>) {
        if self.sectors.get(&index).is_none_or(|(by, _)| *by < write) {
            self.sectors.insert(index, (write, data));
        }
    }
}

/// One write the disk accepted but has not made durable.
#[derive(Debug)]
struct Unsynced {
    /// The file a `sync` of which makes it durable.
    issued_for: String,
    /// Where it really lands (elsewhere if misdirected).
    path: String,
    /// Its number, in issue order.
    number: u64,
    first_sector: u64,
    sectors: Vec<Box<[u8]>>,
}

/// What the disk did, for a run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskStats {
    pub writes: u64,
    pub syncs: u64,
    pub torn_writes: u64,
    pub lost_writes: u64,
    pub misdirected_writes: u64,
    pub rotten_sectors: u64,
    pub failed_reads: u64,
}

impl DiskStats {
    pub fn add(&mut self, other: DiskStats) {
        self.writes += other.writes;
        self.syncs += other.syncs;
        self.torn_writes += other.torn_writes;
        self.lost_writes += other.lost_writes;
        self.misdirected_writes += other.misdirected_writes;
        self.rotten_sectors += other.rotten_sectors;
        self.failed_reads += other.failed_reads;
    }
}

impl SimDisk {
    pub fn new() -> SimDisk {
        SimDisk::default()
    }

    /// Power is lost: of the unsynced writes, in issue order, the first `landed` reach the
    /// disk whole, the next only its first `torn_sectors` sectors, and the rest are lost.
    pub fn crash(&self, landed: usize, torn_sectors: usize) {
        let mut disk = self.inner.borrow_mut();
        let unsynced = std::mem::take(&mut disk.unsynced);
        for (i, write) in unsynced.into_iter().enumerate() {
            let keep = match i.cmp(&landed) {
                std::cmp::Ordering::Less => write.sectors.len(),
                std::cmp::Ordering::Equal => torn_sectors.min(write.sectors.len()),
                std::cmp::Ordering::Greater => 0,
            };
            if keep < write.sectors.len() {
                if keep > 0 {
                    disk.stats.torn_writes += 1;
                } else {
                    disk.stats.lost_writes += 1;
                }
            }
            let Some(file) = disk.files.get_mut(&write.path) else { continue };
            for (n, sector) in write.sectors.into_iter().take(keep).enumerate() {
                file.land(write.first_sector + n as u64, write.number, sector);
            }
        }
        disk.misdirect = None;
        disk.fail_reads = 0;
        disk.full = false;
    }

    /// The machine is replaced: nothing of the disk remains.
    pub fn wipe(&self) {
        let mut disk = self.inner.borrow_mut();
        let stats = disk.stats;
        *disk = Disk { stats, ..Disk::default() };
    }

    /// The next write lands somewhere else, picked by `pick` among the places it fits in the
    /// files under `dirs` (possibly where it belongs), and reports success.
    pub fn misdirect_next_write(&self, pick: u64, dirs: &[&str]) {
        self.inner.borrow_mut().misdirect = Some((pick, dirs.iter().map(|d| format!("{d}/")).collect()));
    }

    /// Flips one bit of a written sector of a file under `dirs`, picked by `pick`; the sector,
    /// if there was one.
    pub fn rot(&self, dirs: &[&str], pick: u64) -> Option<(String, u64)> {
        let mut disk = self.inner.borrow_mut();
        let under =
            |path: &str| dirs.iter().any(|d| path.strip_prefix(d).is_some_and(|r| r.starts_with('/')));
        let written: Vec<(String, u64)> = disk
            .files
            .iter()
            .filter(|(path, _)| under(path))
            .flat_map(|(path, file)| file.sectors.keys().map(move |s| (path.clone(), *s)))
            .collect();
        if written.is_empty() {
            return None;
        }
        let (path, sector) = written[(pick % written.len() as u64) as usize].clone();
        let bit = (pick / written.len() as u64) % (SECTOR as u64 * 8);
        let (_, data) = disk.files.get_mut(&path).and_then(|f| f.sectors.get_mut(&sector)).expect("listed");
        data[(bit / 8) as usize] ^= 1 << (bit % 8);
        // A sector still waiting for its sync rots too once it lands: rot the pending copy.
        for write in disk.unsynced.iter_mut().filter(|w| w.path == path) {
            if let Some(pending) =
                sector.checked_sub(write.first_sector).and_then(|i| write.sectors.get_mut(i as usize))
            {
                pending[(bit / 8) as usize] ^= 1 << (bit % 8);
            }
        }
        disk.stats.rotten_sectors += 1;
        Some((path, sector))
    }

    /// The next read fails with EIO (a transient read error: the bytes at rest are fine).
    pub fn fail_next_read(&self) {
        self.inner.borrow_mut().fail_reads += 1;
    }

    /// Where the last misdirected write was meant to go and where it landed, as (path,
    /// sector) pairs, once.
    pub fn take_misdirected(&self) -> Option<((String, u64), (String, u64))> {
        self.inner.borrow_mut().misdirected.take()
    }

    /// Read failures and a misdirection not yet used are called off.
    pub fn clear_read_faults(&self) {
        let mut disk = self.inner.borrow_mut();
        disk.fail_reads = 0;
        disk.misdirect = None;
    }

    /// The disk fills up (`true`: creating a file or replacing one fails with ENOSPC) or space
    /// returns.
    pub fn set_full(&self, full: bool) {
        self.inner.borrow_mut().full = full;
    }

    pub fn stats(&self) -> DiskStats {
        self.inner.borrow().stats
    }

    /// Paths of every file, ascending.
    pub fn files(&self) -> Vec<String> {
        self.inner.borrow().files.keys().cloned().collect()
    }

    /// The bytes a read of `path` returns now (unsynced writes included), without faults.
    pub fn contents(&self, path: &str) -> Option<Vec<u8>> {
        let disk = self.inner.borrow();
        let file = disk.files.get(path)?;
        Some(disk.view(path, 0, file.len as usize))
    }

    fn check_read(&self) -> io::Result<()> {
        let mut disk = self.inner.borrow_mut();
        if disk.fail_reads > 0 {
            disk.fail_reads -= 1;
            disk.stats.failed_reads += 1;
            return Err(io::Error::from_raw_os_error(libc::EIO));
        }
        Ok(())
    }
}

impl Disk {
    /// `len` bytes at `offset` as a read sees them: synced sectors, then unsynced writes over
    /// them in issue order.
    fn view(&self, path: &str, offset: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        let Some(file) = self.files.get(path) else { return out };
        let end = offset + len as u64;
        let mut copy = |sector: u64, data: &[u8]| {
            let start = sector * SECTOR as u64;
            let (from, to) = (start.max(offset), (start + SECTOR as u64).min(end));
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
            }
        };
        let first = offset / SECTOR as u64;
        let last = end.div_ceil(SECTOR as u64);
        for (sector, (_, data)) in file.sectors.range(first..last) {
            copy(*sector, data);
        }
        // Unsynced writes over them, in issue order, where no later write already landed.
        for write in self.unsynced.iter().filter(|w| w.path == path) {
            for (n, data) in write.sectors.iter().enumerate() {
                let index = write.first_sector + n as u64;
                if (first..last).contains(&index)
                    && file.sectors.get(&index).is_none_or(|(by, _)| *by < write.number)
                {
                    copy(index, data);
                }
            }
        }
        out
    }

    fn no_space(&self) -> io::Result<()> {
        if self.full {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
}

fn not_found(path: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{path}: no such file"))
}

impl Storage for SimDisk {
    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let prefix = format!("{dir}/");
        let disk = self.inner.borrow();
        let names = disk.files.keys().filter_map(|p| p.strip_prefix(&prefix)).filter(|n| !n.contains('/'));
        Ok(names.map(str::to_string).collect())
    }

    async fn create(&self, path: &str, len: u64) -> io::Result<()> {
        let mut disk = self.inner.borrow_mut();
        disk.no_space()?;
        if disk.files.contains_key(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, path.to_string()));
        }
        disk.files.insert(path.to_string(), SimFile { len, sectors: BTreeMap::new() });
        Ok(())
    }

    async fn read_at(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.check_read()?;
        let disk = self.inner.borrow();
        let file = disk.files.get(path).ok_or_else(|| not_found(path))?;
        if offset + len as u64 > file.len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{path}: read past the end")));
        }
        Ok(disk.view(path, offset, len))
    }

    async fn read_all(&self, path: &str) -> io::Result<Vec<u8>> {
        let len = self.inner.borrow().files.get(path).ok_or_else(|| not_found(path))?.len;
        self.read_at(path, 0, len as usize).await
    }

    async fn write_at(&self, path: &str, offset: u64, buf: AlignedBuf) -> io::Result<()> {
        assert!(offset % SECTOR as u64 == 0 && buf.len() % SECTOR == 0, "sector-aligned writes only");
        let mut disk = self.inner.borrow_mut();
        let len = disk.files.get(path).ok_or_else(|| not_found(path))?.len;
        assert!(offset + buf.len() as u64 <= len, "writes stay inside the preallocated file");
        let sectors: Vec<Box<[u8]>> = buf.as_slice().chunks(SECTOR).map(Box::from).collect();
        let mut target = (path.to_string(), offset / SECTOR as u64);
        if let Some((pick, dirs)) = disk.misdirect.take() {
            // Every place the write fits, in every file: one of them, maybe where it belongs.
            let places: Vec<(String, u64)> = disk
                .files
                .iter()
                .filter(|(p, f)| f.len >= buf.len() as u64 && dirs.iter().any(|d| p.starts_with(d.as_str())))
                .map(|(p, f)| (p.clone(), (f.len - buf.len() as u64) / SECTOR as u64 + 1))
                .collect();
            let total: u64 = places.iter().map(|(_, n)| n).sum();
            let mut at = pick % total.max(1);
            for (p, n) in places {
                if at < n {
                    target = (p, at);
                    break;
                }
                at -= n;
            }
            disk.stats.misdirected_writes += 1;
            disk.misdirected = Some(((path.to_string(), offset / SECTOR as u64), target.clone()));
        }
        disk.stats.writes += 1;
        disk.issued += 1;
        let (path_to, first_sector) = target;
        let number = disk.issued;
        disk.unsynced.push(Unsynced {
            issued_for: path.to_string(),
            path: path_to,
            number,
            first_sector,
            sectors,
        });
        Ok(())
    }

    async fn sync(&self, path: &str) -> io::Result<()> {
        let mut disk = self.inner.borrow_mut();
        disk.stats.syncs += 1;
        let (now, later): (Vec<Unsynced>, Vec<Unsynced>) =
            std::mem::take(&mut disk.unsynced).into_iter().partition(|w| w.issued_for == path);
        disk.unsynced = later;
        for write in now {
            let Some(file) = disk.files.get_mut(&write.path) else { continue };
            for (n, sector) in write.sectors.into_iter().enumerate() {
                file.land(write.first_sector + n as u64, write.number, sector);
            }
        }
        Ok(())
    }

    async fn remove(&self, path: &str) -> io::Result<()> {
        let mut disk = self.inner.borrow_mut();
        disk.files.remove(path);
        disk.unsynced.retain(|w| w.path != path);
        Ok(())
    }

    async fn put(&self, path: &str, bytes: Vec<u8>) -> io::Result<()> {
        let mut disk = self.inner.borrow_mut();
        disk.no_space()?;
        disk.issued += 1;
        let number = disk.issued;
        let mut file = SimFile { len: bytes.len() as u64, sectors: BTreeMap::new() };
        for (n, chunk) in bytes.chunks(SECTOR).enumerate() {
            let mut sector = vec![0u8; SECTOR];
            sector[..chunk.len()].copy_from_slice(chunk);
            file.land(n as u64, number, sector.into());
        }
        disk.unsynced.retain(|w| w.path != path);
        disk.files.insert(path.to_string(), file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sectors(fill: &[u8]) -> AlignedBuf {
        let mut buf = AlignedBuf::zeroed(fill.len() * SECTOR);
        for (chunk, byte) in buf.as_mut_slice().chunks_mut(SECTOR).zip(fill) {
            chunk.fill(*byte);
        }
        buf
    }

    #[test]
    fn unsynced_writes_are_read_back_and_a_crash_keeps_a_torn_prefix() {
        let disk = SimDisk::new();
        complete(disk.create("j/a", 8 * SECTOR as u64)).unwrap();
        complete(disk.write_at("j/a", 0, sectors(&[1, 2]))).unwrap();
        complete(disk.sync("j/a")).unwrap();
        complete(disk.write_at("j/a", 2 * SECTOR as u64, sectors(&[3, 4, 5]))).unwrap();
        let all = complete(disk.read_all("j/a")).unwrap();
        assert_eq!(
            [all[0], all[SECTOR], all[2 * SECTOR], all[4 * SECTOR]],
            [1, 2, 3, 5],
            "reads see unsynced writes"
        );
        disk.crash(0, 2);
        let all = complete(disk.read_all("j/a")).unwrap();
        assert_eq!(
            [all[2 * SECTOR], all[3 * SECTOR], all[4 * SECTOR]],
            [3, 4, 0],
            "two of three sectors landed"
        );
        assert_eq!(disk.stats().torn_writes, 1);
        assert_eq!(disk.list("j").unwrap(), vec!["a".to_string()]);
    }

    #[test]
    fn a_misdirected_write_lands_elsewhere_and_syncs_with_its_file() {
        let disk = SimDisk::new();
        complete(disk.create("j/a", 4 * SECTOR as u64)).unwrap();
        complete(disk.create("j/b", 4 * SECTOR as u64)).unwrap();
        // Places: a at 0..=3 (4), b at 0..=3 (4): pick 6 is b's sector 2.
        disk.misdirect_next_write(6, &["j"]);
        complete(disk.write_at("j/a", 0, sectors(&[7]))).unwrap();
        complete(disk.sync("j/a")).unwrap();
        disk.crash(0, 0);
        assert!(complete(disk.read_all("j/a")).unwrap().iter().all(|b| *b == 0));
        assert_eq!(complete(disk.read_all("j/b")).unwrap()[2 * SECTOR], 7);
    }

    #[test]
    fn the_later_write_wins_whichever_is_synced_first() {
        let disk = SimDisk::new();
        complete(disk.create("j/a", 4 * SECTOR as u64)).unwrap();
        complete(disk.create("p/b", 4 * SECTOR as u64)).unwrap();
        disk.misdirect_next_write(4, &["p"]);
        complete(disk.write_at("j/a", 0, sectors(&[1]))).unwrap();
        complete(disk.write_at("p/b", 0, sectors(&[2]))).unwrap();
        complete(disk.sync("p/b")).unwrap();
        complete(disk.sync("j/a")).unwrap();
        assert_eq!(disk.contents("p/b").unwrap()[0], 2, "the older misdirected write does not land over it");
    }

    #[test]
    fn rot_flips_a_bit_and_reads_fail_and_space_runs_out_on_demand() {
        let disk = SimDisk::new();
        complete(disk.create("p/x", 2 * SECTOR as u64)).unwrap();
        complete(disk.write_at("p/x", 0, sectors(&[0]))).unwrap();
        complete(disk.sync("p/x")).unwrap();
        assert_eq!(disk.rot(&["j"], 0), None, "nothing written under j");
        assert_eq!(disk.rot(&["p"], 8 * 3 + 1), Some(("p/x".to_string(), 0)));
        assert_eq!(complete(disk.read_at("p/x", 3, 1)).unwrap(), vec![2]);
        disk.fail_next_read();
        assert_eq!(complete(disk.read_at("p/x", 0, 1)).unwrap_err().raw_os_error(), Some(libc::EIO));
        disk.set_full(true);
        assert!(crate::storage::is_no_space(&complete(disk.create("p/y", 1)).unwrap_err()));
        assert!(crate::storage::is_no_space(&complete(disk.put("m", vec![1])).unwrap_err()));
    }
}
