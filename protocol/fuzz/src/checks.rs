//! The properties each decoder must hold for any input, shared by the cargo-fuzz targets and the
//! stable `cargo test` random-input suite (`protocol/tests/random_inputs.rs` includes this file).
//!
//! For every decoder: no panic on any bytes; and whatever it accepts re-encodes to exactly the
//! bytes it consumed (so a decoder cannot accept something the encoder would write differently).
//! The CRC-gated decoders are also driven with the checksums fixed up, so the fuzzer reaches the
//! field checks behind them.

use bytes::{Bytes, BytesMut};
use protocol::codec::Reader;
use protocol::frame::FRAME_HEADER_BYTES;
use protocol::record::RECORD_HEADER_BYTES;
use protocol::{decode_frame, decode_frame_exact, frame_bytes, patch, Message, Record};

/// Whole frames and a stream of frames; the first byte chooses whether checksums are fixed up.
pub fn check_frame(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 {
        fix_frame_crcs(&mut bytes);
    }
    if let Ok(message) = decode_frame_exact(Bytes::from(bytes.clone())) {
        assert_eq!(frame_bytes(&message).expect("accepted message re-encodes"), bytes[..]);
    }
    let mut stream = BytesMut::from(&bytes[..]);
    while let Ok(Some(message)) = decode_frame(&mut stream) {
        frame_bytes(&message).expect("accepted message re-encodes");
    }
}

/// A message body of the type named by the first byte, bypassing the frame checksum.
pub fn check_message_body(data: &[u8]) {
    let Some((&type_code, body)) = data.split_first() else { return };
    if let Ok(message) = Message::decode_body(type_code, Bytes::copy_from_slice(body)) {
        let mut out = BytesMut::new();
        message.encode_body(&mut out);
        assert_eq!(out[..], body[..], "accepted body re-encodes differently");
    }
}

/// One record; the first byte chooses whether its CRC is fixed up.
pub fn check_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut bytes = rest.to_vec();
    if mode & 1 == 1 && bytes.len() >= RECORD_HEADER_BYTES {
        let payload_len = u32::from_le_bytes([bytes[56], bytes[57], bytes[58], bytes[59]]) as usize;
        let end = (RECORD_HEADER_BYTES + payload_len).min(bytes.len());
        let crc = crc32c::crc32c_append(
            crc32c::crc32c(&bytes[4..RECORD_HEADER_BYTES]),
            &bytes[RECORD_HEADER_BYTES..end],
        );
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
    }
    let mut reader = Reader::new(Bytes::from(bytes.clone()));
    if let Ok(record) = Record::decode(&mut reader) {
        let mut out = Vec::new();
        record.encode(&mut out);
        assert_eq!(out[..], bytes[..record.encoded_len()], "accepted record re-encodes differently");
    }
}

/// A patch payload, applied to a 4 KiB page.
pub fn check_patch(data: &[u8]) {
    let mut page = vec![0u8; 4096];
    let parsed = patch::Patch::parse(data);
    let applied = patch::apply(&mut page, data);
    if parsed.is_err() {
        assert!(applied.is_err(), "apply accepted a patch parse rejected");
        assert!(page.iter().all(|b| *b == 0), "a rejected patch changed the page");
    }
}

fn fix_frame_crcs(bytes: &mut [u8]) {
    if bytes.len() < FRAME_HEADER_BYTES {
        return;
    }
    let body_len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let body_end = FRAME_HEADER_BYTES.saturating_add(body_len).min(bytes.len());
    let body_crc = crc32c::crc32c(&bytes[FRAME_HEADER_BYTES..body_end]);
    bytes[12..16].copy_from_slice(&body_crc.to_le_bytes());
    let header_crc = crc32c::crc32c(&bytes[..16]);
    bytes[16..20].copy_from_slice(&header_crc.to_le_bytes());
}
