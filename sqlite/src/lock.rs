//! SQLite's five file-lock levels, kept in process memory for every connection of this process
//! that has one volume open (what the unix VFS does with `fcntl` locks and its inode table).
//!
//! Across processes there is no lock: the second process that opens a volume read-write takes
//! it over (`Writer::open` fences the first), and the first gets an I/O error on its next
//! commit. So the table only has to order the connections of one process.
//!
//! The rules (`sqlite3.c`, "file locking"): many SHARED; at most one RESERVED, alongside SHARED
//! ones; PENDING keeps new SHARED locks out while its holder waits for the others to leave;
//! EXCLUSIVE only when no other connection holds any lock.

/// A lock level, with SQLite's numbering (`SQLITE_LOCK_NONE` .. `SQLITE_LOCK_EXCLUSIVE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LockLevel {
    None = 0,
    Shared = 1,
    Reserved = 2,
    Pending = 3,
    Exclusive = 4,
}

impl LockLevel {
    /// SQLite's lock number as a level (`None` for a number SQLite never passes).
    pub fn from_sqlite(level: i32) -> Option<LockLevel> {
        Some(match level {
            0 => LockLevel::None,
            1 => LockLevel::Shared,
            2 => LockLevel::Reserved,
            3 => LockLevel::Pending,
            4 => LockLevel::Exclusive,
            _ => return None,
        })
    }
}

/// One connection's handle on the volume, as the table knows it.
pub type Holder = u64;

/// The lock was not granted now; the holder keeps `held` (PENDING when it asked for EXCLUSIVE
/// and others still hold SHARED).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Busy {
    pub held: LockLevel,
}

/// The locks of one volume in this process.
#[derive(Debug, Default)]
pub struct LockTable {
    /// Holders of SHARED or more.
    shared_count: usize,
    /// The holder of RESERVED or more (RESERVED, PENDING and EXCLUSIVE are held by one at most).
    writer: Option<(Holder, LockLevel)>,
}

impl LockTable {
    /// Raises `who` from `held` to `want`; returns the level now held.
    pub fn lock(&mut self, who: Holder, held: LockLevel, want: LockLevel) -> Result<LockLevel, Busy> {
        if want <= held {
            return Ok(held);
        }
        let other_writer = self.writer.filter(|(h, _)| *h != who).map(|(_, level)| level);
        match want {
            LockLevel::None => Ok(held),
            LockLevel::Shared => {
                if other_writer.is_some_and(|l| l >= LockLevel::Pending) {
                    return Err(Busy { held });
                }
                self.shared_count += 1;
                Ok(LockLevel::Shared)
            }
            LockLevel::Reserved => {
                assert!(held >= LockLevel::Shared, "RESERVED is asked for from SHARED");
                if other_writer.is_some() {
                    return Err(Busy { held });
                }
                self.writer = Some((who, LockLevel::Reserved));
                Ok(LockLevel::Reserved)
            }
            LockLevel::Pending | LockLevel::Exclusive => {
                assert!(held >= LockLevel::Shared, "EXCLUSIVE is asked for from SHARED or more");
                if other_writer.is_some() {
                    return Err(Busy { held });
                }
                if self.shared_count > 1 {
                    self.writer = Some((who, LockLevel::Pending));
                    return Err(Busy { held: LockLevel::Pending });
                }
                self.writer = Some((who, LockLevel::Exclusive));
                Ok(LockLevel::Exclusive)
            }
        }
    }

    /// True if no connection holds any lock.
    pub fn idle(&self) -> bool {
        self.shared_count == 0 && self.writer.is_none()
    }

    /// Lowers `who` from `held` to `to` (SHARED or NONE); returns `to`.
    pub fn unlock(&mut self, who: Holder, held: LockLevel, to: LockLevel) -> LockLevel {
        if to >= held {
            return held;
        }
        if held > LockLevel::Shared && self.writer.is_some_and(|(h, _)| h == who) {
            self.writer = None;
        }
        if to == LockLevel::None && held >= LockLevel::Shared {
            assert!(self.shared_count > 0, "a SHARED lock is counted until released");
            self.shared_count -= 1;
        }
        to
    }

    /// True if some connection holds RESERVED or more (`xCheckReservedLock`).
    pub fn reserved(&self) -> bool {
        self.writer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::LockLevel::*;
    use super::*;

    #[test]
    fn readers_share_and_one_writer_reserves() {
        let mut t = LockTable::default();
        assert_eq!(t.lock(1, None, Shared), Ok(Shared));
        assert_eq!(t.lock(2, None, Shared), Ok(Shared));
        assert_eq!(t.lock(1, Shared, Reserved), Ok(Reserved));
        assert!(t.reserved());
        assert_eq!(t.lock(2, Shared, Reserved), Err(Busy { held: Shared }));
    }

    #[test]
    fn exclusive_waits_in_pending_for_readers_to_leave() {
        let mut t = LockTable::default();
        t.lock(1, None, Shared).unwrap();
        t.lock(2, None, Shared).unwrap();
        t.lock(1, Shared, Reserved).unwrap();
        assert_eq!(t.lock(1, Reserved, Exclusive), Err(Busy { held: Pending }));
        assert_eq!(t.lock(3, None, Shared), Err(Busy { held: None }), "PENDING keeps new readers out");
        assert_eq!(t.unlock(2, Shared, None), None);
        assert_eq!(t.lock(1, Pending, Exclusive), Ok(Exclusive));
        assert_eq!(t.unlock(1, Exclusive, Shared), Shared);
        assert!(!t.reserved());
        assert_eq!(t.lock(3, None, Shared), Ok(Shared));
    }

    #[test]
    fn a_lone_connection_goes_straight_to_exclusive_and_back_to_none() {
        let mut t = LockTable::default();
        t.lock(1, None, Shared).unwrap();
        assert_eq!(t.lock(1, Shared, Exclusive), Ok(Exclusive));
        assert_eq!(t.unlock(1, Exclusive, None), None);
        assert!(!t.reserved());
        assert_eq!(t.lock(2, None, Shared), Ok(Shared));
        assert_eq!(t.lock(2, Shared, Exclusive), Ok(Exclusive));
    }
}
