//! `docs/format.md` must match the code: the worked example there is the exact encoding of the
//! frame built here, and every constant the document quotes is the one the code uses.

use protocol::messages::AppendBatch;
use protocol::patch::{self, PatchEdit};
use protocol::record::{PAGE_BYTES_MAX, RECORD_HEADER_BYTES, RECORD_PAYLOAD_BYTES_MAX};
use protocol::{
    frame_bytes, Epoch, Epochs, Lsn, Message, PageId, PgId, PgRef, Record, RecordFlags, RecordKind,
    RecordMeta, VolumeId,
};

const DOC: &str = include_str!("../../docs/format.md");

fn example_frame() -> Message {
    let epochs = Epochs { volume: Epoch(2), membership: Epoch(1), geometry: Epoch(1) };
    let payload = patch::encode(&[PatchEdit { offset: 16, data: b"hello" }]).unwrap();
    let meta = RecordMeta {
        kind: RecordKind::PagePatch,
        flags: RecordFlags::CPL,
        lsn: Lsn(101),
        prev_volume_lsn: Lsn(100),
        prev_pg_lsn: Lsn(90),
        prev_page_lsn: Lsn(42),
        page_id: PageId(7),
        epoch: Epoch(2),
    };
    Message::AppendBatch(AppendBatch {
        pg: PgRef { volume_id: VolumeId(0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100), pg_id: PgId(3) },
        epochs,
        vdl: Lsn(100),
        pg_vdl_lsn: Lsn(90),
        page_bytes: 4096,
        records: vec![Record::new(meta, payload).unwrap()],
    })
}

fn hex_dump(bytes: &[u8]) -> String {
    let line = |(i, chunk): (usize, &[u8])| {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        format!("{:04x}: {}\n", i * 16, hex.join(" "))
    };
    bytes.chunks(16).enumerate().map(line).collect()
}

fn doc_section(start: &str, end: &str) -> &'static str {
    let from = DOC.find(start).unwrap_or_else(|| panic!("docs/format.md lacks {start}")) + start.len();
    let to = DOC[from..].find(end).unwrap_or_else(|| panic!("docs/format.md lacks {end}")) + from;
    &DOC[from..to]
}

#[test]
fn the_worked_example_in_format_md_is_the_codes_encoding() {
    let frame = frame_bytes(&example_frame()).unwrap();
    let documented =
        doc_section("<!-- example-frame:start -->\n```text\n", "```\n<!-- example-frame:end -->");
    assert_eq!(
        documented,
        hex_dump(&frame),
        "docs/format.md example is stale; the code encodes:\n{}",
        hex_dump(&frame)
    );
}

#[test]
fn the_constants_format_md_quotes_are_the_codes() {
    for (name, value) in [
        ("RECORD_HEADER_BYTES", RECORD_HEADER_BYTES),
        ("RECORD_PAYLOAD_BYTES_MAX", RECORD_PAYLOAD_BYTES_MAX),
        ("PAGE_BYTES_MAX", PAGE_BYTES_MAX),
        ("FRAME_HEADER_BYTES", protocol::frame::FRAME_HEADER_BYTES),
        ("FRAME_BODY_BYTES_MAX", protocol::frame::FRAME_BODY_BYTES_MAX),
        ("BATCH_RECORDS_MAX", protocol::messages::BATCH_RECORDS_MAX),
        ("GOSSIP_RANGES_MAX", protocol::messages::GOSSIP_RANGES_MAX),
        ("STATUS_SEGMENTS_MAX", protocol::messages::STATUS_SEGMENTS_MAX),
        ("ERROR_MESSAGE_BYTES_MAX", protocol::messages::ERROR_MESSAGE_BYTES_MAX),
        ("PATCH_EDITS_MAX", patch::PATCH_EDITS_MAX),
        ("TRUNCATIONS_REPORTED_MAX", protocol::messages::TRUNCATIONS_REPORTED_MAX),
        ("STATUS_LAYOUT", usize::from(protocol::messages::STATUS_LAYOUT)),
    ] {
        let quoted = format!("`{name}` = {value}");
        assert!(DOC.contains(&quoted), "docs/format.md should say {quoted}");
    }
}
