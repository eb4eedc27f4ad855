//! The server side of the fixed-newstyle NBD handshake, as a sans-IO state machine.
//!
//! The driver feeds whatever bytes arrive ([`Handshake::feed`]), writes whatever the machine
//! yields ([`Handshake::poll_transmit`]) and, once every byte is written, takes the single
//! [`Handshake::poll_outcome`]: `Ready` (enter the transmission phase), `Aborted` (the client sent
//! `NBD_OPT_ABORT`; close), or a [`HandshakeError`] (close this connection only). Time comes in
//! through [`Handshake::handle_timeout`]; the machine owns its deadline ([`HANDSHAKE_DURATION_MAX`]).
//!
//! What it negotiates: `NBD_FLAG_FIXED_NEWSTYLE` and `NBD_FLAG_NO_ZEROES`; `NBD_OPT_GO` and
//! `NBD_OPT_INFO` (answering `NBD_INFO_EXPORT`, `NBD_INFO_BLOCK_SIZE` always, `NBD_INFO_NAME` and
//! `NBD_INFO_DESCRIPTION` on request), `NBD_OPT_LIST`, `NBD_OPT_ABORT` and the old
//! `NBD_OPT_EXPORT_NAME`. Every other option, including `NBD_OPT_STARTTLS` (NOTLS mode),
//! `NBD_OPT_STRUCTURED_REPLY` and the metadata-context options, gets `NBD_REP_ERR_UNSUP` and the
//! next option is parsed as usual.
//!
//! Invariants: options are handled strictly in arrival order, so a client that pipelines them
//! still gets its replies in order; no option is buffered beyond [`OPTION_DATA_BYTES_MAX`] and no
//! connection may send more than [`OPTIONS_PER_HANDSHAKE_MAX`] (the document lets a server hard
//! disconnect a client whose behaviour is a denial of service); bytes that follow the option that
//! entered the transmission phase are handed over untouched in [`Ready::leftover`].

use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use thiserror::Error;

use crate::export::{Export, BLOCK_BYTES_MAX, BLOCK_BYTES_MIN};
use crate::proto::{
    self, DecodeError, OptionHeader, TransmissionFlags, CLIENT_FLAGS_BYTES, NBD_FLAG_C_FIXED_NEWSTYLE,
    NBD_FLAG_C_NO_ZEROES, NBD_FLAG_FIXED_NEWSTYLE, NBD_FLAG_NO_ZEROES, NBD_INFO_BLOCK_SIZE,
    NBD_INFO_DESCRIPTION, NBD_INFO_NAME, NBD_OPT_ABORT, NBD_OPT_EXPORT_NAME, NBD_OPT_GO, NBD_OPT_INFO,
    NBD_OPT_LIST, NBD_REP_ACK, NBD_REP_ERR_INVALID, NBD_REP_ERR_UNKNOWN, NBD_REP_ERR_UNSUP, NBD_REP_INFO,
    NBD_REP_SERVER, OPTION_HEADER_BYTES, STRING_BYTES_MAX,
};
use crate::FEED_BYTES_MAX;

/// Most data one option may carry. The largest option served, `NBD_OPT_GO`, needs at most
/// 4 + 4096 (name) + 2 + 2 per information request; 64 KiB leaves room for long lists of
/// unknown options' data, which is read and dropped. Longer: hard disconnect.
pub const OPTION_DATA_BYTES_MAX: u32 = 64 * 1024;
/// Most options one connection may send before it is treated as a denial of service.
pub const OPTIONS_PER_HANDSHAKE_MAX: u32 = 128;
/// Longest a handshake may last, from the greeting to its outcome.
pub const HANDSHAKE_DURATION_MAX: Duration = Duration::from_secs(30);
/// Bytes of a client name kept in [`HandshakeError::UnknownExport`] for the log.
const LOGGED_NAME_BYTES_MAX: usize = 256;

/// Handshake flags the server offers.
const HANDSHAKE_FLAGS: u16 = NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES;
/// Client flags the server understands; anything else closes the connection (the document's MUST).
const CLIENT_FLAGS_KNOWN: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

/// How the client entered the transmission phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    Go,
    ExportName,
}

/// A finished handshake: everything the transmission phase needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The canonical name of the chosen export (also when the client asked for the default "").
    pub export_name: String,
    pub size_bytes: u64,
    pub page_bytes: u32,
    pub flags: TransmissionFlags,
    pub entry: Entry,
    /// The client asked for `NBD_INFO_BLOCK_SIZE` in `NBD_OPT_GO`, so it promised to obey it.
    pub block_size_requested: bool,
    /// Bytes received after the final option: the start of the transmission phase.
    pub leftover: Bytes,
}

/// How a handshake ended without an error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ready(Ready),
    /// The client sent `NBD_OPT_ABORT` (a soft disconnect); the acknowledgement was transmitted.
    Aborted,
}

/// A handshake that must end in a hard disconnect of this connection.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum HandshakeError {
    #[error("client flags {flags:#010x} include flags the server did not offer")]
    ClientFlags { flags: u32 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("option {option} carries {length} bytes, more than {OPTION_DATA_BYTES_MAX}")]
    OptionTooLong { option: u32, length: u32 },
    #[error("more than {OPTIONS_PER_HANDSHAKE_MAX} options on one connection")]
    TooManyOptions,
    #[error("NBD_OPT_EXPORT_NAME asked for unknown export {name:?}")]
    UnknownExport { name: String },
    #[error("peer closed the connection during the handshake ({pending_bytes} bytes unparsed)")]
    Disconnected { pending_bytes: usize },
    #[error("handshake did not finish within {HANDSHAKE_DURATION_MAX:?}")]
    TimedOut,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    Options,
    Done,
}

/// One connection's handshake. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Handshake {
    export: Export,
    phase: Phase,
    received: BytesMut,
    transmit: BytesMut,
    outcome: Option<Result<Outcome, HandshakeError>>,
    client_no_zeroes: bool,
    options_count: u32,
    deadline: Instant,
}

impl Handshake {
    /// Starts a handshake at `now`; the greeting is ready in `poll_transmit`.
    pub fn new(export: Export, now: Instant) -> Self {
        let mut transmit = BytesMut::new();
        transmit.extend_from_slice(&proto::encode_greeting(HANDSHAKE_FLAGS));
        Self {
            export,
            phase: Phase::ClientFlags,
            received: BytesMut::new(),
            transmit,
            outcome: None,
            client_no_zeroes: false,
            options_count: 0,
            deadline: now + HANDSHAKE_DURATION_MAX,
        }
    }

    /// Bytes received from the client, at most [`FEED_BYTES_MAX`] a call. Must not be called once
    /// the handshake is finished.
    pub fn feed(&mut self, data: &[u8]) {
        assert!(self.phase != Phase::Done, "handshake fed after it finished");
        assert!(data.len() <= FEED_BYTES_MAX, "feed of {} bytes is over FEED_BYTES_MAX", data.len());
        self.received.extend_from_slice(data);
        while self.phase != Phase::Done && self.step() {}
    }

    /// Bytes to send to the client, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.transmit.is_empty()).then(|| self.transmit.split().freeze())
    }

    /// The outcome, once, after every byte of `poll_transmit` has been taken.
    pub fn poll_outcome(&mut self) -> Option<Result<Outcome, HandshakeError>> {
        if self.transmit.is_empty() {
            self.outcome.take()
        } else {
            None
        }
    }

    /// When `handle_timeout` must be called next, while the handshake is unfinished.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.phase != Phase::Done).then_some(self.deadline)
    }

    /// Time has passed; fails the handshake once its deadline is reached.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.phase != Phase::Done && now >= self.deadline {
            self.finish(Err(HandshakeError::TimedOut));
        }
    }

    /// The client closed its side of the connection.
    pub fn handle_eof(&mut self) {
        if self.phase != Phase::Done {
            self.finish(Err(HandshakeError::Disconnected { pending_bytes: self.received.len() }));
        }
    }

    /// True once the outcome is decided (it may still wait for `poll_transmit` to drain).
    pub fn is_finished(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Parses one message if a whole one is buffered; false when more bytes are needed.
    fn step(&mut self) -> bool {
        match self.phase {
            Phase::ClientFlags => self.step_client_flags(),
            Phase::Options => self.step_option(),
            Phase::Done => false,
        }
    }

    fn step_client_flags(&mut self) -> bool {
        if self.received.len() < CLIENT_FLAGS_BYTES {
            return false;
        }
        let flags = self.received.get_u32();
        if flags & !CLIENT_FLAGS_KNOWN != 0 {
            self.finish(Err(HandshakeError::ClientFlags { flags }));
        } else {
            self.client_no_zeroes = flags & NBD_FLAG_C_NO_ZEROES != 0;
            self.phase = Phase::Options;
        }
        true
    }

    fn step_option(&mut self) -> bool {
        let Some(header) = self.received.first_chunk::<OPTION_HEADER_BYTES>() else {
            return false;
        };
        let header = match OptionHeader::decode(header) {
            Ok(header) => header,
            Err(error) => {
                self.finish(Err(error.into()));
                return true;
            }
        };
        if let Some(error) = self.refusal(header) {
            self.finish(Err(error));
            return true;
        }
        let total = OPTION_HEADER_BYTES + header.length as usize;
        if self.received.len() < total {
            self.received.reserve(total - self.received.len());
            return false;
        }
        self.received.advance(OPTION_HEADER_BYTES);
        let data = self.received.split_to(header.length as usize).freeze();
        self.options_count += 1;
        if let Some(outcome) = self.handle_option(header.option, &data) {
            self.finish(outcome);
        }
        true
    }

    /// Options closed on sight of their header, before their data is buffered.
    fn refusal(&self, header: OptionHeader) -> Option<HandshakeError> {
        if header.length > OPTION_DATA_BYTES_MAX {
            return Some(HandshakeError::OptionTooLong { option: header.option, length: header.length });
        }
        (self.options_count >= OPTIONS_PER_HANDSHAKE_MAX).then_some(HandshakeError::TooManyOptions)
    }

    /// Answers one option; `Some` when it ends the handshake.
    fn handle_option(&mut self, option: u32, data: &[u8]) -> Option<Result<Outcome, HandshakeError>> {
        match option {
            NBD_OPT_EXPORT_NAME => Some(self.export_name(data)),
            NBD_OPT_ABORT => {
                // The document: the server MUST reply with an ACK and SHOULD ignore any data.
                self.reply(option, NBD_REP_ACK, &[]);
                Some(Ok(Outcome::Aborted))
            }
            NBD_OPT_LIST => {
                self.list(data);
                None
            }
            NBD_OPT_INFO | NBD_OPT_GO => self.info_or_go(option, data),
            _ => {
                self.reply(option, NBD_REP_ERR_UNSUP, b"option not supported by this server");
                None
            }
        }
    }

    fn export_name(&mut self, name: &[u8]) -> Result<Outcome, HandshakeError> {
        if !self.export.answers_to(name) {
            // This option cannot return an error: the document requires terminating the session.
            let shown = &name[..name.len().min(LOGGED_NAME_BYTES_MAX)];
            return Err(HandshakeError::UnknownExport { name: String::from_utf8_lossy(shown).into_owned() });
        }
        let export = &self.export;
        let reply =
            proto::encode_export_name_reply(export.size_bytes(), export.flags(), self.client_no_zeroes);
        self.transmit.extend_from_slice(&reply);
        Ok(Outcome::Ready(self.ready(Entry::ExportName, false)))
    }

    fn list(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.reply(NBD_OPT_LIST, NBD_REP_ERR_INVALID, b"NBD_OPT_LIST carries no data");
            return;
        }
        let (name, description) = (self.export.name(), self.export.description());
        let mut server = Vec::with_capacity(4 + name.len() + description.len());
        server.extend_from_slice(&(name.len() as u32).to_be_bytes());
        server.extend_from_slice(name.as_bytes());
        server.extend_from_slice(description.as_bytes());
        self.reply(NBD_OPT_LIST, NBD_REP_SERVER, &server);
        self.reply(NBD_OPT_LIST, NBD_REP_ACK, &[]);
    }

    fn info_or_go(&mut self, option: u32, data: &[u8]) -> Option<Result<Outcome, HandshakeError>> {
        let Some(request) = InfoRequest::parse(data) else {
            self.reply(option, NBD_REP_ERR_INVALID, b"malformed NBD_OPT_INFO/NBD_OPT_GO data");
            return None;
        };
        if !self.export.answers_to(request.name) {
            self.reply(option, NBD_REP_ERR_UNKNOWN, b"no export of that name");
            return None;
        }
        put_export_info(&mut self.transmit, &self.export, option, &request);
        self.reply(option, NBD_REP_ACK, &[]);
        let entered = option == NBD_OPT_GO;
        entered.then(|| Ok(Outcome::Ready(self.ready(Entry::Go, request.wants(NBD_INFO_BLOCK_SIZE)))))
    }

    fn reply(&mut self, option: u32, reply_type: u32, data: &[u8]) {
        proto::put_option_reply(&mut self.transmit, option, reply_type, data);
    }

    fn ready(&self, entry: Entry, block_size_requested: bool) -> Ready {
        Ready {
            export_name: self.export.name().to_owned(),
            size_bytes: self.export.size_bytes(),
            page_bytes: self.export.page_bytes(),
            flags: self.export.flags(),
            entry,
            block_size_requested,
            leftover: Bytes::new(),
        }
    }

    fn finish(&mut self, mut outcome: Result<Outcome, HandshakeError>) {
        assert!(self.phase != Phase::Done && self.outcome.is_none(), "handshake finished twice");
        if let Ok(Outcome::Ready(ready)) = &mut outcome {
            ready.leftover = self.received.split().freeze();
        }
        self.phase = Phase::Done;
        self.outcome = Some(outcome);
    }
}

/// The `NBD_REP_INFO` replies that describe `export` to an `NBD_OPT_INFO` or `NBD_OPT_GO`.
fn put_export_info(out: &mut BytesMut, export: &Export, option: u32, request: &InfoRequest<'_>) {
    let mut info = |data: &[u8]| proto::put_option_reply(out, option, NBD_REP_INFO, data);
    info(&proto::info_export(export.size_bytes(), export.flags()));
    if request.wants(NBD_INFO_NAME) {
        info(&proto::info_string(NBD_INFO_NAME, export.name()));
    }
    if request.wants(NBD_INFO_DESCRIPTION) && !export.description().is_empty() {
        info(&proto::info_string(NBD_INFO_DESCRIPTION, export.description()));
    }
    // Sent even when not requested (the document allows it): clients that understand it learn
    // the page size as the preferred block size.
    info(&proto::info_block_size(BLOCK_BYTES_MIN, export.page_bytes(), BLOCK_BYTES_MAX));
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`: u32 name length, name, u16 count, count × u16.
struct InfoRequest<'a> {
    name: &'a [u8],
    info_types: &'a [u8],
}

impl<'a> InfoRequest<'a> {
    /// `None` for data the document calls invalid (lengths that do not add up, a name that is
    /// not a string).
    fn parse(data: &'a [u8]) -> Option<Self> {
        let (name_length, rest) = data.split_first_chunk::<4>()?;
        let name_length = u32::from_be_bytes(*name_length) as usize;
        if name_length > STRING_BYTES_MAX || name_length > rest.len() {
            return None;
        }
        let (name, rest) = rest.split_at(name_length);
        let (count, info_types) = rest.split_first_chunk::<2>()?;
        let valid_name = std::str::from_utf8(name).is_ok() && !name.contains(&0);
        let count_matches = info_types.len() == 2 * usize::from(u16::from_be_bytes(*count));
        (valid_name && count_matches).then_some(Self { name, info_types })
    }

    fn wants(&self, info_type: u16) -> bool {
        self.info_types.chunks_exact(2).any(|pair| u16::from_be_bytes([pair[0], pair[1]]) == info_type)
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
