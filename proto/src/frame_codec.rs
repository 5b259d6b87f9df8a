//! The frame codec: a little-endian `u32` length, then that many bytes of one protobuf
//! message.
//!
//! ```text
//!  0          4                      4 + length
//!  +----------+----------------------+
//!  | length   | message (protobuf)   |
//!  | u32 LE   | `length` bytes       |
//!  +----------+----------------------+
//! ```
//!
//! Decoding is incremental: feed whatever the stream delivered into a [`BytesMut`] and call
//! [`FrameCodec::decode`] until it returns `Ok(None)`. The length prefix is checked against the
//! limit as soon as its four bytes are there, before any of the body is buffered, so a peer
//! cannot make the reader hold more than the limit. The codec does no I/O and keeps no state
//! between calls; the caller owns the buffer.

use std::fmt;
use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Encodes messages of type `M` into frames and decodes frames back, with a limit on the
/// size of a frame's message.
///
/// A client uses a `FrameCodec<Request>` to write and a `FrameCodec<Response>` to read; the
/// sidecar the other way round. Both ends of a connection should use the same limit
/// ([`DEFAULT_MAX_FRAME_SIZE`] unless configured otherwise).
///
/// Call order: [`decode`](Self::decode) after each read from the stream, until it returns
/// `Ok(None)`; [`decode_eof`](Self::decode_eof) once the stream has ended, to tell a clean
/// end from one inside a frame. After any error the stream's framing is lost: answer (if you
/// are the sidecar) and close the stream.
pub struct FrameCodec<M> {
    max_frame_size: u32,
    message: PhantomData<fn() -> M>,
}

impl<M: prost::Message + Default> FrameCodec<M> {
    /// A codec that accepts messages of up to `max_frame_size` bytes (the length prefix not
    /// counted).
    pub const fn new(max_frame_size: u32) -> Self {
        Self {
            max_frame_size,
            message: PhantomData,
        }
    }

    /// The largest message this codec encodes or decodes, in bytes.
    pub const fn max_frame_size(&self) -> u32 {
        self.max_frame_size
    }

    /// Appends `message` to `dst` as one frame.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit; `dst` is then
    /// unchanged.
    pub fn encode(&self, message: &M, dst: &mut BytesMut) -> Result<(), FrameError> {
        let size = message.encoded_len();
        let length = self.frame_length(size)?;
        let start = dst.len();
        dst.reserve(FRAME_HEADER_SIZE + size);
        dst.put_u32_le(length);
        if let Err(err) = message.encode(dst) {
            // Not reached: `BytesMut` grows on demand, so prost never finds it too small.
            // Still, leave only whole frames behind.
            dst.truncate(start);
            return Err(FrameError::TooLarge {
                size: u64::try_from(err.required_capacity()).unwrap_or(u64::MAX),
                max: self.max_frame_size,
            });
        }
        Ok(())
    }

    /// The length prefix of a message of `size` bytes, if the limit allows it.
    pub(crate) fn frame_length(self, size: usize) -> Result<u32, FrameError> {
        u32::try_from(size)
            .ok()
            .filter(|&length| length <= self.max_frame_size)
            .ok_or(FrameError::TooLarge {
                size: u64::try_from(size).unwrap_or(u64::MAX),
                max: self.max_frame_size,
            })
    }

    /// Encodes `message` as one frame in a buffer of its own, ready to write to a stream.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_to_bytes(&self, message: &M) -> Result<Bytes, FrameError> {
        let mut dst = BytesMut::new();
        self.encode(message, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Takes the first whole frame out of `src` and decodes it.
    ///
    /// Returns `Ok(None)` while `src` holds less than a whole frame (nothing is consumed), and
    /// `Ok(Some(message))` after removing the frame's bytes from `src`. Fields of type `bytes`
    /// in the message share the frame's buffer instead of being copied.
    ///
    /// # Errors
    ///
    /// - [`FrameError::TooLarge`] as soon as the length prefix exceeds the limit, before the
    ///   body arrives; nothing is consumed.
    /// - [`FrameError::Malformed`] if the frame's bytes are not a valid message; the frame is
    ///   consumed.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        let Some(size) = self.frame_size(src)?.filter(|&size| src.len() >= size) else {
            return Ok(None);
        };
        let mut frame = src.split_to(size).freeze();
        frame.advance(FRAME_HEADER_SIZE);
        M::decode(frame).map(Some).map_err(FrameError::Malformed)
    }

    /// Like [`decode`](Self::decode), for when the stream has ended: what is left in `src`
    /// must be whole frames.
    ///
    /// # Errors
    ///
    /// As [`decode`](Self::decode), and [`FrameError::Truncated`] if `src` ends inside a
    /// frame.
    pub fn decode_eof(&self, src: &mut BytesMut) -> Result<Option<M>, FrameError> {
        match self.decode(src)? {
            Some(message) => Ok(Some(message)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                expected: self
                    .frame_size(src)?
                    .map_or(FRAME_HEADER_SIZE as u64, |size| size as u64),
                received: src.len() as u64,
            }),
        }
    }

    /// The size of the frame at the start of `src`, header included, once `src` holds its
    /// length prefix; `Ok(None)` before.
    fn frame_size(self, src: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(header) = src.first_chunk::<FRAME_HEADER_SIZE>() else {
            return Ok(None);
        };
        let length = u32::from_le_bytes(*header);
        if length > self.max_frame_size {
            return Err(FrameError::TooLarge {
                size: u64::from(length),
                max: self.max_frame_size,
            });
        }
        // A u32 fits in usize on every target the workspace builds for (32 and 64 bits).
        Ok(Some(FRAME_HEADER_SIZE + length as usize))
    }
}

impl<M> Default for FrameCodec<M> {
    /// A codec with the [`DEFAULT_MAX_FRAME_SIZE`].
    fn default() -> Self {
        Self {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            message: PhantomData,
        }
    }
}

impl<M> Clone for FrameCodec<M> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<M> Copy for FrameCodec<M> {}

impl<M> fmt::Debug for FrameCodec<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrameCodec")
            .field("message", &std::any::type_name::<M>())
            .field("max_frame_size", &self.max_frame_size)
            .finish()
    }
}

/// Why bytes could not be encoded into, or decoded from, a frame.
///
/// The sidecar answers each with an error [`Response`](crate::v1::Response); the mapping to an
/// [`ErrorCode`](crate::v1::ErrorCode) is `ErrorCode::from(&error)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The message is larger than the codec's limit.
    #[error("frame of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's size in bytes (the length prefix not counted).
        size: u64,
        /// The limit.
        max: u32,
    },
    /// The frame's bytes are not a valid message of the expected type.
    #[error("malformed frame: {0}")]
    Malformed(#[source] prost::DecodeError),
    /// The stream ended inside a frame.
    #[error("stream ended inside a frame: {received} of {expected} bytes arrived")]
    Truncated {
        /// Bytes the frame needs, header included (4 while even the header is incomplete).
        expected: u64,
        /// Bytes that arrived.
        received: u64,
    },
}

/// Size of a frame's length prefix in bytes.
pub const FRAME_HEADER_SIZE: usize = 4;

/// The default limit on a frame's message: 16 MiB of record batches (the most a fetch or a
/// subscription frame carries) plus 64 KiB for the other fields. The largest single batch the
/// sidecar accepts is 8 MiB.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = (16 << 20) + (64 << 10);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{Metadata, Publish, Request, request};

    fn publish(batch: &'static [u8]) -> Request {
        Request {
            client_id: "order-service".into(),
            traceparent: String::new(),
            body: Some(request::Body::Publish(Publish {
                topic: "orders".into(),
                partition: 3,
                batch: Bytes::from_static(batch),
                ..Publish::default()
            })),
        }
    }

    #[test]
    fn frame_is_length_prefix_then_message() {
        let request = publish(b"batch");
        let frame = FrameCodec::default().encode_to_bytes(&request).unwrap();
        let length = u32::from_le_bytes(*frame.first_chunk().unwrap());
        assert_eq!(length as usize, frame.len() - FRAME_HEADER_SIZE);
        assert_eq!(
            &frame[FRAME_HEADER_SIZE..],
            prost::Message::encode_to_vec(&request)
        );
    }

    #[test]
    fn byte_by_byte_delivery_yields_each_frame_once() {
        let codec = FrameCodec::default();
        let requests = [
            publish(b"first"),
            Request::default(),
            publish(b""),
            publish(b"third"),
        ];
        let mut wire = BytesMut::new();
        for request in &requests {
            codec.encode(request, &mut wire).unwrap();
        }

        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            src.put_u8(byte);
            while let Some(request) = codec.decode(&mut src).unwrap() {
                decoded.push(request);
            }
        }
        assert_eq!(decoded, requests);
        assert!(src.is_empty());
        assert_eq!(codec.decode_eof(&mut src), Ok(None));
    }

    #[test]
    fn empty_message_is_a_four_byte_frame() {
        let codec = FrameCodec::<Request>::default();
        let frame = codec.encode_to_bytes(&Request::default()).unwrap();
        assert_eq!(&frame[..], &[0, 0, 0, 0]);
        let mut src = BytesMut::from(&frame[..]);
        assert_eq!(codec.decode(&mut src), Ok(Some(Request::default())));
    }

    #[test]
    fn oversized_length_prefix_is_rejected_before_the_body_arrives() {
        let codec = FrameCodec::<Request>::new(1024);
        let mut src = BytesMut::from(&1025_u32.to_le_bytes()[..]);
        assert_eq!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge {
                size: 1025,
                max: 1024
            })
        );
        assert_eq!(src.len(), FRAME_HEADER_SIZE, "nothing is consumed");

        let mut src = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        let err = FrameCodec::<Request>::default()
            .decode(&mut src)
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLarge { size, .. } if size == u64::from(u32::MAX)));
    }

    #[test]
    fn frame_at_the_limit_passes_and_one_byte_more_does_not() {
        let request = publish(b"0123456789");
        let size = u32::try_from(prost::Message::encoded_len(&request)).unwrap();

        let exact = FrameCodec::new(size);
        let mut wire = BytesMut::new();
        exact.encode(&request, &mut wire).unwrap();
        assert_eq!(exact.decode(&mut wire), Ok(Some(request.clone())));

        let small = FrameCodec::new(size - 1);
        let mut wire = BytesMut::from(&b"kept"[..]);
        let err = small.encode(&request, &mut wire).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                size: u64::from(size),
                max: size - 1
            }
        );
        assert_eq!(
            &wire[..],
            b"kept",
            "a refused frame leaves the buffer as it was"
        );
    }

    #[test]
    fn malformed_body_is_an_error_and_is_consumed() {
        let codec = FrameCodec::<Request>::default();
        // Field 1 (client_id) declared as a 5-byte string, but the frame holds only 1 byte.
        let mut src = BytesMut::from(&[3, 0, 0, 0, 0x0a, 5, b'x'][..]);
        let next = codec.encode_to_bytes(&Request::default()).unwrap();
        src.extend_from_slice(&next);
        assert!(matches!(
            codec.decode(&mut src),
            Err(FrameError::Malformed(_))
        ));
        assert_eq!(codec.decode(&mut src), Ok(Some(Request::default())));
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        let codec = FrameCodec::<Request>::default();
        let frame = codec
            .encode_to_bytes(&Request {
                body: Some(request::Body::Metadata(Metadata {})),
                ..Request::default()
            })
            .unwrap();

        let mut src = BytesMut::from(&frame[..frame.len() - 1]);
        assert_eq!(codec.decode(&mut src), Ok(None));
        assert_eq!(
            codec.decode_eof(&mut src),
            Err(FrameError::Truncated {
                expected: frame.len() as u64,
                received: frame.len() as u64 - 1,
            })
        );

        let mut src = BytesMut::from(&frame[..2]);
        assert_eq!(
            codec.decode_eof(&mut src),
            Err(FrameError::Truncated {
                expected: 4,
                received: 2
            })
        );
    }

    #[test]
    fn decoded_bytes_fields_share_the_frame_buffer() {
        let codec = FrameCodec::default();
        let mut src = BytesMut::new();
        codec.encode(&publish(&[7; 4096]), &mut src).unwrap();
        let start = src.as_ptr() as usize;
        let end = start + src.len();

        let Some(request::Body::Publish(publish)) = codec.decode(&mut src).unwrap().unwrap().body
        else {
            panic!("not a publish");
        };
        let batch = publish.batch.as_ptr() as usize;
        assert!((start..end).contains(&batch), "the batch was copied");
    }
}
