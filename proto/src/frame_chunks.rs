//! Frames as chunks: the record batches a frame carries are chunks of their own, shared with
//! the caller rather than copied into the frame.
//!
//! A publish request carries one batch and a subscription or fetch answer up to 16 MiB of
//! them; encoding such a frame into one buffer copies every byte once more on its way to the
//! stream. [`FrameCodec::encode_chunks`] writes the same bytes as
//! [`FrameCodec::encode_to_bytes`], split so that each batch is the `Bytes` it already was:
//!
//! ```text
//!  [length, fields before the batches, batch field header] [batch] [next field header] [batch] …
//! ```
//!
//! Any other message is one chunk, as `encode_to_bytes` makes it.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

use crate::frame_codec::{FrameCodec, FrameError};
use crate::v1::{Request, Response, request, response};

/// Field numbers of the bodies and batch fields spliced here (checked by the tests, which
/// compare every splice with prost's own encoding).
const REQUEST_PUBLISH: u32 = 14;
const PUBLISH_BATCH: u32 = 4;
const RESPONSE_FETCH: u32 = 15;
const RESPONSE_SUBSCRIPTION_BATCHES: u32 = 20;
const BATCHES: u32 = 3;

impl FrameCodec<Request> {
    /// Encodes `request` as one frame, the batch of a `publish` as a chunk of its own, shared
    /// with the request rather than copied. The chunks, written in order, are exactly the frame
    /// [`encode_to_bytes`](Self::encode_to_bytes) makes:
    ///
    /// ```text
    ///  [length, fields before the batch, batch field header] [batch] [fields after it]
    /// ```
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_chunks(&self, request: &Request) -> Result<Vec<Bytes>, FrameError> {
        let Some(request::Body::Publish(publish)) = &request.body else {
            return self.encode_to_bytes(request).map(|frame| vec![frame]);
        };
        let mut head = self.head(request)?;
        // Fields in number order, defaults left out, as prost writes them.
        put_string(1, &request.client_id, &mut head);
        put_string(2, &request.traceparent, &mut head);
        open_field(REQUEST_PUBLISH, publish.encoded_len(), &mut head);
        put_string(1, &publish.topic, &mut head);
        put_u64(2, u64::from(publish.partition), &mut head);
        put_i32(3, publish.acks, &mut head);
        let mut chunks = Vec::with_capacity(3);
        if !publish.batch.is_empty() {
            splice(PUBLISH_BATCH, &publish.batch, &mut head, &mut chunks);
        }
        put_u64(5, u64::from(publish.timeout_ms), &mut head);
        finish(head, &mut chunks);
        Ok(chunks)
    }
}

impl FrameCodec<Response> {
    /// Encodes `response` as one frame, the batches of a `fetch` or `subscription_batches`
    /// answer as chunks of their own, shared with the response rather than copied; any other
    /// response is one chunk. The chunks, written in order, are exactly the frame
    /// [`encode_to_bytes`](Self::encode_to_bytes) makes:
    ///
    /// ```text
    ///  [length, fields, first batch's field header] [batch] [next field header] [batch] …
    /// ```
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_chunks(&self, response: &Response) -> Result<Vec<Bytes>, FrameError> {
        let (tag, body_len, first, second, batches) = match &response.body {
            Some(response::Body::SubscriptionBatches(frame)) => (
                RESPONSE_SUBSCRIPTION_BATCHES,
                frame.encoded_len(),
                u64::from(frame.partition),
                frame.high_watermark,
                &frame.batches,
            ),
            Some(response::Body::Fetch(result)) => (
                RESPONSE_FETCH,
                result.encoded_len(),
                result.high_watermark,
                result.log_start_offset,
                &result.batches,
            ),
            _ => return self.encode_to_bytes(response).map(|frame| vec![frame]),
        };
        let mut head = self.head(response)?;
        // Fields in number order, defaults left out, as prost writes them. Both bodies have
        // two integer fields (numbers 1 and 2) before their batches.
        put_i32(1, response.code, &mut head);
        put_string(2, &response.message, &mut head);
        open_field(tag, body_len, &mut head);
        put_u64(1, first, &mut head);
        put_u64(2, second, &mut head);
        let mut chunks = Vec::with_capacity(2 * batches.len() + 1);
        for batch in batches {
            splice(BATCHES, batch, &mut head, &mut chunks);
        }
        finish(head, &mut chunks);
        Ok(chunks)
    }
}

impl<M: Message + Default> FrameCodec<M> {
    /// A buffer holding the frame's length prefix, after checking the size against the limit.
    fn head(self, message: &M) -> Result<BytesMut, FrameError> {
        let length = self.frame_length(message.encoded_len())?;
        let mut head = BytesMut::with_capacity(256);
        head.put_u32_le(length);
        Ok(head)
    }
}

/// A `string` field, left out when empty.
fn put_string(tag: u32, value: &str, head: &mut BytesMut) {
    if !value.is_empty() {
        open_field(tag, value.len(), head);
        head.put_slice(value.as_bytes());
    }
}

/// An unsigned varint field (`uint32`, `uint64`), left out when 0.
fn put_u64(tag: u32, value: u64, head: &mut BytesMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, head);
        encode_varint(value, head);
    }
}

/// An `int32` or enum field, left out when 0 (negative values take ten bytes, as in prost).
fn put_i32(tag: u32, value: i32, head: &mut BytesMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, head);
        encode_varint(i64::from(value).cast_unsigned(), head);
    }
}

/// Writes the key and length of a length-delimited field of `len` bytes.
fn open_field(tag: u32, len: usize, head: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, head);
    encode_varint(len as u64, head);
}

/// Writes the field header of `batch` into `head`, then moves `head` and `batch` to `chunks`:
/// the batch is shared, not copied. An empty batch is only its header.
fn splice(tag: u32, batch: &Bytes, head: &mut BytesMut, chunks: &mut Vec<Bytes>) {
    open_field(tag, batch.len(), head);
    if !batch.is_empty() {
        chunks.push(head.split().freeze());
        chunks.push(batch.clone());
    }
}

fn finish(head: BytesMut, chunks: &mut Vec<Bytes>) {
    if !head.is_empty() {
        chunks.push(head.freeze());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::tests::strategy::{request, response};
    use crate::v1::{FetchResult, Publish, SubscriptionBatches};

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.concat()
    }

    proptest! {
        #[test]
        fn request_chunks_are_the_frame(request in request()) {
            let codec = FrameCodec::<Request>::default();
            let chunks = codec.encode_chunks(&request).unwrap();
            prop_assert_eq!(joined(&chunks), codec.encode_to_bytes(&request).unwrap().to_vec());
        }

        #[test]
        fn response_chunks_are_the_frame(response in response()) {
            let codec = FrameCodec::<Response>::default();
            let chunks = codec.encode_chunks(&response).unwrap();
            prop_assert_eq!(joined(&chunks), codec.encode_to_bytes(&response).unwrap().to_vec());
        }
    }

    #[test]
    fn batches_are_shared_not_copied() {
        let batch = Bytes::from(vec![7u8; 4096]);
        let response = Response::ok(response::Body::SubscriptionBatches(SubscriptionBatches {
            partition: 3,
            high_watermark: 99,
            batches: vec![batch.clone(), Bytes::new(), batch.clone()],
        }));
        let codec = FrameCodec::<Response>::default();
        let chunks = codec.encode_chunks(&response).unwrap();
        let shared = chunks
            .iter()
            .filter(|chunk| chunk.as_ptr() == batch.as_ptr())
            .count();
        assert_eq!(shared, 2);
        assert_eq!(joined(&chunks), codec.encode_to_bytes(&response).unwrap());

        let request = Request {
            client_id: "svc".into(),
            traceparent: String::new(),
            body: Some(request::Body::Publish(Publish {
                topic: "orders".into(),
                partition: 1,
                acks: 2,
                batch: batch.clone(),
                timeout_ms: 500,
            })),
        };
        let codec = FrameCodec::<Request>::default();
        let chunks = codec.encode_chunks(&request).unwrap();
        assert!(chunks.iter().any(|chunk| chunk.as_ptr() == batch.as_ptr()));
        assert_eq!(joined(&chunks), codec.encode_to_bytes(&request).unwrap());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused() {
        let response = Response::ok(response::Body::Fetch(FetchResult {
            high_watermark: 1,
            log_start_offset: 0,
            batches: vec![Bytes::from(vec![0u8; 2048])],
        }));
        let codec = FrameCodec::<Response>::new(1024);
        assert!(matches!(
            codec.encode_chunks(&response),
            Err(FrameError::TooLarge { max: 1024, .. })
        ));
    }
}
