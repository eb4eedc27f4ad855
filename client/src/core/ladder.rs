//! The durable ladder above the PGs: which allocated records are durable, and from that VCL
//! (every record at or below it durable) and VDL (the highest CPL at or below VCL).
//!
//! Every allocated record above VDL is tracked here; records leave once VDL passes them, so the
//! ladder holds at most the LAL window.

use std::collections::BTreeMap;

use protocol::{Lsn, PgId};

#[derive(Clone, Copy, Debug)]
struct Tracked {
    pg: PgId,
    cpl: bool,
    durable: bool,
}

/// See the module docs.
#[derive(Clone, Debug, Default)]
pub struct Ladder {
    above_vdl: BTreeMap<Lsn, Tracked>,
    vcl: Lsn,
    vdl: Lsn,
}

impl Ladder {
    /// Starts at a recovered VDL (zero for a new volume).
    pub fn starting_at(vdl: Lsn) -> Ladder {
        Ladder { above_vdl: BTreeMap::new(), vcl: vdl, vdl }
    }

    pub fn vdl(&self) -> Lsn {
        self.vdl
    }
    pub fn vcl(&self) -> Lsn {
        self.vcl
    }
    /// Records allocated and not yet covered by VDL.
    pub fn tracked(&self) -> usize {
        self.above_vdl.len()
    }

    /// A newly allocated record.
    pub fn allocate(&mut self, lsn: Lsn, pg: PgId, cpl: bool) {
        assert!(lsn > self.vdl, "allocations are above VDL");
        self.above_vdl.insert(lsn, Tracked { pg, cpl, durable: false });
    }

    /// Marks records durable and moves VCL and VDL. Returns, for each PG, the newest of its
    /// records that VDL now covers.
    pub fn mark_durable(&mut self, lsns: impl Iterator<Item = Lsn>) -> Vec<(PgId, Lsn)> {
        for lsn in lsns {
            if let Some(t) = self.above_vdl.get_mut(&lsn) {
                t.durable = true;
            }
        }
        let mut new_vdl = self.vdl;
        for (lsn, t) in &self.above_vdl {
            if !t.durable {
                break;
            }
            self.vcl = *lsn;
            if t.cpl {
                new_vdl = *lsn;
            }
        }
        let mut covered: Vec<(PgId, Lsn)> = Vec::new();
        while let Some(entry) = self.above_vdl.first_entry() {
            if *entry.key() > new_vdl {
                break;
            }
            let (lsn, t) = entry.remove_entry();
            match covered.iter_mut().find(|(pg, _)| *pg == t.pg) {
                Some((_, newest)) => *newest = lsn,
                None => covered.push((t.pg, lsn)),
            }
        }
        self.vdl = new_vdl;
        covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdl_is_the_highest_cpl_below_the_first_record_not_yet_durable() {
        let mut ladder = Ladder::starting_at(Lsn(0));
        for (lsn, pg, cpl) in [(1, 0, false), (2, 1, true), (3, 0, false), (4, 1, true)] {
            ladder.allocate(Lsn(lsn), PgId(pg), cpl);
        }
        assert!(ladder.mark_durable([Lsn(2), Lsn(3), Lsn(4)].into_iter()).is_empty(), "1 is not durable");
        assert_eq!(ladder.vdl(), Lsn(0));
        let covered = ladder.mark_durable(std::iter::once(Lsn(1)));
        assert_eq!((ladder.vcl(), ladder.vdl()), (Lsn(4), Lsn(4)));
        assert_eq!(covered, vec![(PgId(0), Lsn(3)), (PgId(1), Lsn(4))]);
        assert_eq!(ladder.tracked(), 0);
    }

    #[test]
    fn durable_records_after_the_last_cpl_wait_for_one() {
        let mut ladder = Ladder::starting_at(Lsn(10));
        ladder.allocate(Lsn(11), PgId(0), true);
        ladder.allocate(Lsn(12), PgId(0), false);
        ladder.mark_durable([Lsn(11), Lsn(12)].into_iter());
        assert_eq!((ladder.vcl(), ladder.vdl(), ladder.tracked()), (Lsn(12), Lsn(11), 1));
    }
}
