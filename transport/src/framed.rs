//! Protocol frames over QUIC streams: read one, write one, or do one request/response exchange.
//!
//! A reader takes exactly [`FRAME_HEADER_BYTES`], lets [`FrameHeader::decode`] verify them (which
//! bounds the body length by `FRAME_BODY_BYTES_MAX`), then takes exactly the body into one buffer
//! sized for it. That buffer is frozen and decoded in place, so record payloads and page bytes are
//! slices of it: one copy out of quinn's receive buffers, none after.
//!
//! Invariants: a reader never holds more than one header plus one bounded body per frame; a clean
//! end of stream is only possible between frames (`Ok(None)`), anywhere else it is
//! [`TransportError::UnexpectedEnd`]; malformed bytes are [`TransportError::Format`] and leave the
//! stream unusable (the caller should drop or stop it).

use bytes::{Bytes, BytesMut};
use protocol::frame::{decode_body, encode_frame, FrameHeader, FRAME_HEADER_BYTES};
use protocol::Message;
use quinn::{ReadExactError, RecvStream, SendStream};

use crate::error::TransportError;

/// Reads the next frame, or `None` if the peer finished the stream cleanly before one began.
pub async fn read_frame(recv: &mut RecvStream) -> Result<Option<Message>, TransportError> {
    let Some(header) = read_header(recv).await? else {
        return Ok(None);
    };
    let body = read_body(recv, header.body_len as usize).await?;
    Ok(Some(decode_body(&header, body)?))
}

/// Encodes `message` as one frame and queues it on the stream (without finishing the stream).
pub async fn write_frame(send: &mut SendStream, message: &Message) -> Result<(), TransportError> {
    let mut frame = BytesMut::new();
    encode_frame(message, &mut frame)?;
    // `write_chunk` hands the frozen buffer to quinn as is: no copy.
    send.write_chunk(frame.freeze()).await?;
    Ok(())
}

/// Queues a frame already encoded (`protocol::frame::frame_bytes`) on the stream, as is: a
/// frame sent to several nodes is encoded (and checksummed) once, and each stream holds a
/// reference to the same bytes.
pub async fn write_frame_bytes(send: &mut SendStream, frame: Bytes) -> Result<(), TransportError> {
    send.write_chunk(frame).await?;
    Ok(())
}

/// One exchange on a fresh bidirectional stream: sends `message`, finishes the send side, reads
/// one reply frame. Bounded by the connection's idle timeout only: a peer that keeps the
/// connection alive but never answers must be timed out by the caller.
pub async fn request(conn: &quinn::Connection, message: &Message) -> Result<Message, TransportError> {
    let (mut send, mut recv) = conn.open_bi().await?;
    write_frame(&mut send, message).await?;
    send.finish()?;
    read_frame(&mut recv).await?.ok_or(TransportError::NoReply)
}

async fn read_header(recv: &mut RecvStream) -> Result<Option<FrameHeader>, TransportError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match recv.read_exact(&mut header).await {
        Ok(()) => Ok(Some(FrameHeader::decode(&header)?)),
        Err(ReadExactError::FinishedEarly(0)) => Ok(None),
        Err(ReadExactError::FinishedEarly(read)) => {
            Err(TransportError::UnexpectedEnd { what: "frame header", read, needed: FRAME_HEADER_BYTES })
        }
        Err(ReadExactError::ReadError(error)) => Err(error.into()),
    }
}

/// Reads exactly `len` bytes into a buffer allocated for `len` bytes only. `len` was bounded by
/// `FrameHeader::decode`. Chunks are requested no larger than what is still missing, so the
/// buffer never grows past `len`, and no zero-fill is paid for bytes about to be overwritten.
async fn read_body(recv: &mut RecvStream, len: usize) -> Result<Bytes, TransportError> {
    let mut body = BytesMut::with_capacity(len);
    while body.len() < len {
        let Some(chunk) = recv.read_chunk(len - body.len(), true).await? else {
            return Err(TransportError::UnexpectedEnd { what: "frame body", read: body.len(), needed: len });
        };
        body.extend_from_slice(&chunk.bytes);
    }
    Ok(body.freeze())
}
