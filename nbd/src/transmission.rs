//! The transmission phase, server side: a sans-IO request decoder and simple-reply encoders.
//!
//! The driver feeds received bytes ([`RequestDecoder::feed`], at most [`FEED_BYTES_MAX`] a call)
//! and drains [`RequestDecoder::poll_event`] until it returns `None` before feeding again. Each
//! event is a validated [`Request`] to carry out, a [`Rejection`] to answer at once with its NBD
//! error (the stream stays framed), or [`Event::Disconnect`] (`NBD_CMD_DISC`: finish what is in
//! flight, then close). A [`TransmissionError`] means the stream can no longer be framed or the
//! client broke a mandatory rule: close the connection.
//!
//! Validation follows the protocol document's error rules:
//!
//! | request                                                  | answer           |
//! |----------------------------------------------------------|------------------|
//! | unknown type, `NBD_CMD_BLOCK_STATUS`, `NBD_CMD_RESIZE`   | `NBD_EINVAL`     |
//! | FLUSH / TRIM / WRITE_ZEROES not advertised               | `NBD_EINVAL`     |
//! | a flag not valid for the command or not advertised       | `NBD_EINVAL`     |
//! | WRITE / TRIM / WRITE_ZEROES on a read-only export        | `NBD_EPERM`      |
//! | FLUSH with a nonzero offset or length                    | `NBD_EINVAL`     |
//! | READ / WRITE / CACHE / WRITE_ZEROES over the max block   | `NBD_EINVAL`     |
//! | WRITE / WRITE_ZEROES past the end of the export          | `NBD_ENOSPC`     |
//! | READ / TRIM / CACHE past the end of the export           | `NBD_EINVAL`     |
//! | WRITE longer than [`WRITE_SKIP_BYTES_MAX`]                | close            |
//! | bad request magic                                        | close            |
//!
//! A rejected WRITE's payload is skipped without being buffered, so framing survives. Replies are
//! simple replies only: structured replies are never negotiated.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;

use crate::export::BLOCK_BYTES_MAX;
use crate::handshake::Ready;
use crate::proto::{
    DecodeError, ErrorCode, RequestHeader, SimpleReplyHeader, TransmissionFlags, NBD_CMD_BLOCK_STATUS,
    NBD_CMD_CACHE, NBD_CMD_DISC, NBD_CMD_FLAG_FUA, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_FLUSH, NBD_CMD_READ,
    NBD_CMD_RESIZE, NBD_CMD_TRIM, NBD_CMD_WRITE, NBD_CMD_WRITE_ZEROES, NBD_FLAG_READ_ONLY,
    NBD_FLAG_SEND_FLUSH, NBD_FLAG_SEND_FUA, NBD_FLAG_SEND_TRIM, NBD_FLAG_SEND_WRITE_ZEROES,
    REQUEST_HEADER_BYTES, SIMPLE_REPLY_HEADER_BYTES,
};
use crate::FEED_BYTES_MAX;

/// Longest WRITE whose payload is skipped (and answered `NBD_EINVAL`) when it is over
/// [`BLOCK_BYTES_MAX`]; a longer one is a denial of service and closes the connection, as the
/// document allows for payloads of 2^25 bytes and more.
pub const WRITE_SKIP_BYTES_MAX: u32 = 2 * BLOCK_BYTES_MAX;
/// Most bytes the decoder holds when the driver keeps its contract: one partial WRITE payload and
/// one feed.
pub const RECEIVE_BUFFER_BYTES_MAX: usize = REQUEST_HEADER_BYTES + BLOCK_BYTES_MAX as usize + FEED_BYTES_MAX;

/// A command this server carries out. `NBD_CMD_DISC` is [`Event::Disconnect`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    Read,
    Write,
    Flush,
    Trim,
    Cache,
    WriteZeroes,
}

impl Command {
    fn from_type(command_type: u16) -> Option<Self> {
        match command_type {
            NBD_CMD_READ => Some(Self::Read),
            NBD_CMD_WRITE => Some(Self::Write),
            NBD_CMD_FLUSH => Some(Self::Flush),
            NBD_CMD_TRIM => Some(Self::Trim),
            NBD_CMD_CACHE => Some(Self::Cache),
            NBD_CMD_WRITE_ZEROES => Some(Self::WriteZeroes),
            _ => None,
        }
    }

    /// Commands that change the export (refused on a read-only one).
    fn changes_data(self) -> bool {
        matches!(self, Self::Write | Self::Trim | Self::WriteZeroes)
    }

    /// Commands whose length the advertised maximum block size bounds: those that carry the
    /// bytes (READ, WRITE) or would read them (CACHE). TRIM and WRITE_ZEROES carry none, and
    /// clients send them far larger (nbdcopy zeroes the rest of a device in one request), so
    /// only the export's size bounds them.
    fn length_bounded(self) -> bool {
        matches!(self, Self::Read | Self::Write | Self::Cache)
    }
}

/// A validated request: its range lies inside the export and its flags were advertised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Echoed in the reply (the document's "handle", newer versions' "cookie").
    pub handle: u64,
    pub command: Command,
    /// `NBD_CMD_FLAG_*` bits, each valid for this command.
    pub flags: u16,
    pub offset: u64,
    pub length: u32,
    /// The payload of a WRITE (`length` bytes); empty for every other command.
    pub data: Bytes,
}

impl Request {
    /// `NBD_CMD_FLAG_FUA`: reply only once this command's writes are durable (VDL covers them).
    pub fn fua(&self) -> bool {
        self.flags & NBD_CMD_FLAG_FUA != 0
    }
}

/// Why a request was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RejectReason {
    UnknownCommand,
    NotNegotiated,
    BadFlags,
    ReadOnly,
    ReservedNotZero,
    TooLong,
    OutOfRange,
}

/// A request answered with an error and otherwise ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub handle: u64,
    pub command_type: u16,
    pub error: ErrorCode,
    pub reason: RejectReason,
}

impl Rejection {
    /// The simple reply that answers it.
    pub fn reply(&self) -> Bytes {
        simple_reply(self.handle, Err(self.error))
    }
}

/// What the decoder found next in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Request(Request),
    Rejected(Rejection),
    /// `NBD_CMD_DISC`: no reply; finish outstanding requests, then close.
    Disconnect,
}

/// The connection must be closed.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum TransmissionError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("WRITE {handle:#x} of {length} bytes is over the {WRITE_SKIP_BYTES_MAX}-byte bound")]
    WriteTooLong { handle: u64, length: u32 },
    #[error("peer closed the connection inside a request ({pending_bytes} bytes unparsed)")]
    Truncated { pending_bytes: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Header,
    Payload(RequestHeader),
    Skip { remaining: u32 },
    Closed,
}

/// Decodes and validates the requests of one connection. See the module docs for the contract.
#[derive(Debug)]
pub struct RequestDecoder {
    size_bytes: u64,
    flags: TransmissionFlags,
    state: State,
    received: BytesMut,
}

impl RequestDecoder {
    /// A decoder for an export of `size_bytes` advertised with `flags`.
    pub fn new(size_bytes: u64, flags: TransmissionFlags) -> Self {
        Self { size_bytes, flags, state: State::Header, received: BytesMut::new() }
    }

    /// A decoder for the export a handshake chose, already fed the bytes that followed it.
    pub fn after(ready: &Ready) -> Self {
        let mut decoder = Self::new(ready.size_bytes, ready.flags);
        decoder.feed(&ready.leftover);
        decoder
    }

    /// Bytes received from the client; dropped once the decoder is closed.
    pub fn feed(&mut self, data: &[u8]) {
        assert!(data.len() <= FEED_BYTES_MAX, "feed of {} bytes is over FEED_BYTES_MAX", data.len());
        if self.state == State::Closed {
            return;
        }
        assert!(
            self.received.len() + data.len() <= RECEIVE_BUFFER_BYTES_MAX,
            "decoder fed again before poll_event was drained"
        );
        self.received.extend_from_slice(data);
    }

    /// The next event, or `None` when more bytes are needed (or the decoder is closed).
    pub fn poll_event(&mut self) -> Option<Result<Event, TransmissionError>> {
        loop {
            match self.state {
                State::Closed => return None,
                State::Skip { remaining } => {
                    let skipped = self.received.len().min(remaining as usize);
                    self.received.advance(skipped);
                    let left = remaining - skipped as u32;
                    if left > 0 {
                        self.state = State::Skip { remaining: left };
                        return None;
                    }
                    self.state = State::Header;
                }
                State::Payload(header) => return self.payload(header),
                State::Header => {
                    let header = self.received.first_chunk::<REQUEST_HEADER_BYTES>()?;
                    let decoded = RequestHeader::decode(header);
                    self.received.advance(REQUEST_HEADER_BYTES);
                    match decoded {
                        Ok(header) => {
                            if let Some(event) = self.on_header(header) {
                                return Some(event);
                            }
                        }
                        Err(error) => return Some(Err(self.close(error.into()))),
                    }
                }
            }
        }
    }

    /// The client closed its side. A close between requests is a hard disconnect and fine; one
    /// inside a request is reported.
    pub fn handle_eof(&mut self) -> Result<(), TransmissionError> {
        let at_boundary =
            self.state == State::Closed || (self.state == State::Header && self.received.is_empty());
        let pending_bytes = self.received.len();
        self.state = State::Closed;
        self.received.clear();
        if at_boundary {
            Ok(())
        } else {
            Err(TransmissionError::Truncated { pending_bytes })
        }
    }

    /// True after `NBD_CMD_DISC` or a fatal error: nothing more will be decoded.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    fn close(&mut self, error: TransmissionError) -> TransmissionError {
        self.state = State::Closed;
        self.received.clear();
        error
    }

    /// Validates a header; `None` when a WRITE payload must be read before the event is ready.
    fn on_header(&mut self, header: RequestHeader) -> Option<Result<Event, TransmissionError>> {
        if header.command_type == NBD_CMD_DISC {
            self.state = State::Closed;
            self.received.clear();
            return Some(Ok(Event::Disconnect));
        }
        let is_write = header.command_type == NBD_CMD_WRITE;
        if is_write && header.length > WRITE_SKIP_BYTES_MAX {
            let error = TransmissionError::WriteTooLong { handle: header.handle, length: header.length };
            return Some(Err(self.close(error)));
        }
        match self.check(&header) {
            Ok(Command::Write) => {
                self.received.reserve((header.length as usize).saturating_sub(self.received.len()));
                self.state = State::Payload(header);
                None
            }
            Ok(command) => Some(Ok(Event::Request(request(&header, command, Bytes::new())))),
            Err((error, reason)) => {
                if is_write {
                    self.state = State::Skip { remaining: header.length };
                }
                let handle = header.handle;
                Some(Ok(Event::Rejected(Rejection {
                    handle,
                    command_type: header.command_type,
                    error,
                    reason,
                })))
            }
        }
    }

    fn payload(&mut self, header: RequestHeader) -> Option<Result<Event, TransmissionError>> {
        let length = header.length as usize;
        if self.received.len() < length {
            return None;
        }
        let data = self.received.split_to(length).freeze();
        self.state = State::Header;
        Some(Ok(Event::Request(request(&header, Command::Write, data))))
    }

    /// The document's validation rules, in the order of the module table.
    fn check(&self, header: &RequestHeader) -> Result<Command, (ErrorCode, RejectReason)> {
        let command = Command::from_type(header.command_type).ok_or_else(|| unknown(header.command_type))?;
        if !self.negotiated(command) {
            return Err((ErrorCode::Inval, RejectReason::NotNegotiated));
        }
        if header.flags & !self.flags_allowed(command) != 0 {
            return Err((ErrorCode::Inval, RejectReason::BadFlags));
        }
        if command.changes_data() && self.flags.contains(NBD_FLAG_READ_ONLY) {
            return Err((ErrorCode::Perm, RejectReason::ReadOnly));
        }
        if command == Command::Flush && (header.offset != 0 || header.length != 0) {
            return Err((ErrorCode::Inval, RejectReason::ReservedNotZero));
        }
        if command.length_bounded() && header.length > BLOCK_BYTES_MAX {
            return Err((ErrorCode::Inval, RejectReason::TooLong));
        }
        if !self.in_range(header.offset, header.length) {
            let error = match command {
                Command::Write | Command::WriteZeroes => ErrorCode::NoSpc,
                _ => ErrorCode::Inval,
            };
            return Err((error, RejectReason::OutOfRange));
        }
        Ok(command)
    }

    fn negotiated(&self, command: Command) -> bool {
        match command {
            Command::Read | Command::Write => true,
            // Clients exist that send CACHE without NBD_FLAG_SEND_CACHE; it is a harmless hint.
            Command::Cache => true,
            Command::Flush => self.flags.contains(NBD_FLAG_SEND_FLUSH),
            Command::Trim => self.flags.contains(NBD_FLAG_SEND_TRIM),
            Command::WriteZeroes => self.flags.contains(NBD_FLAG_SEND_WRITE_ZEROES),
        }
    }

    fn flags_allowed(&self, command: Command) -> u16 {
        let fua = if self.flags.contains(NBD_FLAG_SEND_FUA) { NBD_CMD_FLAG_FUA } else { 0 };
        let no_hole = if command == Command::WriteZeroes { NBD_CMD_FLAG_NO_HOLE } else { 0 };
        fua | no_hole
    }

    fn in_range(&self, offset: u64, length: u32) -> bool {
        offset.checked_add(u64::from(length)).is_some_and(|end| end <= self.size_bytes)
    }
}

fn unknown(command_type: u16) -> (ErrorCode, RejectReason) {
    match command_type {
        // Known to the document but never negotiated: no metadata context, no resize extension.
        NBD_CMD_BLOCK_STATUS | NBD_CMD_RESIZE => (ErrorCode::Inval, RejectReason::NotNegotiated),
        _ => (ErrorCode::Inval, RejectReason::UnknownCommand),
    }
}

fn request(header: &RequestHeader, command: Command, data: Bytes) -> Request {
    Request {
        handle: header.handle,
        command,
        flags: header.flags,
        offset: header.offset,
        length: header.length,
        data,
    }
}

/// A simple reply without data: success, or the error of any command (a failed READ included).
pub fn simple_reply(handle: u64, result: Result<(), ErrorCode>) -> Bytes {
    let error = result.err();
    Bytes::copy_from_slice(&SimpleReplyHeader { error, handle }.encode())
}

/// The successful simple reply to a READ, assembled in one buffer: the header, then exactly
/// `length` bytes pushed in order (page slices from the reader, zeroes for absent pages).
#[derive(Debug)]
pub struct ReadReply {
    buffer: BytesMut,
    missing: usize,
}

impl ReadReply {
    pub fn new(handle: u64, length: u32) -> Self {
        assert!(length <= BLOCK_BYTES_MAX, "READ of {length} bytes passed validation");
        let mut buffer = BytesMut::with_capacity(SIMPLE_REPLY_HEADER_BYTES + length as usize);
        buffer.put_slice(&SimpleReplyHeader { error: None, handle }.encode());
        Self { buffer, missing: length as usize }
    }

    /// Appends the next bytes of the data.
    pub fn push(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.missing, "READ reply overfilled");
        self.missing -= bytes.len();
        self.buffer.put_slice(bytes);
    }

    /// Appends `count` zero bytes (a page never written, or trimmed).
    pub fn push_zeroes(&mut self, count: usize) {
        assert!(count <= self.missing, "READ reply overfilled");
        self.missing -= count;
        self.buffer.put_bytes(0, count);
    }

    /// The reply bytes; every requested byte must have been pushed.
    pub fn finish(self) -> Bytes {
        assert!(self.missing == 0, "READ reply is {} bytes short", self.missing);
        self.buffer.freeze()
    }
}

#[cfg(test)]
#[path = "transmission_tests.rs"]
mod tests;
