//! A FUSE passthrough file system for tests: it mirrors a backing directory at a mount point,
//! and on demand fails every read of a journal or page store file (`journal/*.log`,
//! `pages/*.log`) with EIO, as a disk with unreadable sectors would. Everything else (the
//! node's metadata, checkpoints, its LOCK file) and every write, fsync, fallocate or directory
//! operation keeps working.
//!
//! Every file is opened with `FOPEN_DIRECT_IO`, so no read is answered from the kernel's page
//! cache: each one reaches this file system, and a fault switched on shows at once. `O_DIRECT`
//! is accepted and dropped on the backing file (the bytes reach the backing file system on
//! fsync as usual). `flock` is left to the kernel (no lock operations are implemented, so locks
//! work locally, which is all one machine needs).
//!
//! It runs in the test process, on fuser's background thread; mounting needs root (mount(2)) or
//! Debian's `fuse3` (`fusermount3`). [`FaultyMount`] unmounts when dropped, lazily, so a test
//! that fails with nodes still holding files open does not leave the mount behind.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{File, Metadata, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

/// Attributes and entries are never cached by the kernel: sizes change under it.
const TTL: Duration = Duration::ZERO;

/// The mounted file system; unmounted when dropped.
#[derive(Debug)]
pub struct FaultyMount {
    mountpoint: PathBuf,
    switch: Arc<Switch>,
    session: Option<BackgroundSession>,
}

/// What the test controls and observes.
#[derive(Debug, Default)]
struct Switch {
    fail_reads: AtomicBool,
    reads_failed: AtomicU64,
    reads_passed: AtomicU64,
}

impl FaultyMount {
    /// Mounts a passthrough of `backing` (created if missing) at `mountpoint` (likewise).
    pub fn mount(backing: &Path, mountpoint: &Path) -> std::io::Result<FaultyMount> {
        std::fs::create_dir_all(backing)?;
        std::fs::create_dir_all(mountpoint)?;
        let switch = Arc::new(Switch::default());
        let fs = Passthrough {
            backing: backing.canonicalize()?,
            switch: Arc::clone(&switch),
            inodes: Mutex::new(Inodes::new()),
            handles: Mutex::new(Handles::default()),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("borealis-faulty".into()),
            MountOption::Subtype("faulty".into()),
            MountOption::RW,
        ];
        // Two threads: a slow backing fsync does not hold up a read.
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(FaultyMount { mountpoint: mountpoint.to_owned(), switch, session: Some(session) })
    }

    /// From now on, reads of journal and page store files fail with EIO (or work again).
    pub fn fail_reads(&self, on: bool) {
        self.switch.fail_reads.store(on, Ordering::SeqCst);
    }

    /// Reads answered with EIO so far.
    pub fn reads_failed(&self) -> u64 {
        self.switch.reads_failed.load(Ordering::SeqCst)
    }

    /// Reads of journal and page store files answered with their bytes so far.
    pub fn reads_passed(&self) -> u64 {
        self.switch.reads_passed.load(Ordering::SeqCst)
    }
}

impl Drop for FaultyMount {
    fn drop(&mut self) {
        // Lazily (`-z`, MNT_DETACH): it succeeds even while a file under it is still open.
        let unmounted = std::process::Command::new("fusermount3")
            .args(["-u", "-z"])
            .arg(&self.mountpoint)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            let path =
                std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes()).expect("no NUL in a path");
            // SAFETY: umount2 reads a NUL-terminated path that lives across the call.
            if unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) } != 0 {
                eprintln!(
                    "could not unmount {}: {}",
                    self.mountpoint.display(),
                    std::io::Error::last_os_error()
                );
            }
        }
        // Already unmounted: the session's own unmount finds nothing to do.
        drop(self.session.take());
    }
}

/// Inode numbers for paths relative to the backing directory (the root is "" and inode 1).
#[derive(Debug)]
struct Inodes {
    paths: HashMap<u64, PathBuf>,
    numbers: HashMap<PathBuf, u64>,
    next: u64,
}

impl Inodes {
    fn new() -> Inodes {
        let mut inodes = Inodes { paths: HashMap::new(), numbers: HashMap::new(), next: 2 };
        inodes.paths.insert(INodeNo::ROOT.0, PathBuf::new());
        inodes.numbers.insert(PathBuf::new(), INodeNo::ROOT.0);
        inodes
    }

    fn path(&self, ino: INodeNo) -> Option<PathBuf> {
        self.paths.get(&ino.0).cloned()
    }

    fn number(&mut self, path: &Path) -> INodeNo {
        if let Some(ino) = self.numbers.get(path) {
            return INodeNo(*ino);
        }
        let ino = self.next;
        self.next += 1;
        self.paths.insert(ino, path.to_owned());
        self.numbers.insert(path.to_owned(), ino);
        INodeNo(ino)
    }

    /// The name no longer leads to that inode: a file created there later gets a new number
    /// (the old one may still be open).
    fn forget_path(&mut self, path: &Path) {
        self.numbers.remove(path);
    }

    fn rename(&mut self, from: &Path, to: &Path) {
        self.numbers.remove(to);
        let moved: Vec<(PathBuf, u64)> = self
            .numbers
            .iter()
            .filter(|(p, _)| p.starts_with(from))
            .map(|(p, ino)| (p.clone(), *ino))
            .collect();
        for (old, ino) in moved {
            let new = to.join(old.strip_prefix(from).expect("under from"));
            self.numbers.remove(&old);
            self.numbers.insert(new.clone(), ino);
            self.paths.insert(ino, new);
        }
    }
}

/// Open files and directories by handle.
#[derive(Debug, Default)]
struct Handles {
    open: HashMap<u64, Arc<Handle>>,
    next: u64,
}

#[derive(Debug)]
struct Handle {
    file: File,
    /// A journal or page store file: its reads fail while the switch is on.
    faultable: bool,
}

impl Handles {
    fn insert(&mut self, handle: Handle) -> FileHandle {
        self.next += 1;
        self.open.insert(self.next, Arc::new(handle));
        FileHandle(self.next)
    }
}

#[derive(Debug)]
struct Passthrough {
    backing: PathBuf,
    switch: Arc<Switch>,
    inodes: Mutex<Inodes>,
    handles: Mutex<Handles>,
}

/// `journal/*.log` and `pages/*.log` under a node's data directory.
fn is_faultable(relative: &Path) -> bool {
    let parent = relative.parent().and_then(Path::file_name);
    relative.extension() == Some(OsStr::new("log"))
        && (parent == Some(OsStr::new("journal")) || parent == Some(OsStr::new("pages")))
}

fn errno(error: &std::io::Error) -> Errno {
    match error.raw_os_error() {
        Some(code) => Errno::from_i32(code),
        None => Errno::EIO,
    }
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(seconds.unsigned_abs(), nanos as u32);
    if seconds >= 0 {
        UNIX_EPOCH + since
    } else {
        UNIX_EPOCH - since
    }
}

fn attr(ino: INodeNo, meta: &Metadata) -> FileAttr {
    let kind = FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile);
    FileAttr {
        ino,
        size: meta.size(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: time(meta.ctime(), meta.ctime_nsec()),
        kind,
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// Open flags for the backing file: the caller's, less what the kernel handled already or
/// what this file system does its own way (O_DIRECT: the mount bypasses the page cache anyway).
fn backing_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => options.write(true),
        libc::O_RDWR => options.read(true).write(true),
        _ => options.read(true),
    };
    options.custom_flags(
        flags
            & !(libc::O_ACCMODE
                | libc::O_DIRECT
                | libc::O_CREAT
                | libc::O_EXCL
                | libc::O_TRUNC
                | libc::O_NOCTTY),
    );
    options
}

impl Passthrough {
    fn relative(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        self.inodes.lock().unwrap().path(ino).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.relative(parent)?.join(name))
    }

    fn full(&self, relative: &Path) -> PathBuf {
        self.backing.join(relative)
    }

    fn handle(&self, fh: FileHandle) -> Result<Arc<Handle>, Errno> {
        self.handles.lock().unwrap().open.get(&fh.0).cloned().ok_or(Errno::EBADF)
    }

    /// The attributes of `relative`, numbering it if new.
    fn entry(&self, relative: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(self.full(relative)).map_err(|e| errno(&e))?;
        let ino = self.inodes.lock().unwrap().number(relative);
        Ok(attr(ino, &meta))
    }

    fn getattr_of(&self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        if let Some(handle) = fh.and_then(|fh| self.handle(fh).ok()) {
            return Ok(attr(ino, &handle.file.metadata().map_err(|e| errno(&e))?));
        }
        let meta = std::fs::symlink_metadata(self.full(&self.relative(ino)?)).map_err(|e| errno(&e))?;
        Ok(attr(ino, &meta))
    }

    fn setattr_of(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        size: Option<u64>,
        fh: Option<FileHandle>,
    ) -> Result<FileAttr, Errno> {
        let path = self.full(&self.relative(ino)?);
        if let Some(size) = size {
            match fh.and_then(|fh| self.handle(fh).ok()) {
                Some(handle) => handle.file.set_len(size),
                None => OpenOptions::new().write(true).open(&path).and_then(|f| f.set_len(size)),
            }
            .map_err(|e| errno(&e))?;
        }
        if let Some(mode) = mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| errno(&e))?;
        }
        self.getattr_of(ino, fh)
    }

    fn read_at(&self, fh: FileHandle, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        let handle = self.handle(fh)?;
        if handle.faultable && self.switch.fail_reads.load(Ordering::SeqCst) {
            self.switch.reads_failed.fetch_add(1, Ordering::SeqCst);
            return Err(Errno::EIO);
        }
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match handle.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(errno(&e)),
            }
        }
        buf.truncate(done);
        if handle.faultable {
            self.switch.reads_passed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(buf)
    }

    fn readdir_of(&self, ino: INodeNo, offset: u64, reply: &mut ReplyDirectory) -> Result<(), Errno> {
        let relative = self.relative(ino)?;
        let mut entries = vec![(ino, FileType::Directory, OsStr::new(".").to_owned())];
        let parent = relative.parent().map_or(INodeNo::ROOT, |p| self.inodes.lock().unwrap().number(p));
        entries.push((parent, FileType::Directory, OsStr::new("..").to_owned()));
        let mut names: Vec<_> = std::fs::read_dir(self.full(&relative))
            .map_err(|e| errno(&e))?
            .filter_map(Result::ok)
            .map(|e| (e.file_name(), e.file_type().ok().and_then(FileType::from_std)))
            .collect();
        names.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, kind) in names {
            let ino = self.inodes.lock().unwrap().number(&relative.join(&name));
            entries.push((ino, kind.unwrap_or(FileType::RegularFile), name));
        }
        for (index, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, index as u64 + 1, kind, name) {
                break;
            }
        }
        Ok(())
    }
}

impl Filesystem for Passthrough {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|p| self.entry(&p)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.getattr_of(ino, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        match self.setattr_of(ino, mode, size, fh) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let made = self.child(parent, name).and_then(|relative| {
            let path = self.full(&relative);
            std::fs::create_dir(&path).map_err(|e| errno(&e))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(|e| errno(&e))?;
            self.entry(&relative)
        });
        match made {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.child(parent, name).and_then(|relative| {
            std::fs::remove_file(self.full(&relative)).map_err(|e| errno(&e))?;
            self.inodes.lock().unwrap().forget_path(&relative);
            Ok(())
        });
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let removed = self.child(parent, name).and_then(|relative| {
            std::fs::remove_dir(self.full(&relative)).map_err(|e| errno(&e))?;
            self.inodes.lock().unwrap().forget_path(&relative);
            Ok(())
        });
        match removed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.bits() != 0 {
            return reply.error(Errno::EINVAL);
        }
        let renamed = self.child(parent, name).and_then(|from| {
            let to = self.child(newparent, newname)?;
            std::fs::rename(self.full(&from), self.full(&to)).map_err(|e| errno(&e))?;
            self.inodes.lock().unwrap().rename(&from, &to);
            Ok(())
        });
        match renamed {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.relative(ino).and_then(|relative| {
            let file = backing_options(flags.0).open(self.full(&relative)).map_err(|e| errno(&e))?;
            let handle = Handle { file, faultable: is_faultable(&relative) };
            Ok(self.handles.lock().unwrap().insert(handle))
        });
        match opened {
            Ok(fh) => reply.opened(fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let created = self.child(parent, name).and_then(|relative| {
            let mut options = backing_options(flags);
            options.mode(mode & !umask & 0o7777);
            if flags & libc::O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            if flags & libc::O_TRUNC != 0 {
                options.truncate(true);
            }
            if flags & libc::O_ACCMODE == libc::O_RDONLY {
                // create/truncate need write access on the backing file.
                options.write(true);
            }
            let file = options.open(self.full(&relative)).map_err(|e| errno(&e))?;
            let attr = self.entry(&relative)?;
            let handle = Handle { file, faultable: is_faultable(&relative) };
            Ok((attr, self.handles.lock().unwrap().insert(handle)))
        });
        match created {
            Ok((attr, fh)) => reply.created(&TTL, &attr, Generation(0), fh, FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.read_at(fh, offset, size) {
            Ok(bytes) => reply.data(&bytes),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.handle(fh).and_then(|h| h.file.write_all_at(data, offset).map_err(|e| errno(&e))) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().open.remove(&fh.0);
        reply.ok();
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        let synced = self.handle(fh).and_then(|h| {
            if datasync { h.file.sync_data() } else { h.file.sync_all() }.map_err(|e| errno(&e))
        });
        match synced {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let opened = self.relative(ino).and_then(|relative| {
            let file = File::open(self.full(&relative)).map_err(|e| errno(&e))?;
            Ok(self.handles.lock().unwrap().insert(Handle { file, faultable: false }))
        });
        match opened {
            Ok(fh) => reply.opened(fh, FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.readdir_of(ino, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().open.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        match self.handle(fh).and_then(|h| h.file.sync_all().map_err(|e| errno(&e))) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let path = std::ffi::CString::new(self.backing.as_os_str().as_bytes()).expect("no NUL in a path");
        // SAFETY: an all-zero statvfs is a valid value for the call to fill in.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: statvfs reads a NUL-terminated path and writes into a statvfs we own.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return reply.error(errno(&std::io::Error::last_os_error()));
        }
        reply.statfs(
            stat.f_blocks,
            stat.f_bfree,
            stat.f_bavail,
            stat.f_files,
            stat.f_ffree,
            stat.f_bsize as u32,
            stat.f_namemax as u32,
            stat.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let allocated = self.handle(fh).and_then(|h| {
            // SAFETY: fallocate on a descriptor the handle owns, which outlives the call.
            let rc = unsafe {
                libc::fallocate(h.file.as_raw_fd(), mode, offset as libc::off_t, length as libc::off_t)
            };
            if rc == 0 {
                Ok(())
            } else {
                Err(errno(&std::io::Error::last_os_error()))
            }
        });
        match allocated {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }
}
