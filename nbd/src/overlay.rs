//! The gateway's overlay: its own writes that are appended (they have LSNs) but not yet durable
//! (VDL is below them), kept so that a WRITE can be answered as soon as it is appended and still
//! be seen by every later READ, which reads at VDL.
//!
//! NBD lets a server answer a WRITE before the data is on stable storage: only FLUSH (and a
//! write's FUA flag) promise durability. The driver therefore answers WRITE, WRITE_ZEROES and
//! TRIM once the writer has accepted their records, inserts their ops here under their LSNs, and
//! answers FLUSH once VDL covers the highest LSN it has answered. A READ at VDL `v` asks
//! [`Overlay::view`] for each page: the ops above `v` in LSN order, and whether the stored page
//! at `v` is needed at all (not when one of those ops replaces the whole page). Once VDL passes
//! an op, storage holds it and [`Overlay::prune`] drops it.
//!
//! ```text
//!   LSN  ... 40 ........ 52 ....... 57 ....... 61
//!                       VDL
//!   page 9:   Image@40   |   Patch@57  Patch@61      view(9, 52) = needs base, [Patch@57, Patch@61]
//!   page 3:              |   Zero@55   Patch@60      view(3, 52) = no base,    [Zero@55, Patch@60]
//! ```
//!
//! Pure data: no clock, no I/O. Memory is what [`Overlay::bytes`] says (payload plus
//! [`ENTRY_OVERHEAD_BYTES`] per op); the driver stops answering writes early while it is above
//! its bound, and waits for VDL instead.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::mapping::PageOp;

/// What one op costs beyond its payload, counted in [`Overlay::bytes`].
pub const ENTRY_OVERHEAD_BYTES: usize = 64;

/// The ops appended but not yet durable, by page.
#[derive(Debug, Default)]
pub struct Overlay {
    /// Each page's ops in ascending LSN order.
    pages: HashMap<u64, VecDeque<(u64, PageOp)>>,
    /// LSN → page: what to drop when VDL moves.
    by_lsn: BTreeMap<u64, u64>,
    bytes: usize,
    /// Everything at or below this LSN is durable and dropped (or never kept).
    durable_through: u64,
}

/// One page as the overlay sees it at some VDL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageView {
    /// The ops above VDL, in LSN order.
    ops: Vec<PageOp>,
    /// The page stored at VDL is the starting point (no op replaces the whole page).
    needs_base: bool,
}

impl Overlay {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keeps `op`, appended at `lsn`. An op at or below what [`prune`](Self::prune) last saw is
    /// durable already and is not kept. Each LSN names one record: inserting one twice is a bug.
    pub fn insert(&mut self, lsn: u64, op: PageOp) {
        if lsn <= self.durable_through {
            return;
        }
        let page = op.page();
        let previous = self.by_lsn.insert(lsn, page);
        assert!(previous.is_none(), "LSN {lsn} inserted twice in the overlay");
        self.bytes += cost(&op);
        let ops = self.pages.entry(page).or_default();
        // Appends that raced may arrive out of LSN order; most arrive in order.
        let at = ops.iter().rposition(|(l, _)| *l < lsn).map_or(0, |i| i + 1);
        ops.insert(at, (lsn, op));
    }

    /// Drops every op at or below `vdl` (storage has them now).
    pub fn prune(&mut self, vdl: u64) {
        if vdl <= self.durable_through {
            return;
        }
        self.durable_through = vdl;
        while let Some(entry) = self.by_lsn.first_entry() {
            if *entry.key() > vdl {
                break;
            }
            let (lsn, page) = entry.remove_entry();
            let ops = self.pages.get_mut(&page).expect("every indexed LSN has its page");
            let (first, op) = ops.pop_front().expect("every indexed LSN has its op");
            assert_eq!(first, lsn, "a page's ops are dropped in LSN order");
            self.bytes -= cost(&op);
            if ops.is_empty() {
                self.pages.remove(&page);
            }
        }
    }

    /// Page `page` at VDL `vdl`: the ops above `vdl`, from the last one that replaces the whole
    /// page (then the stored page is not needed). `vdl` is at least what `prune` last saw.
    pub fn view(&self, page: u64, vdl: u64) -> PageView {
        let Some(ops) = self.pages.get(&page) else {
            return PageView { ops: Vec::new(), needs_base: true };
        };
        let above: Vec<&PageOp> = ops.iter().filter(|(lsn, _)| *lsn > vdl).map(|(_, op)| op).collect();
        let whole = above.iter().rposition(|op| !matches!(op, PageOp::Patch { .. }));
        let from = whole.unwrap_or(0);
        PageView { ops: above[from..].iter().map(|op| (*op).clone()).collect(), needs_base: whole.is_none() }
    }

    /// Payload plus per-op overhead of every op kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The lowest LSN kept: once VDL reaches it, at least one op can go.
    pub fn oldest(&self) -> Option<u64> {
        self.by_lsn.first_key_value().map(|(lsn, _)| *lsn)
    }

    /// Ops kept.
    pub fn len(&self) -> usize {
        self.by_lsn.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_lsn.is_empty()
    }
}

impl PageView {
    /// Reading the page needs the stored page at VDL.
    pub fn needs_base(&self) -> bool {
        self.needs_base
    }

    /// No op of the overlay touches the page: the stored page is the answer as it is.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The page's bytes: `base` (the stored page at VDL; `None` or empty for a page never
    /// written, which reads as zeroes) with the ops applied in order. `base` is ignored when
    /// [`needs_base`](Self::needs_base) is false.
    pub fn apply(&self, base: Option<&[u8]>, page_bytes: u32) -> Vec<u8> {
        let page_bytes = page_bytes as usize;
        let mut page = vec![0u8; page_bytes];
        if let Some(base) = base.filter(|b| self.needs_base && !b.is_empty()) {
            assert_eq!(base.len(), page_bytes, "a stored page is one page long");
            page.copy_from_slice(base);
        }
        for op in &self.ops {
            match op {
                PageOp::Image { data, .. } => page.copy_from_slice(data),
                PageOp::Zero { .. } | PageOp::Trim { .. } => page.fill(0),
                PageOp::Patch { offset, data, .. } => {
                    let at = *offset as usize;
                    page[at..at + data.len()].copy_from_slice(data);
                }
            }
        }
        page
    }
}

fn cost(op: &PageOp) -> usize {
    let payload = match op {
        PageOp::Image { data, .. } | PageOp::Patch { data, .. } => data.len(),
        PageOp::Zero { .. } | PageOp::Trim { .. } => 0,
    };
    payload + ENTRY_OVERHEAD_BYTES
}

#[cfg(test)]
#[path = "overlay_tests.rs"]
mod tests;
