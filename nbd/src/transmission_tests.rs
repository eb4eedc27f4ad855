//! Request decoding and validation, fed as a client would send it.

use proptest::prelude::*;

use super::*;
use crate::export::DEFAULT_FLAGS;
use crate::proto::{NBD_CMD_FLAG_DF, NBD_CMD_FLAG_FAST_ZERO, NBD_REQUEST_MAGIC};

const SIZE_BYTES: u64 = 1 << 20;

fn decoder(flags: u16) -> RequestDecoder {
    RequestDecoder::new(SIZE_BYTES, TransmissionFlags::from_bits(flags))
}

fn request_bytes(command_type: u16, flags: u16, handle: u64, offset: u64, length: u32) -> Vec<u8> {
    RequestHeader { flags, command_type, handle, offset, length }.encode().to_vec()
}

fn write_bytes(handle: u64, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = request_bytes(NBD_CMD_WRITE, 0, handle, offset, data.len() as u32);
    out.extend_from_slice(data);
    out
}

fn events(decoder: &mut RequestDecoder, bytes: &[u8]) -> Vec<Result<Event, TransmissionError>> {
    let mut out = Vec::new();
    for chunk in bytes.chunks(FEED_BYTES_MAX) {
        decoder.feed(chunk);
        while let Some(event) = decoder.poll_event() {
            out.push(event);
        }
    }
    out
}

fn one_event(flags: u16, bytes: &[u8]) -> Event {
    let mut got = events(&mut decoder(flags), bytes);
    assert_eq!(got.len(), 1, "{got:?}");
    got.remove(0).unwrap()
}

fn rejected(flags: u16, bytes: &[u8]) -> (ErrorCode, RejectReason) {
    match one_event(flags, bytes) {
        Event::Rejected(rejection) => (rejection.error, rejection.reason),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn expect_request(event: Event) -> Request {
    match event {
        Event::Request(request) => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

#[test]
fn each_served_command_decodes_to_its_request() {
    let cases = [
        (NBD_CMD_READ, NBD_CMD_FLAG_FUA, Command::Read, 4096, 512),
        (NBD_CMD_FLUSH, 0, Command::Flush, 0, 0),
        (NBD_CMD_TRIM, NBD_CMD_FLAG_FUA, Command::Trim, 1, SIZE_BYTES as u32 - 1),
        (NBD_CMD_CACHE, 0, Command::Cache, 0, 65536),
        (NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, Command::WriteZeroes, 7, 9),
    ];
    for (command_type, flags, command, offset, length) in cases {
        let request =
            expect_request(one_event(DEFAULT_FLAGS, &request_bytes(command_type, flags, 42, offset, length)));
        let expected = Request { handle: 42, command, flags, offset, length, data: Bytes::new() };
        assert_eq!(request, expected);
    }
}

#[test]
fn a_write_carries_its_payload_and_the_next_request_follows() {
    let mut bytes = write_bytes(1, 100, b"hello");
    bytes.extend(request_bytes(NBD_CMD_READ, 0, 2, 100, 5));
    let got = events(&mut decoder(DEFAULT_FLAGS), &bytes);
    let write = expect_request(got[0].clone().unwrap());
    assert_eq!((write.command, write.offset, &write.data[..]), (Command::Write, 100, &b"hello"[..]));
    assert!(!write.fua());
    assert_eq!(expect_request(got[1].clone().unwrap()).handle, 2);
}

#[test]
fn disc_ends_decoding_and_later_bytes_are_dropped() {
    let mut decoder = decoder(DEFAULT_FLAGS);
    let mut bytes = request_bytes(NBD_CMD_DISC, 0, 9, 0, 0);
    bytes.extend(request_bytes(NBD_CMD_READ, 0, 10, 0, 1));
    assert_eq!(events(&mut decoder, &bytes), [Ok(Event::Disconnect)]);
    assert!(decoder.is_closed());
    assert_eq!(events(&mut decoder, &request_bytes(NBD_CMD_READ, 0, 11, 0, 1)), []);
    assert_eq!(decoder.handle_eof(), Ok(()));
}

#[test]
fn a_bad_magic_is_a_protocol_error_that_closes() {
    let mut decoder = decoder(DEFAULT_FLAGS);
    let mut bytes = request_bytes(NBD_CMD_READ, 0, 1, 0, 1);
    bytes[..4].copy_from_slice(&(NBD_REQUEST_MAGIC + 1).to_be_bytes());
    let error = DecodeError::RequestMagic { found: NBD_REQUEST_MAGIC + 1 };
    assert_eq!(events(&mut decoder, &bytes), [Err(TransmissionError::Decode(error))]);
    assert!(decoder.is_closed());
}

#[test]
fn out_of_range_requests_get_einval_or_enospc_as_the_document_says() {
    let past_end = |command_type| request_bytes(command_type, 0, 1, SIZE_BYTES - 1, 2);
    let out_of_range = RejectReason::OutOfRange;
    assert_eq!(rejected(DEFAULT_FLAGS, &past_end(NBD_CMD_READ)), (ErrorCode::Inval, out_of_range));
    assert_eq!(rejected(DEFAULT_FLAGS, &past_end(NBD_CMD_TRIM)), (ErrorCode::Inval, out_of_range));
    assert_eq!(rejected(DEFAULT_FLAGS, &past_end(NBD_CMD_CACHE)), (ErrorCode::Inval, out_of_range));
    assert_eq!(rejected(DEFAULT_FLAGS, &past_end(NBD_CMD_WRITE_ZEROES)), (ErrorCode::NoSpc, out_of_range));
    let overflow = request_bytes(NBD_CMD_READ, 0, 1, u64::MAX, 1);
    assert_eq!(rejected(DEFAULT_FLAGS, &overflow), (ErrorCode::Inval, out_of_range));
    let at_end = request_bytes(NBD_CMD_READ, 0, 1, SIZE_BYTES, 0);
    assert_eq!(expect_request(one_event(DEFAULT_FLAGS, &at_end)).length, 0);
}

#[test]
fn an_out_of_range_write_gets_enospc_and_keeps_framing() {
    let mut bytes = write_bytes(1, SIZE_BYTES - 2, b"abc");
    bytes.extend(write_bytes(2, 0, b"ok"));
    let got = events(&mut decoder(DEFAULT_FLAGS), &bytes);
    let rejection = Rejection {
        handle: 1,
        command_type: NBD_CMD_WRITE,
        error: ErrorCode::NoSpc,
        reason: RejectReason::OutOfRange,
    };
    assert_eq!(got[0], Ok(Event::Rejected(rejection)));
    assert_eq!(&expect_request(got[1].clone().unwrap()).data[..], b"ok");
}

#[test]
fn unknown_and_unnegotiated_commands_get_einval() {
    let unknown = request_bytes(99, 0, 1, 0, 0);
    assert_eq!(rejected(DEFAULT_FLAGS, &unknown), (ErrorCode::Inval, RejectReason::UnknownCommand));
    let status = request_bytes(NBD_CMD_BLOCK_STATUS, 0, 1, 0, 512);
    assert_eq!(rejected(DEFAULT_FLAGS, &status), (ErrorCode::Inval, RejectReason::NotNegotiated));
    let bare = NBD_FLAG_SEND_FUA;
    for command_type in [NBD_CMD_FLUSH, NBD_CMD_TRIM, NBD_CMD_WRITE_ZEROES] {
        let bytes = request_bytes(command_type, 0, 1, 0, 0);
        assert_eq!(rejected(bare, &bytes), (ErrorCode::Inval, RejectReason::NotNegotiated));
    }
    let cache = request_bytes(NBD_CMD_CACHE, 0, 1, 0, 8);
    assert_eq!(expect_request(one_event(bare, &cache)).command, Command::Cache);
}

#[test]
fn flags_not_valid_for_the_command_or_not_advertised_get_einval() {
    let bad = [
        (DEFAULT_FLAGS, request_bytes(NBD_CMD_READ, NBD_CMD_FLAG_DF, 1, 0, 1)),
        (DEFAULT_FLAGS, request_bytes(NBD_CMD_READ, NBD_CMD_FLAG_NO_HOLE, 1, 0, 1)),
        (DEFAULT_FLAGS, request_bytes(NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_FAST_ZERO, 1, 0, 1)),
        (DEFAULT_FLAGS, request_bytes(NBD_CMD_TRIM, 1 << 15, 1, 0, 1)),
        (DEFAULT_FLAGS & !NBD_FLAG_SEND_FUA, request_bytes(NBD_CMD_READ, NBD_CMD_FLAG_FUA, 1, 0, 1)),
    ];
    for (flags, bytes) in bad {
        assert_eq!(rejected(flags, &bytes), (ErrorCode::Inval, RejectReason::BadFlags));
    }
}

#[test]
fn a_flush_with_nonzero_reserved_fields_gets_einval() {
    let bytes = request_bytes(NBD_CMD_FLUSH, 0, 1, 8, 0);
    assert_eq!(rejected(DEFAULT_FLAGS, &bytes), (ErrorCode::Inval, RejectReason::ReservedNotZero));
}

#[test]
fn a_read_only_export_refuses_changes_with_eperm_and_skips_write_payloads() {
    let read_only = DEFAULT_FLAGS | NBD_FLAG_READ_ONLY;
    let mut bytes = write_bytes(1, 0, &[5; 700]);
    bytes.extend(request_bytes(NBD_CMD_TRIM, 0, 2, 0, 512));
    bytes.extend(request_bytes(NBD_CMD_WRITE_ZEROES, 0, 3, 0, 512));
    bytes.extend(request_bytes(NBD_CMD_READ, 0, 4, 0, 512));
    let got = events(&mut decoder(read_only), &bytes);
    for event in &got[..3] {
        assert!(matches!(event, Ok(Event::Rejected(Rejection { error: ErrorCode::Perm, .. }))), "{event:?}");
    }
    assert_eq!(expect_request(got[3].clone().unwrap()).handle, 4);
}

#[test]
fn requests_over_the_maximum_block_size_get_einval_but_a_long_trim_or_zeroing_is_served() {
    for command_type in [NBD_CMD_READ, NBD_CMD_CACHE] {
        let mut decoder = RequestDecoder::new(u64::MAX, TransmissionFlags::from_bits(DEFAULT_FLAGS));
        let got = events(&mut decoder, &request_bytes(command_type, 0, 1, 0, BLOCK_BYTES_MAX + 1));
        assert!(matches!(got[..], [Ok(Event::Rejected(Rejection { reason: RejectReason::TooLong, .. }))]));
    }
    let mut decoder = RequestDecoder::new(u64::MAX, TransmissionFlags::from_bits(DEFAULT_FLAGS));
    let trim = events(&mut decoder, &request_bytes(NBD_CMD_TRIM, 0, 1, 0, u32::MAX));
    assert_eq!(expect_request(trim[0].clone().unwrap()).length, u32::MAX);
    let zeroes = events(&mut decoder, &request_bytes(NBD_CMD_WRITE_ZEROES, 0, 2, 0, u32::MAX));
    assert_eq!(expect_request(zeroes[0].clone().unwrap()).length, u32::MAX);
}

#[test]
fn an_oversized_write_is_skipped_up_to_the_bound_and_closes_beyond_it() {
    let mut decoder = RequestDecoder::new(u64::MAX, TransmissionFlags::from_bits(DEFAULT_FLAGS));
    let length = BLOCK_BYTES_MAX + 1;
    let mut bytes = request_bytes(NBD_CMD_WRITE, 0, 1, 0, length);
    bytes.resize(bytes.len() + length as usize, 0xab);
    bytes.extend(request_bytes(NBD_CMD_FLUSH, 0, 2, 0, 0));
    let got = events(&mut decoder, &bytes);
    assert!(matches!(got[0], Ok(Event::Rejected(Rejection { reason: RejectReason::TooLong, .. }))));
    assert_eq!(expect_request(got[1].clone().unwrap()).command, Command::Flush);

    let length = WRITE_SKIP_BYTES_MAX + 1;
    let got = events(&mut decoder, &request_bytes(NBD_CMD_WRITE, 0, 3, 0, length));
    assert_eq!(got, [Err(TransmissionError::WriteTooLong { handle: 3, length })]);
    assert!(decoder.is_closed());
}

#[test]
fn an_eof_inside_a_request_is_reported_and_one_between_requests_is_not() {
    let mut decoder = decoder(DEFAULT_FLAGS);
    let bytes = write_bytes(1, 0, b"abcdef");
    decoder.feed(&bytes[..bytes.len() - 2]);
    assert_eq!(decoder.poll_event(), None);
    assert_eq!(decoder.handle_eof(), Err(TransmissionError::Truncated { pending_bytes: 4 }));
    let mut idle = self::decoder(DEFAULT_FLAGS);
    assert_eq!(idle.handle_eof(), Ok(()));
}

#[test]
fn replies_have_the_simple_reply_layout() {
    let ok = simple_reply(7, Ok(()));
    assert_eq!(
        SimpleReplyHeader::decode(ok[..].try_into().unwrap()).unwrap(),
        SimpleReplyHeader { error: None, handle: 7 }
    );
    let rejection = Rejection {
        handle: 8,
        command_type: 99,
        error: ErrorCode::Inval,
        reason: RejectReason::UnknownCommand,
    };
    assert_eq!(&rejection.reply()[4..8], &22u32.to_be_bytes());
    let mut read = ReadReply::new(9, 6);
    read.push(b"abc");
    read.push_zeroes(3);
    let read = read.finish();
    assert_eq!(&read[..4], &0x6744_6698u32.to_be_bytes());
    assert_eq!(&read[8..16], &9u64.to_be_bytes());
    assert_eq!(&read[16..], b"abc\0\0\0");
}

#[test]
#[should_panic(expected = "short")]
fn a_read_reply_missing_bytes_is_a_driver_bug() {
    ReadReply::new(1, 4).finish();
}

#[test]
fn the_decoder_after_a_handshake_starts_with_its_leftover_bytes() {
    let ready = Ready {
        export_name: "v".into(),
        size_bytes: SIZE_BYTES,
        page_bytes: 4096,
        flags: TransmissionFlags::from_bits(DEFAULT_FLAGS),
        entry: crate::handshake::Entry::Go,
        block_size_requested: true,
        leftover: Bytes::from(request_bytes(NBD_CMD_READ, 0, 5, 0, 1)),
    };
    let mut decoder = RequestDecoder::after(&ready);
    assert_eq!(expect_request(decoder.poll_event().unwrap().unwrap()).handle, 5);
}

fn arbitrary_request() -> impl Strategy<Value = (u16, u16, u64, u64, Vec<u8>)> {
    let command = prop_oneof![
        Just(NBD_CMD_READ),
        Just(NBD_CMD_WRITE),
        Just(NBD_CMD_FLUSH),
        Just(NBD_CMD_TRIM),
        Just(NBD_CMD_CACHE),
        Just(NBD_CMD_WRITE_ZEROES),
        Just(99u16),
    ];
    let flags =
        prop_oneof![Just(0u16), Just(NBD_CMD_FLAG_FUA), Just(NBD_CMD_FLAG_NO_HOLE), Just(NBD_CMD_FLAG_DF)];
    (command, flags, any::<u64>(), 0..SIZE_BYTES + 64, proptest::collection::vec(any::<u8>(), 0..300))
}

proptest! {
    /// However the stream is cut, every request yields exactly one event, in order, and a WRITE
    /// comes back with exactly the bytes that followed its header.
    #[test]
    fn any_request_stream_cut_anywhere_decodes_one_event_per_request(
        requests in proptest::collection::vec(arbitrary_request(), 1..12),
        cut in 1usize..97,
    ) {
        let mut bytes = Vec::new();
        for (command_type, flags, handle, offset, data) in &requests {
            let length = if *command_type == NBD_CMD_WRITE { data.len() as u32 } else { data.len() as u32 * 7 };
            let offset = if *command_type == NBD_CMD_FLUSH { 0 } else { *offset };
            let length = if *command_type == NBD_CMD_FLUSH { 0 } else { length };
            bytes.extend(request_bytes(*command_type, *flags, *handle, offset, length));
            if *command_type == NBD_CMD_WRITE {
                bytes.extend_from_slice(data);
            }
        }
        let mut decoder = decoder(DEFAULT_FLAGS);
        let mut got = Vec::new();
        for chunk in bytes.chunks(cut) {
            decoder.feed(chunk);
            while let Some(event) = decoder.poll_event() {
                got.push(event.unwrap());
            }
        }
        prop_assert_eq!(got.len(), requests.len());
        for (event, (command_type, _, handle, _, data)) in got.iter().zip(&requests) {
            match event {
                Event::Request(request) => {
                    prop_assert_eq!(request.handle, *handle);
                    let in_range = request.offset + u64::from(request.length) <= SIZE_BYTES;
                    prop_assert!(in_range);
                    if *command_type == NBD_CMD_WRITE {
                        prop_assert_eq!(&request.data[..], &data[..]);
                    }
                }
                Event::Rejected(rejection) => prop_assert_eq!(rejection.handle, *handle),
                Event::Disconnect => prop_assert!(false, "no DISC was sent"),
            }
        }
        prop_assert_eq!(decoder.handle_eof(), Ok(()));
    }
}

proptest! {
    /// Arbitrary bytes from a peer give events or one error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(
        bytes in proptest::collection::vec(any::<u8>(), 0..400),
        magic_first in any::<bool>(),
    ) {
        let mut stream = if magic_first { NBD_REQUEST_MAGIC.to_be_bytes().to_vec() } else { Vec::new() };
        stream.extend(bytes);
        let mut decoder = decoder(DEFAULT_FLAGS);
        let got = events(&mut decoder, &stream);
        prop_assert!(got.iter().filter(|event| event.is_err()).count() <= 1);
        let _ = decoder.handle_eof();
    }
}
