//! Property tests: every message survives an encode/decode round trip unchanged, decoding shares
//! the input buffer instead of copying payloads, and every single-bit flip of a frame is caught.

mod support;

use bytes::BytesMut;
use proptest::prelude::*;
use protocol::{decode_frame, decode_frame_exact, frame_bytes, Message};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_message_round_trips(seed in any::<u64>()) {
        let message = support::message(&mut support::rng(seed), 300);
        let frame = frame_bytes(&message).unwrap();
        prop_assert_eq!(decode_frame_exact(frame).unwrap(), message);
    }

    #[test]
    fn frames_split_anywhere_decode_from_a_stream(seed in any::<u64>(), cut in any::<prop::sample::Index>()) {
        let mut rng = support::rng(seed);
        let first = support::message(&mut rng, 100);
        let second = support::message(&mut rng, 100);
        let mut stream = frame_bytes(&first).unwrap().to_vec();
        stream.extend_from_slice(&frame_bytes(&second).unwrap());
        let cut = cut.index(stream.len());
        let mut buf = BytesMut::from(&stream[..cut]);
        let mut decoded = Vec::new();
        while let Some(m) = decode_frame(&mut buf).unwrap() { decoded.push(m); }
        buf.extend_from_slice(&stream[cut..]);
        while let Some(m) = decode_frame(&mut buf).unwrap() { decoded.push(m); }
        prop_assert_eq!(decoded, vec![first, second]);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn every_single_bit_flip_of_a_frame_is_detected(seed in any::<u64>()) {
        let message = support::message(&mut support::rng(seed), 40);
        let frame = frame_bytes(&message).unwrap();
        for bit in 0..frame.len() * 8 {
            let mut flipped = frame.to_vec();
            flipped[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_frame_exact(flipped.into()).is_err(), "flip of bit {} went unnoticed", bit);
        }
    }
}

#[test]
fn decoded_payloads_are_slices_of_the_received_buffer() {
    let mut rng = support::rng(7);
    let records = support::record_chain(&mut rng, 8, protocol::Epoch(1), 1000);
    let batch = Message::AppendBatch(protocol::messages::AppendBatch {
        pg: protocol::PgRef { volume_id: protocol::VolumeId(1), pg_id: protocol::PgId(0) },
        epochs: protocol::Epochs { volume: protocol::Epoch(1), ..protocol::Epochs::INITIAL },
        vdl: protocol::Lsn(0),
        pg_vdl_lsn: protocol::Lsn(0),
        page_bytes: 4096,
        records,
    });
    let frame = frame_bytes(&batch).unwrap();
    let range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
    let Message::AppendBatch(decoded) = decode_frame_exact(frame.clone()).unwrap() else {
        panic!("wrong type")
    };
    for record in decoded.records.iter().filter(|r| !r.payload().is_empty()) {
        assert!(range.contains(&(record.payload().as_ptr() as usize)), "payload was copied out of the frame");
    }
}
