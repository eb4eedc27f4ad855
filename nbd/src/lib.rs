//! The sans-IO core of the Borealis NBD gateway: serve a Borealis volume as a Network Block
//! Device to qemu-img, qemu-io, nbdcopy, nbdinfo, fio's nbd engine and the Linux kernel.
//!
//! No sockets, no clock, no async: each piece takes bytes (and time) in and gives bytes and
//! decisions out, so it is unit-tested here and driven unchanged by the tokio driver and by the
//! simulator. Every constant comes from the NBD protocol document (`NetworkBlockDevice/nbd`,
//! `doc/proto.md`) and is named as there in [`proto`].
//!
//! # Pieces
//!
//! - [`proto`]: constants, byte layouts and codecs of the fixed headers (greeting, options,
//!   option replies, requests, simple replies).
//! - [`export`]: the one export served (name, size, page size, transmission flags), validated,
//!   and the block size bounds advertised for it.
//! - [`handshake`]: the fixed-newstyle handshake state machine (`NBD_OPT_GO`, `INFO`, `LIST`,
//!   `ABORT`, `EXPORT_NAME`; everything else `NBD_REP_ERR_UNSUP`).
//! - [`transmission`]: the request decoder with the document's per-request validation, and the
//!   simple-reply encoders.
//! - [`mapping`]: byte ranges → page ops (`Image`, `Patch`, `Zero`, `Trim`) and read spans.
//! - [`overlay`]: the ops appended but not yet durable, by page, so a WRITE is answered once
//!   appended and still seen by every later READ at VDL.
//!
//! # What the driver does with them
//!
//! Per connection (TCP with `TCP_NODELAY`, or a Unix socket):
//!
//! 1. `Handshake::new(export, now)`. Loop: write every `poll_transmit()`; stop at
//!    `poll_outcome()`; otherwise wait for the socket (read at most [`FEED_BYTES_MAX`], then
//!    `feed`, or `handle_eof` on EOF) or for `poll_timeout()` (then `handle_timeout`). `Aborted` or
//!    an error: close this connection only.
//! 2. On `Ready`: `RequestDecoder::after(&ready)` (it takes the bytes that followed the final
//!    option) and `PageGeometry::new(ready.page_bytes)`. Loop: read, `feed`, drain `poll_event`.
//! 3. Per event:
//!    - READ: for each span of `read_spans`, read the page at VDL through the volume's reader,
//!      overlaid with the gateway's own writes not yet durable; push the span's bytes (or
//!      zeroes for a page never written) into a `ReadReply`; send it. A failure: `simple_reply`
//!      with `NBD_EIO` and no data.
//!    - WRITE / WRITE_ZEROES / TRIM: append one record per `PageOp` through the volume's
//!      `Writer` (`PageImage`, `PagePatch`, `PageZero`, `PageTrim`); reply once appended, or
//!      once VDL covers them when `fua()`.
//!    - FLUSH: end the atomic group with a CPL and reply once VDL covers every write already
//!      replied to (the document's FLUSH rule).
//!    - CACHE: reply success (a prefetch hint at most).
//!    - `Rejected`: send `rejection.reply()` at once. `Disconnect`: finish what is in flight,
//!      then close. A `TransmissionError`: close.
//!
//! Replies may leave out of order; the driver bounds requests in flight and stops reading the
//! socket while at the bound. `NBD_FLAG_CAN_MULTI_CONN` may be advertised only when every
//! connection to a volume shares one `Writer` (and its overlay), so a FLUSH anywhere covers all.
//!
//! # Negotiated and refused
//!
//! Negotiated: fixed newstyle, `NO_ZEROES`, `GO`/`INFO` with `NBD_INFO_EXPORT`, `NAME`,
//! `DESCRIPTION` and `BLOCK_SIZE` (minimum 1, preferred = page size, maximum 32 MiB), `LIST`,
//! `ABORT`, `EXPORT_NAME`; commands READ, WRITE, DISC, FLUSH, TRIM, CACHE, WRITE_ZEROES (with
//! `NO_HOLE`) and the FUA flag. Refused: TLS (`NBD_OPT_STARTTLS` → `NBD_REP_ERR_UNSUP`, NOTLS
//! mode), structured replies (so no BLOCK_STATUS, metadata contexts or `NBD_CMD_FLAG_DF`: every
//! reply is a simple reply), `NBD_FLAG_SEND_FAST_ZERO`, RESIZE, extended headers, oldstyle
//! negotiation.

pub mod export;
pub mod handshake;
pub mod mapping;
pub mod overlay;
pub mod proto;
pub mod transmission;

pub use export::{ConfigError, Export, BLOCK_BYTES_MAX, BLOCK_BYTES_MIN};
pub use handshake::{Entry, Handshake, HandshakeError, Outcome, Ready};
pub use mapping::{PageGeometry, PageOp, Span};
pub use overlay::{Overlay, PageView};
pub use proto::{ErrorCode, TransmissionFlags};
pub use transmission::{
    simple_reply, Command, Event, ReadReply, RejectReason, Rejection, Request, RequestDecoder,
    TransmissionError,
};

/// Most bytes one `feed` call may hand to the handshake or the request decoder: the driver's
/// socket read size. It bounds what the core buffers beyond one message.
pub const FEED_BYTES_MAX: usize = 1024 * 1024;
