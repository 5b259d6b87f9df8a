//! Reading frames from QUIC streams (requests here, and the peer port's frames), and writing
//! response frames.

use bytes::{Buf, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, VarInt, WriteError};
use sidestream_proto::v1::ErrorCode;
use sidestream_proto::{FrameCodec, FrameError, Response};

/// Most bytes reserved beyond what has arrived, on a service's stream.
pub(crate) const RESERVE_AHEAD: usize = 1 << 20;

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadFrameError {
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("stream: {0}")]
    Stream(#[from] ReadError),
}

/// Reads the next request frame; `None` when the client finished the stream between frames.
///
/// Every frame of a stream is read this way, whatever its message: the peer port reads
/// `PeerRequest` and `PeerResponse` frames with it too.
///
/// The length prefix is checked against the codec's limit as soon as it arrives. The buffer
/// grows ahead of the data by at most [`RESERVE_AHEAD`] until that much has arrived, so that a
/// length prefix alone cannot make the sidecar allocate a whole frame, then by at most
/// `reserve_ahead` ([`RESERVE_AHEAD`] for a service; a whole append for a peer,
/// `PEER_RESERVE_AHEAD`, so that its megabytes of entries are moved at most once as the
/// buffer grows).
pub(crate) async fn read_frame<M: prost::Message + Default>(
    recv: &mut RecvStream,
    codec: &FrameCodec<M>,
    buf: &mut BytesMut,
    reserve_ahead: usize,
) -> Result<Option<M>, ReadFrameError> {
    loop {
        if let Some(request) = codec.decode(buf)? {
            return Ok(Some(request));
        }
        if buf.len() >= 4 {
            let size = (&buf[..4]).get_u32_le() as usize + 4;
            // Past RESERVE_AHEAD only once that much has arrived: a length prefix alone
            // reserves no more than for a service.
            let ahead = if buf.len() >= RESERVE_AHEAD {
                reserve_ahead
            } else {
                RESERVE_AHEAD.min(reserve_ahead)
            };
            buf.reserve(size.saturating_sub(buf.len()).min(ahead));
        }
        match recv.read_chunk(usize::MAX, true).await? {
            Some(chunk) => buf.extend_from_slice(&chunk.bytes),
            None => return Ok(codec.decode_eof(buf)?),
        }
    }
}

/// The error code a reading failure is answered with.
pub(super) fn read_error_code(error: &ReadFrameError) -> ErrorCode {
    match error {
        ReadFrameError::Frame(frame) => ErrorCode::from(frame),
        ReadFrameError::Stream(_) => ErrorCode::MalformedFrame,
    }
}

/// Writes one response frame.
pub(super) async fn write_response(
    send: &mut SendStream,
    codec: &FrameCodec<Response>,
    response: &Response,
) -> Result<(), WriteError> {
    match codec.encode_chunks(response) {
        // Batches go out as the chunks they were read into, not copied into the frame.
        Ok(mut frame) => send.write_all_chunks(&mut frame).await,
        Err(error) => {
            // Only a response over the frame limit fails to encode; send its error instead.
            tracing::error!(%error, "response does not fit a frame");
            let fallback = Response::error(
                ErrorCode::InternalError,
                format!("the response does not fit a frame: {error}"),
            );
            let frame = codec
                .encode_to_bytes(&fallback)
                .map_err(|_| WriteError::ClosedStream)?;
            send.write_chunk(frame).await
        }
    }
}

/// The QUIC application error code of `code`.
pub(super) fn quic_code(code: ErrorCode) -> VarInt {
    VarInt::from_u32(u32::try_from(i32::from(code)).unwrap_or(0))
}
