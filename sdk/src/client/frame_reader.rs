//! Reading `Response` frames from a QUIC receive stream.

use std::future::Future as _;
use std::task::{Context, Waker};

use bytes::BytesMut;
use quinn::{ReadError, RecvStream};
use sidestream_proto::{FRAME_HEADER_SIZE, FrameCodec, Response};

use crate::Error;
use crate::error::TransportError;

/// Reads the frames of one stream: keeps what arrived past the current frame for the next
/// call.
#[derive(Debug, Default)]
pub(crate) struct FrameReader {
    buf: BytesMut,
    codec: FrameCodec<Response>,
}

impl FrameReader {
    /// The next frame; `None` when the stream ended cleanly between frames.
    ///
    /// # Errors
    ///
    /// [`Error::Frame`] for bytes that are not a frame (or a stream that ends inside one),
    /// [`Error::Transport`] when the stream or connection fails, [`Error::Closed`] when this
    /// client closed the connection.
    pub(crate) async fn next(&mut self, recv: &mut RecvStream) -> Result<Option<Response>, Error> {
        loop {
            if let Some(response) = self.codec.decode(&mut self.buf).map_err(Error::Frame)? {
                return Ok(Some(response));
            }
            let wanted = self.reserve_frame();
            match recv.read_chunk(wanted, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) => return self.codec.decode_eof(&mut self.buf).map_err(Error::Frame),
                Err(error) => return Err(read_error(error)),
            }
        }
    }

    /// Once the length prefix is in, makes room for the whole frame at once (the codec has
    /// already checked it against the limit), so that a large frame is not copied again at
    /// every doubling; returns how many bytes to read next: the rest of the frame, so that its
    /// buffer never has to grow (any number before the prefix is in).
    ///
    /// A frame that does not fit gets a buffer of its own, with only its first bytes copied
    /// over: growing the old buffer instead would copy all of it, the frames before (handed
    /// out already) included, whenever they are not shared any more.
    fn reserve_frame(&mut self) -> usize {
        let Some(prefix) = self.buf.first_chunk::<FRAME_HEADER_SIZE>() else {
            return usize::MAX;
        };
        let frame = FRAME_HEADER_SIZE + u32::from_le_bytes(*prefix) as usize;
        if self.buf.capacity() < frame {
            let mut own = BytesMut::with_capacity(frame);
            own.extend_from_slice(&self.buf);
            self.buf = own;
        }
        frame.saturating_sub(self.buf.len()).max(1)
    }
}

/// Reads the end of a stream whose peer has finished it already (the sidecar finishes a
/// stream right after its answer), so that the stream is done with when it is dropped: one
/// dropped unread is stopped, which costs an extra packet per request. Does not wait: a
/// stream whose end has not arrived is left as it is.
pub(crate) fn take_end(recv: &mut RecvStream) {
    let mut read = std::pin::pin!(recv.read_chunk(1, true));
    let _ = read.as_mut().poll(&mut Context::from_waker(Waker::noop()));
}

/// The SDK error for a failed read.
pub(crate) fn read_error(error: ReadError) -> Error {
    match error {
        ReadError::Reset(code) => Error::Transport(TransportError::StreamReset {
            code: code.into_inner(),
        }),
        ReadError::ConnectionLost(error) => connection_error(error),
        ReadError::ClosedStream | ReadError::IllegalOrderedRead | ReadError::ZeroRttRejected => {
            Error::Transport(TransportError::NoAnswer)
        }
    }
}

/// The SDK error for a connection that failed or was closed.
///
/// A connection this client closed is a lost connection too: it may have been abandoned for
/// not answering, and the next attempt reconnects. If the client itself was closed, that
/// attempt fails with [`Error::Closed`].
pub(crate) fn connection_error(error: quinn::ConnectionError) -> Error {
    Error::Transport(TransportError::ConnectionLost(error))
}
