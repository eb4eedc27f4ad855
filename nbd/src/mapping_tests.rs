//! The mapping against two models: a flat byte array (what the client means) and a page map
//! (what the ops do to a volume). Both must read back the same bytes.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn geometry(page_bytes: u32) -> PageGeometry {
    PageGeometry::new(page_bytes).unwrap()
}

/// A volume as storage sees it: pages that were never written, zeroed or trimmed are absent.
struct PageModel {
    page_bytes: usize,
    pages: BTreeMap<u64, Vec<u8>>,
}

impl PageModel {
    fn new(page_bytes: u32) -> Self {
        Self { page_bytes: page_bytes as usize, pages: BTreeMap::new() }
    }

    fn apply(&mut self, op: &PageOp) {
        match op {
            PageOp::Image { page, data } => {
                assert_eq!(data.len(), self.page_bytes, "an image is a whole page");
                self.pages.insert(*page, data.to_vec());
            }
            PageOp::Patch { page, offset, data } => {
                let range = *offset as usize..*offset as usize + data.len();
                assert!(!data.is_empty() && range.end <= self.page_bytes && data.len() < self.page_bytes);
                let page = self.pages.entry(*page).or_insert_with(|| vec![0; self.page_bytes]);
                page[range].copy_from_slice(data);
            }
            PageOp::Zero { page } | PageOp::Trim { page } => {
                self.pages.remove(page);
            }
        }
    }

    /// Assembles a read the way the driver does: span by span.
    fn read(&self, geometry: PageGeometry, offset: u64, length: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(length as usize);
        for span in read_spans(geometry, offset, length) {
            match self.pages.get(&span.page) {
                Some(page) => out.extend_from_slice(&page[span.in_page()]),
                None => out.resize(out.len() + span.length as usize, 0),
            }
        }
        out
    }
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, data: Vec<u8> },
    WriteZeroes { offset: u64, length: u64 },
    Trim { offset: u64, length: u64 },
}

impl Change {
    fn ops(&self, geometry: PageGeometry) -> Vec<PageOp> {
        match self {
            Self::Write { offset, data } => write_ops(geometry, *offset, Bytes::from(data.clone())).collect(),
            Self::WriteZeroes { offset, length } => write_zeroes_ops(geometry, *offset, *length).collect(),
            Self::Trim { offset, length } => trim_ops(geometry, *offset, *length).collect(),
        }
    }

    /// What the client sees on a plain disk. A TRIM reads back as zeroes: the behaviour this
    /// mapping chooses (the document allows any content).
    fn apply_flat(&self, flat: &mut [u8]) {
        match self {
            Self::Write { offset, data } => flat[*offset as usize..][..data.len()].copy_from_slice(data),
            Self::WriteZeroes { offset, length } | Self::Trim { offset, length } => {
                flat[*offset as usize..][..*length as usize].fill(0)
            }
        }
    }
}

/// Ops come one per page, in ascending contiguous order, as many as `len()` promised.
fn check_order(ops: &[PageOp], expected: usize) {
    assert_eq!(ops.len(), expected);
    for pair in ops.windows(2) {
        assert_eq!(pair[0].page() + 1, pair[1].page());
    }
}

fn change(size: u64) -> impl Strategy<Value = Change> {
    (0..3u8, 0..=size, any::<u64>(), any::<u8>()).prop_map(move |(kind, offset, length, seed)| {
        let length = length % (size - offset + 1);
        match kind {
            0 => Change::Write {
                offset,
                data: (0..length).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) | 1).collect(),
            },
            1 => Change::WriteZeroes { offset, length },
            _ => Change::Trim { offset, length },
        }
    })
}

fn volume() -> impl Strategy<Value = (u32, u64)> {
    (prop_oneof![Just(512u32), Just(1024), Just(4096)], 1..6u64, 0..4096u64).prop_map(
        |(page_bytes, pages, tail)| {
            (page_bytes, pages * u64::from(page_bytes) + tail % u64::from(page_bytes))
        },
    )
}

proptest! {
    /// Applying the page ops to a page map gives the same bytes as writing into a flat array,
    /// for random offsets and lengths, aligned or not, across page boundaries and the volume's
    /// partial last page.
    #[test]
    fn page_ops_on_a_page_map_read_back_like_a_flat_byte_array(
        (page_bytes, size, changes, reads) in volume().prop_flat_map(|(page_bytes, size)| (
            Just(page_bytes),
            Just(size),
            proptest::collection::vec(change(size), 1..24),
            proptest::collection::vec((0..=size, any::<u64>()), 1..8),
        ))
    ) {
        let geometry = geometry(page_bytes);
        let mut flat = vec![0u8; size as usize];
        let mut model = PageModel::new(page_bytes);
        for change in &changes {
            let ops = change.ops(geometry);
            let (offset, length) = match change {
                Change::Write { offset, data } => (*offset, data.len() as u64),
                Change::WriteZeroes { offset, length } | Change::Trim { offset, length } => (*offset, *length),
            };
            check_order(&ops, geometry.spans(offset, length).len());
            ops.iter().for_each(|op| model.apply(op));
            change.apply_flat(&mut flat);
        }
        prop_assert_eq!(model.read(geometry, 0, size), flat.clone());
        for (offset, length) in reads {
            let length = length % (size - offset + 1);
            let range = offset as usize..(offset + length) as usize;
            prop_assert_eq!(model.read(geometry, offset, length), flat[range].to_vec());
        }
    }

    /// WRITE data is sliced, not copied, and a page is an image exactly when the write covers it.
    #[test]
    fn write_ops_slice_the_request_and_image_only_whole_pages(
        page_bytes in prop_oneof![Just(512u32), Just(4096)],
        offset in 0..100_000u64,
        length in 0..20_000usize,
    ) {
        let data = Bytes::from(vec![9u8; length]);
        let base = data.as_ptr() as usize;
        for op in write_ops(geometry(page_bytes), offset, data.clone()) {
            let (page, at, bytes) = match &op {
                PageOp::Image { page, data } => (*page, 0, data),
                PageOp::Patch { page, offset, data } => (*page, *offset, data),
                other => panic!("a write made {other:?}"),
            };
            let volume_offset = page * u64::from(page_bytes) + u64::from(at);
            let request_offset = (bytes.as_ptr() as usize) - base;
            prop_assert_eq!(volume_offset, offset + request_offset as u64);
            prop_assert_eq!(matches!(op, PageOp::Image { .. }), bytes.len() == page_bytes as usize);
        }
    }
}

#[test]
fn an_unaligned_write_across_pages_is_patch_image_patch() {
    let data = Bytes::from((0..1100u32).map(|i| i as u8).collect::<Vec<_>>());
    let ops: Vec<PageOp> = write_ops(geometry(512), 500, data.clone()).collect();
    assert_eq!(
        ops,
        [
            PageOp::Patch { page: 0, offset: 500, data: data.slice(..12) },
            PageOp::Image { page: 1, data: data.slice(12..524) },
            PageOp::Image { page: 2, data: data.slice(524..1036) },
            PageOp::Patch { page: 3, offset: 0, data: data.slice(1036..) },
        ]
    );
}

#[test]
fn write_zeroes_zeroes_whole_pages_and_patches_partial_ones_with_zeroes() {
    let ops: Vec<PageOp> = write_zeroes_ops(geometry(4096), 4000, 8192).collect();
    let zeroes = |n: usize| Bytes::from(vec![0u8; n]);
    assert_eq!(
        ops,
        [
            PageOp::Patch { page: 0, offset: 4000, data: zeroes(96) },
            PageOp::Zero { page: 1 },
            PageOp::Patch { page: 2, offset: 0, data: zeroes(4000) },
        ]
    );
}

#[test]
fn trim_trims_whole_pages_and_zeroes_the_partial_ends() {
    let ops: Vec<PageOp> = trim_ops(geometry(512), 0, 1030).collect();
    assert_eq!(ops[..2], [PageOp::Trim { page: 0 }, PageOp::Trim { page: 1 }]);
    assert_eq!(ops[2], PageOp::Patch { page: 2, offset: 0, data: Bytes::from(vec![0u8; 6]) });
}

#[test]
fn empty_ranges_map_to_nothing() {
    assert_eq!(write_ops(geometry(512), 77, Bytes::new()).len(), 0);
    assert_eq!(trim_ops(geometry(512), 77, 0).count(), 0);
    assert_eq!(read_spans(geometry(512), 1 << 40, 0).len(), 0);
}

#[test]
fn a_four_gib_trim_is_lazy_and_knows_its_length() {
    let mut ops = trim_ops(geometry(512), 256, u64::from(u32::MAX));
    assert_eq!(ops.len(), (256 + u64::from(u32::MAX)).div_ceil(512) as usize);
    assert!(matches!(ops.next(), Some(PageOp::Patch { page: 0, offset: 256, .. })));
    assert_eq!(ops.next(), Some(PageOp::Trim { page: 1 }));
}

#[test]
fn read_spans_cover_the_range_in_order() {
    let spans: Vec<Span> = read_spans(geometry(1024), 1000, 1100).collect();
    assert_eq!(spans.len(), 3);
    assert_eq!((spans[0].page, spans[0].in_page(), spans[0].in_request()), (0, 1000..1024, 0..24));
    assert_eq!((spans[1].page, spans[1].whole, spans[1].in_request()), (1, true, 24..1048));
    assert_eq!((spans[2].page, spans[2].in_page(), spans[2].in_request()), (2, 0..52, 1048..1100));
}

#[test]
fn geometry_refuses_page_sizes_a_volume_cannot_have() {
    assert!(PageGeometry::new(4096).is_ok());
    assert!(PageGeometry::new(1000).is_err());
    assert!(PageGeometry::new(1 << 17).is_err());
}
