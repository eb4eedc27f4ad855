//! Scripted clients against the handshake: byte sequences in, replies and outcomes checked.

use std::time::{Duration, Instant};

use super::*;
use crate::export::DEFAULT_FLAGS;
use crate::proto::{
    OptionReplyHeader, NBD_INFO_EXPORT, NBD_OPT_SET_META_CONTEXT, NBD_OPT_STARTTLS, NBD_OPT_STRUCTURED_REPLY,
    OPTION_REPLY_HEADER_BYTES,
};

const SIZE_BYTES: u64 = 1 << 30;
const PAGE_BYTES: u32 = 4096;
const BOTH_CLIENT_FLAGS: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

fn export() -> Export {
    Export::new("vol0", "a test volume", SIZE_BYTES, PAGE_BYTES, DEFAULT_FLAGS).unwrap()
}

fn drain(handshake: &mut Handshake) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(bytes) = handshake.poll_transmit() {
        out.extend_from_slice(&bytes);
    }
    out
}

/// A handshake past the greeting and the client flags.
fn connected(client_flags: u32) -> Handshake {
    let mut handshake = Handshake::new(export(), Instant::now());
    assert_eq!(drain(&mut handshake).len(), proto::GREETING_BYTES);
    handshake.feed(&client_flags.to_be_bytes());
    handshake
}

fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut out = OptionHeader { option, length: data.len() as u32 }.encode().to_vec();
    out.extend_from_slice(data);
    out
}

fn go_data(name: &str, info_types: &[u16]) -> Vec<u8> {
    let mut out = (name.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(info_types.len() as u16).to_be_bytes());
    info_types.iter().for_each(|info| out.extend_from_slice(&info.to_be_bytes()));
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Reply {
    option: u32,
    reply_type: u32,
    data: Vec<u8>,
}

fn replies(mut bytes: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Some((header, rest)) = bytes.split_first_chunk::<OPTION_REPLY_HEADER_BYTES>() {
        let header = OptionReplyHeader::decode(header).unwrap();
        let (data, rest) = rest.split_at(header.length as usize);
        out.push(Reply { option: header.option, reply_type: header.reply_type, data: data.to_vec() });
        bytes = rest;
    }
    assert!(bytes.is_empty(), "trailing bytes after the last reply");
    out
}

fn reply(option: u32, reply_type: u32, data: &[u8]) -> Reply {
    Reply { option, reply_type, data: data.to_vec() }
}

fn ready_outcome(handshake: &mut Handshake) -> Ready {
    match handshake.poll_outcome() {
        Some(Ok(Outcome::Ready(ready))) => ready,
        other => panic!("expected Ready, got {other:?}"),
    }
}

fn block_size_info() -> Vec<u8> {
    proto::info_block_size(1, PAGE_BYTES, 32 * 1024 * 1024).to_vec()
}

#[test]
fn greeting_offers_fixed_newstyle_and_no_zeroes() {
    let mut handshake = Handshake::new(export(), Instant::now());
    let greeting = drain(&mut handshake);
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    assert_eq!(&greeting[8..16], b"IHAVEOPT");
    assert_eq!(&greeting[16..], &[0, 3]);
    assert_eq!(handshake.poll_outcome(), None);
}

#[test]
fn go_for_the_named_export_sends_export_and_block_size_info_then_enters_transmission() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    let mut script = option(NBD_OPT_GO, &go_data("vol0", &[NBD_INFO_BLOCK_SIZE]));
    script.extend_from_slice(b"first request bytes");
    handshake.feed(&script);
    let export_info = proto::info_export(SIZE_BYTES, export().flags());
    assert_eq!(
        replies(&drain(&mut handshake)),
        [
            reply(NBD_OPT_GO, NBD_REP_INFO, &export_info),
            reply(NBD_OPT_GO, NBD_REP_INFO, &block_size_info()),
            reply(NBD_OPT_GO, NBD_REP_ACK, &[]),
        ]
    );
    let ready = ready_outcome(&mut handshake);
    assert_eq!(
        (ready.export_name.as_str(), ready.size_bytes, ready.page_bytes),
        ("vol0", SIZE_BYTES, PAGE_BYTES)
    );
    assert_eq!((ready.entry, ready.block_size_requested), (Entry::Go, true));
    assert_eq!(&ready.leftover[..], b"first request bytes");
    assert!(handshake.is_finished() && handshake.poll_timeout().is_none());
}

#[test]
fn go_for_the_default_export_with_a_name_request_reports_the_canonical_name() {
    let mut handshake = connected(NBD_FLAG_C_FIXED_NEWSTYLE);
    handshake.feed(&option(NBD_OPT_GO, &go_data("", &[NBD_INFO_NAME, NBD_INFO_DESCRIPTION, 77])));
    let got = replies(&drain(&mut handshake));
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].data[..2], NBD_INFO_EXPORT.to_be_bytes());
    assert_eq!(got[1], reply(NBD_OPT_GO, NBD_REP_INFO, &proto::info_string(NBD_INFO_NAME, "vol0")));
    let description = proto::info_string(NBD_INFO_DESCRIPTION, "a test volume");
    assert_eq!(got[2], reply(NBD_OPT_GO, NBD_REP_INFO, &description));
    assert_eq!(got[4], reply(NBD_OPT_GO, NBD_REP_ACK, &[]));
    let ready = ready_outcome(&mut handshake);
    assert_eq!((ready.export_name.as_str(), ready.block_size_requested), ("vol0", false));
}

#[test]
fn info_answers_without_ending_the_handshake_and_go_may_follow() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_INFO, &go_data("vol0", &[])));
    let got = replies(&drain(&mut handshake));
    assert_eq!(
        got.iter().map(|r| r.reply_type).collect::<Vec<_>>(),
        [NBD_REP_INFO, NBD_REP_INFO, NBD_REP_ACK]
    );
    assert!(got.iter().all(|r| r.option == NBD_OPT_INFO));
    assert_eq!(handshake.poll_outcome(), None);
    handshake.feed(&option(NBD_OPT_GO, &go_data("vol0", &[])));
    assert_eq!(replies(&drain(&mut handshake)).len(), 3);
    assert_eq!(ready_outcome(&mut handshake).entry, Entry::Go);
}

#[test]
fn list_names_the_export_with_its_description_and_refuses_data() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_LIST, &[]));
    let mut server = 4u32.to_be_bytes().to_vec();
    server.extend_from_slice(b"vol0a test volume");
    assert_eq!(
        replies(&drain(&mut handshake)),
        [reply(NBD_OPT_LIST, NBD_REP_SERVER, &server), reply(NBD_OPT_LIST, NBD_REP_ACK, &[])]
    );
    handshake.feed(&option(NBD_OPT_LIST, b"x"));
    let got = replies(&drain(&mut handshake));
    assert_eq!((got.len(), got[0].reply_type), (1, NBD_REP_ERR_INVALID));
    assert_eq!(handshake.poll_outcome(), None);
}

#[test]
fn go_for_an_unknown_export_gets_err_unknown_and_the_client_may_go_again() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_GO, &go_data("nope", &[NBD_INFO_BLOCK_SIZE])));
    let got = replies(&drain(&mut handshake));
    assert_eq!((got.len(), got[0].option, got[0].reply_type), (1, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN));
    assert_eq!(handshake.poll_outcome(), None);
    handshake.feed(&option(NBD_OPT_GO, &go_data("vol0", &[])));
    drain(&mut handshake);
    assert_eq!(ready_outcome(&mut handshake).export_name, "vol0");
}

#[test]
fn abort_is_acknowledged_then_ends_the_handshake() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_ABORT, b"ignored"));
    assert_eq!(replies(&drain(&mut handshake)), [reply(NBD_OPT_ABORT, NBD_REP_ACK, &[])]);
    assert_eq!(handshake.poll_outcome(), Some(Ok(Outcome::Aborted)));
    handshake.handle_eof();
    assert_eq!(handshake.poll_outcome(), None);
}

#[test]
fn export_name_sends_size_and_flags_with_zeroes_unless_the_client_said_no_zeroes() {
    for (client_flags, zeroes) in [(NBD_FLAG_C_FIXED_NEWSTYLE, 124), (BOTH_CLIENT_FLAGS, 0), (0, 124)] {
        let mut handshake = connected(client_flags);
        handshake.feed(&option(NBD_OPT_EXPORT_NAME, b"vol0"));
        let sent = drain(&mut handshake);
        assert_eq!(sent.len(), 10 + zeroes);
        assert_eq!(sent[..8], SIZE_BYTES.to_be_bytes());
        assert_eq!(sent[8..10], export().flags().bits().to_be_bytes());
        assert!(sent[10..].iter().all(|b| *b == 0));
        let ready = ready_outcome(&mut handshake);
        assert_eq!((ready.entry, ready.block_size_requested), (Entry::ExportName, false));
    }
}

#[test]
fn export_name_for_an_unknown_export_closes_the_connection() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_EXPORT_NAME, b"other"));
    assert!(drain(&mut handshake).is_empty());
    let name = "other".to_owned();
    assert_eq!(handshake.poll_outcome(), Some(Err(HandshakeError::UnknownExport { name })));
}

#[test]
fn unsupported_options_get_err_unsup_and_the_next_option_is_parsed() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    let unsupported = [
        (NBD_OPT_STARTTLS, &b""[..]),
        (NBD_OPT_STRUCTURED_REPLY, b""),
        (NBD_OPT_SET_META_CONTEXT, b"1234"),
        (0xdead, b"x"),
    ];
    for (code, data) in unsupported {
        handshake.feed(&option(code, data));
        let got = replies(&drain(&mut handshake));
        assert_eq!((got.len(), got[0].option, got[0].reply_type), (1, code, NBD_REP_ERR_UNSUP));
        assert!(!got[0].data.is_empty(), "error replies carry a message");
    }
    handshake.feed(&option(NBD_OPT_GO, &go_data("vol0", &[])));
    drain(&mut handshake);
    assert!(matches!(handshake.poll_outcome(), Some(Ok(Outcome::Ready(_)))));
}

#[test]
fn malformed_go_data_gets_err_invalid() {
    let mut long_name = go_data("", &[]);
    long_name[..4].copy_from_slice(&100u32.to_be_bytes());
    let mut odd_count = go_data("vol0", &[NBD_INFO_NAME]);
    odd_count.pop();
    let bad = [vec![], vec![0, 0, 0], long_name, odd_count, go_data("v\0l", &[]), {
        let mut utf8 = go_data("ab", &[]);
        utf8[4] = 0xff;
        utf8
    }];
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    for data in bad {
        handshake.feed(&option(NBD_OPT_GO, &data));
        let got = replies(&drain(&mut handshake));
        assert_eq!((got.len(), got[0].reply_type), (1, NBD_REP_ERR_INVALID), "data {data:?}");
    }
    assert_eq!(handshake.poll_outcome(), None);
}

#[test]
fn a_truncated_option_waits_for_more_bytes_and_an_eof_inside_it_is_reported() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    let script = option(NBD_OPT_GO, &go_data("vol0", &[]));
    handshake.feed(&script[..script.len() - 1]);
    assert!(drain(&mut handshake).is_empty());
    assert_eq!(handshake.poll_outcome(), None);
    handshake.handle_eof();
    let pending_bytes = script.len() - 1;
    assert_eq!(handshake.poll_outcome(), Some(Err(HandshakeError::Disconnected { pending_bytes })));
}

#[test]
fn an_oversized_option_closes_before_its_data_arrives() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    let length = OPTION_DATA_BYTES_MAX + 1;
    handshake.feed(&OptionHeader { option: NBD_OPT_GO, length }.encode());
    assert!(drain(&mut handshake).is_empty());
    let error = HandshakeError::OptionTooLong { option: NBD_OPT_GO, length };
    assert_eq!(handshake.poll_outcome(), Some(Err(error)));
}

#[test]
fn an_option_at_the_length_bound_is_read_and_answered() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(0x1234, &vec![7; OPTION_DATA_BYTES_MAX as usize]));
    assert_eq!(replies(&drain(&mut handshake))[0].reply_type, NBD_REP_ERR_UNSUP);
    assert_eq!(handshake.poll_outcome(), None);
}

#[test]
fn a_bad_option_magic_closes() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    let mut script = option(NBD_OPT_LIST, &[]);
    script[0] = b'X';
    handshake.feed(&script);
    assert!(matches!(
        handshake.poll_outcome(),
        Some(Err(HandshakeError::Decode(DecodeError::OptionMagic { .. })))
    ));
}

#[test]
fn unknown_client_flags_close() {
    let flags = NBD_FLAG_C_FIXED_NEWSTYLE | 1 << 2;
    let mut handshake = connected(flags);
    assert_eq!(handshake.poll_outcome(), Some(Err(HandshakeError::ClientFlags { flags })));
}

#[test]
fn too_many_options_close_the_connection() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    for _ in 0..OPTIONS_PER_HANDSHAKE_MAX {
        handshake.feed(&option(NBD_OPT_LIST, &[]));
    }
    assert_eq!(handshake.poll_outcome(), None);
    handshake.feed(&option(NBD_OPT_LIST, &[]));
    drain(&mut handshake);
    assert_eq!(handshake.poll_outcome(), Some(Err(HandshakeError::TooManyOptions)));
}

#[test]
fn the_handshake_times_out_at_its_deadline_and_not_before() {
    let start = Instant::now();
    let mut handshake = Handshake::new(export(), start);
    drain(&mut handshake);
    let deadline = handshake.poll_timeout().unwrap();
    assert_eq!(deadline, start + HANDSHAKE_DURATION_MAX);
    handshake.handle_timeout(deadline - Duration::from_millis(1));
    assert_eq!(handshake.poll_outcome(), None);
    handshake.handle_timeout(deadline);
    assert_eq!(handshake.poll_outcome(), Some(Err(HandshakeError::TimedOut)));
}

#[test]
fn the_outcome_waits_until_the_replies_are_taken() {
    let mut handshake = connected(BOTH_CLIENT_FLAGS);
    handshake.feed(&option(NBD_OPT_ABORT, &[]));
    assert_eq!(handshake.poll_outcome(), None);
    drain(&mut handshake);
    assert_eq!(handshake.poll_outcome(), Some(Ok(Outcome::Aborted)));
}

#[test]
fn pipelined_options_fed_a_byte_at_a_time_get_the_same_replies_in_order() {
    let mut script = BOTH_CLIENT_FLAGS.to_be_bytes().to_vec();
    script.extend(option(NBD_OPT_LIST, &[]));
    script.extend(option(NBD_OPT_STRUCTURED_REPLY, &[]));
    script.extend(option(NBD_OPT_INFO, &go_data("vol0", &[NBD_INFO_NAME])));
    script.extend(option(NBD_OPT_GO, &go_data("", &[NBD_INFO_BLOCK_SIZE])));
    script.extend_from_slice(b"tail");

    let mut whole = Handshake::new(export(), Instant::now());
    whole.feed(&script);
    let whole_bytes = drain(&mut whole);
    let whole_outcome = whole.poll_outcome();

    let mut bytewise = Handshake::new(export(), Instant::now());
    let mut bytewise_bytes = Vec::new();
    for byte in &script {
        bytewise.feed(std::slice::from_ref(byte));
        bytewise_bytes.extend(drain(&mut bytewise));
        if bytewise.is_finished() {
            break;
        }
    }
    assert_eq!(bytewise_bytes, whole_bytes);
    let options: Vec<u32> = replies(&whole_bytes[proto::GREETING_BYTES..]).iter().map(|r| r.option).collect();
    let expected = [NBD_OPT_LIST, NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_INFO, NBD_OPT_INFO];
    assert_eq!(options[..5], expected);
    assert!(matches!(&whole_outcome, Some(Ok(Outcome::Ready(ready))) if &ready.leftover[..] == b"tail"));
    // Fed one byte at a time, the last option completes before "tail" arrives.
    assert!(matches!(bytewise.poll_outcome(), Some(Ok(Outcome::Ready(ready))) if ready.leftover.is_empty()));
}

proptest::proptest! {
    /// Arbitrary bytes from a client end the handshake in an outcome or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_handshake(
        bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400),
        valid_prefix in proptest::prelude::any::<bool>(),
    ) {
        let mut stream = if valid_prefix { 1u32.to_be_bytes().to_vec() } else { Vec::new() };
        if valid_prefix {
            stream.extend_from_slice(&proto::IHAVEOPT.to_be_bytes());
        }
        stream.extend(bytes);
        let mut handshake = Handshake::new(export(), Instant::now());
        for chunk in stream.chunks(7) {
            handshake.feed(chunk);
            drain(&mut handshake);
            if handshake.is_finished() {
                break;
            }
        }
        handshake.handle_eof();
        drain(&mut handshake);
        proptest::prop_assert!(handshake.poll_outcome().is_some());
    }
}
