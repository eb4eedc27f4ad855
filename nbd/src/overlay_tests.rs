use bytes::Bytes;
use proptest::prelude::*;

use super::*;

const PAGE: u32 = 16;

fn image(page: u64, byte: u8) -> PageOp {
    PageOp::Image { page, data: Bytes::from(vec![byte; PAGE as usize]) }
}

fn patch(page: u64, offset: u32, data: &[u8]) -> PageOp {
    PageOp::Patch { page, offset, data: Bytes::copy_from_slice(data) }
}

/// The page after `ops` applied in order to zeroes: what storage would hold.
fn applied(ops: &[&PageOp]) -> Vec<u8> {
    let mut page = vec![0u8; PAGE as usize];
    for op in ops {
        match op {
            PageOp::Image { data, .. } => page.copy_from_slice(data),
            PageOp::Zero { .. } | PageOp::Trim { .. } => page.fill(0),
            PageOp::Patch { offset, data, .. } => {
                page[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
            }
        }
    }
    page
}

#[test]
fn a_page_the_overlay_never_saw_is_the_stored_page() {
    let overlay = Overlay::new();
    let view = overlay.view(7, 0);
    assert!(view.needs_base() && view.is_empty());
    assert_eq!(view.apply(Some(&[5; PAGE as usize]), PAGE), vec![5; PAGE as usize]);
    assert_eq!(view.apply(None, PAGE), vec![0; PAGE as usize], "never written reads as zeroes");
}

#[test]
fn patches_land_on_the_stored_page_and_an_image_replaces_it() {
    let mut overlay = Overlay::new();
    overlay.insert(11, patch(1, 2, &[9, 9]));
    let view = overlay.view(1, 10);
    assert!(view.needs_base());
    let mut expected = vec![5; PAGE as usize];
    expected[2..4].copy_from_slice(&[9, 9]);
    assert_eq!(view.apply(Some(&[5; PAGE as usize]), PAGE), expected);

    overlay.insert(12, image(1, 3));
    overlay.insert(13, patch(1, 0, &[8]));
    let view = overlay.view(1, 10);
    assert!(!view.needs_base(), "the image at 12 replaces whatever storage holds");
    let mut expected = vec![3; PAGE as usize];
    expected[0] = 8;
    assert_eq!(view.apply(Some(&[5; PAGE as usize]), PAGE), expected);

    overlay.insert(14, PageOp::Trim { page: 1 });
    assert_eq!(overlay.view(1, 10).apply(None, PAGE), vec![0; PAGE as usize]);
}

#[test]
fn a_view_leaves_out_what_vdl_already_covers() {
    let mut overlay = Overlay::new();
    overlay.insert(5, image(2, 1));
    overlay.insert(6, patch(2, 0, &[7]));
    // VDL 5: storage has the image, the overlay adds the patch on top of it.
    let view = overlay.view(2, 5);
    assert!(view.needs_base());
    let mut expected = vec![1; PAGE as usize];
    expected[0] = 7;
    assert_eq!(view.apply(Some(&[1; PAGE as usize]), PAGE), expected);
    assert!(overlay.view(2, 6).is_empty());
}

#[test]
fn prune_drops_what_is_durable_and_frees_its_bytes() {
    let mut overlay = Overlay::new();
    overlay.insert(1, image(1, 1));
    overlay.insert(2, PageOp::Zero { page: 2 });
    overlay.insert(3, patch(1, 0, &[4, 4, 4]));
    assert_eq!((overlay.len(), overlay.oldest()), (3, Some(1)));
    assert_eq!(overlay.bytes(), PAGE as usize + 3 + 3 * ENTRY_OVERHEAD_BYTES);
    overlay.prune(2);
    assert_eq!((overlay.len(), overlay.oldest()), (1, Some(3)));
    assert_eq!(overlay.bytes(), 3 + ENTRY_OVERHEAD_BYTES);
    assert!(overlay.view(2, 2).is_empty());
    overlay.prune(1);
    assert_eq!(overlay.len(), 1, "VDL never moves back");
    overlay.prune(3);
    assert!(overlay.is_empty());
    assert_eq!(overlay.bytes(), 0);
    overlay.insert(3, patch(1, 0, &[1]));
    assert!(overlay.is_empty(), "an op VDL already covers is not kept");
}

#[test]
fn ops_inserted_out_of_lsn_order_apply_in_lsn_order() {
    let mut overlay = Overlay::new();
    overlay.insert(21, patch(4, 0, &[2]));
    overlay.insert(20, image(4, 1));
    overlay.insert(22, patch(4, 0, &[3]));
    let mut expected = vec![1; PAGE as usize];
    expected[0] = 3;
    assert_eq!(overlay.view(4, 0).apply(None, PAGE), expected);
    overlay.prune(20);
    assert_eq!(overlay.view(4, 20).apply(Some(&[1; PAGE as usize]), PAGE), expected);
}

#[test]
#[should_panic(expected = "inserted twice")]
fn one_lsn_twice_is_a_bug() {
    let mut overlay = Overlay::new();
    overlay.insert(3, image(1, 1));
    overlay.insert(3, image(2, 1));
}

fn any_op() -> impl Strategy<Value = PageOp> {
    let page = 0u64..4;
    prop_oneof![
        (page.clone(), any::<u8>()).prop_map(|(p, b)| image(p, b)),
        (page.clone(), 0u32..PAGE, proptest::collection::vec(any::<u8>(), 1..6)).prop_map(|(p, o, d)| {
            let len = d.len().min((PAGE - o) as usize);
            patch(p, o, &d[..len])
        }),
        page.clone().prop_map(|p| PageOp::Zero { page: p }),
        page.prop_map(|p| PageOp::Trim { page: p }),
    ]
}

proptest! {
    /// Model check: ops get LSNs 1, 2, ... in order, VDL moves up now and then, and a read at
    /// VDL (storage = every op at or below VDL) overlaid with the view equals every op applied.
    #[test]
    fn reads_through_the_overlay_see_every_op(
        steps in proptest::collection::vec((any_op(), 0u8..4, 0u64..4), 1..80)
    ) {
        let mut overlay = Overlay::new();
        let mut history: Vec<PageOp> = Vec::new();
        let mut vdl = 0u64;
        for (op, advance, read_page) in steps {
            history.push(op.clone());
            overlay.insert(history.len() as u64, op);
            if advance == 0 {
                vdl = (vdl + 3).min(history.len() as u64);
                overlay.prune(vdl);
            }
            let of_page = |upto: usize| -> Vec<&PageOp> {
                history[..upto].iter().filter(|o| o.page() == read_page).collect()
            };
            let stored = applied(&of_page(vdl as usize));
            let expected = applied(&of_page(history.len()));
            let view = overlay.view(read_page, vdl);
            prop_assert_eq!(view.apply(Some(&stored), PAGE), expected);
        }
        overlay.prune(history.len() as u64);
        prop_assert!(overlay.is_empty());
        prop_assert_eq!(overlay.bytes(), 0);
    }
}
