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
//! Any other message is one chunk, as `encode_to_bytes` makes it. Between sidecars the same
//! holds for an append's entries, and for a service's request or answer passed on, which is
//! spliced into the peer frame as its own chunks rather than encoded to a buffer first.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::frame_codec::{FrameCodec, FrameError};
use crate::peer::v1::{PeerRequest, PeerResponse, peer_request};
use crate::v1::{Request, Response, request, response};

/// Field numbers of the bodies and batch fields spliced here (checked by the tests, which
/// compare every splice with prost's own encoding).
const REQUEST_PUBLISH: u32 = 14;
const PUBLISH_BATCH: u32 = 4;
const RESPONSE_FETCH: u32 = 15;
const RESPONSE_SUBSCRIPTION_BATCHES: u32 = 20;
const BATCHES: u32 = 3;
const PEER_GROUP: u32 = 1;
const PEER_APPEND_ENTRIES: u32 = 11;
const PEER_CLIENT: u32 = 16;
const APPEND_REQUEST: u32 = 1;
const APPEND_ENTRIES: u32 = 2;
const PASSED_ON_REQUEST: u32 = 1;
const PASSED_ON_PASSES: u32 = 2;
const PEER_RESPONSE_RESULT: u32 = 3;

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
        let mut out = Pieces::framed(self.frame_length(request.encoded_len())?);
        put_request(request, &mut out)?;
        Ok(out.finish())
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
        let mut out = Pieces::framed(self.frame_length(response.encoded_len())?);
        put_response(response, &mut out)?;
        Ok(out.finish())
    }
}

impl FrameCodec<PeerRequest> {
    /// Encodes `request` as one frame, the entries of an `append_entries` call and the request
    /// of a `client` call as chunks of their own, shared rather than copied. The chunks,
    /// written in order, are exactly the frame [`encode_to_bytes`](Self::encode_to_bytes)
    /// makes.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_chunks(&self, request: &PeerRequest) -> Result<Vec<Bytes>, FrameError> {
        let mut out = Pieces::framed(self.frame_length(request.encoded_len())?);
        let spliced = matches!(
            request.body,
            Some(peer_request::Body::AppendEntries(_) | peer_request::Body::Client(_))
        );
        if !spliced {
            encode_into(request, &mut out.head)?;
            return Ok(out.finish());
        }
        // Fields in number order, defaults left out, as prost writes them.
        if let Some(group) = &request.group {
            open_field(PEER_GROUP, group.encoded_len(), &mut out.head);
            encode_into(group, &mut out.head)?;
        }
        match &request.body {
            Some(peer_request::Body::AppendEntries(append)) => {
                open_field(PEER_APPEND_ENTRIES, append.encoded_len(), &mut out.head);
                put_bytes(APPEND_REQUEST, &append.request, &mut out.head);
                for entry in &append.entries {
                    out.splice(APPEND_ENTRIES, entry);
                }
            }
            Some(peer_request::Body::Client(passed)) => {
                open_field(PEER_CLIENT, passed.encoded_len(), &mut out.head);
                if !passed.request.is_empty() {
                    out.splice(PASSED_ON_REQUEST, &passed.request);
                }
                put_u64(PASSED_ON_PASSES, u64::from(passed.passes), &mut out.head);
            }
            _ => {}
        }
        Ok(out.finish())
    }

    /// Encodes the peer call that passes a service's `request` on (`client`, for the
    /// `passes`-th time) as one frame, without encoding `request` into a buffer of its own
    /// first: its batch is a chunk of its own. The chunks, written in order, are exactly the
    /// frame `encode_to_bytes` makes of a `PeerRequest` whose `client.request` is `request`
    /// encoded.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_passed_on(
        &self,
        request: &Request,
        passes: u32,
    ) -> Result<Vec<Bytes>, FrameError> {
        let request_len = request.encoded_len();
        let passes_len = if passes == 0 {
            0
        } else {
            key_len(PASSED_ON_PASSES) + encoded_len_varint(u64::from(passes))
        };
        let request_field_len = if request_len == 0 {
            0
        } else {
            field_len(PASSED_ON_REQUEST, request_len)
        };
        let client_len = request_field_len + passes_len;
        let mut out = Pieces::framed(self.frame_length(field_len(PEER_CLIENT, client_len))?);
        open_field(PEER_CLIENT, client_len, &mut out.head);
        if request_len != 0 {
            open_field(PASSED_ON_REQUEST, request_len, &mut out.head);
            put_request(request, &mut out)?;
        }
        put_u64(PASSED_ON_PASSES, u64::from(passes), &mut out.head);
        Ok(out.finish())
    }
}

impl FrameCodec<PeerResponse> {
    /// Encodes the peer answer `OK` whose result is the service's `response`, as one frame,
    /// without encoding `response` into a buffer of its own first: its batches are chunks of
    /// their own. The chunks, written in order, are exactly the frame `encode_to_bytes` makes
    /// of a `PeerResponse` with code `OK` and `response` encoded as its result.
    ///
    /// # Errors
    ///
    /// [`FrameError::TooLarge`] if the encoded message is larger than the limit.
    pub fn encode_answered(&self, response: &Response) -> Result<Vec<Bytes>, FrameError> {
        let response_len = response.encoded_len();
        let length = if response_len == 0 {
            0
        } else {
            field_len(PEER_RESPONSE_RESULT, response_len)
        };
        let mut out = Pieces::framed(self.frame_length(length)?);
        if response_len != 0 {
            open_field(PEER_RESPONSE_RESULT, response_len, &mut out.head);
            put_response(response, &mut out)?;
        }
        Ok(out.finish())
    }
}

/// A message on its way to chunks: the bytes to copy gather in `head` until a shared one
/// (a batch) comes, and move to `chunks` before it.
struct Pieces {
    head: BytesMut,
    chunks: Vec<Bytes>,
}

impl Pieces {
    /// A frame's pieces, starting with its length prefix.
    fn framed(length: u32) -> Self {
        let mut head = BytesMut::with_capacity(256);
        head.put_u32_le(length);
        Self {
            head,
            chunks: Vec::with_capacity(3),
        }
    }

    /// Writes the field header of `batch`, then moves the bytes so far and `batch` to the
    /// chunks: the batch is shared, not copied. An empty batch is only its header.
    fn splice(&mut self, tag: u32, batch: &Bytes) {
        open_field(tag, batch.len(), &mut self.head);
        if !batch.is_empty() {
            self.chunks.push(self.head.split().freeze());
            self.chunks.push(batch.clone());
        }
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.head.is_empty() {
            self.chunks.push(self.head.freeze());
        }
        self.chunks
    }
}

/// Writes `request`'s fields (not its length), a publish's batch shared.
fn put_request(request: &Request, out: &mut Pieces) -> Result<(), FrameError> {
    let Some(request::Body::Publish(publish)) = &request.body else {
        return encode_into(request, &mut out.head);
    };
    // Fields in number order, defaults left out, as prost writes them.
    put_string(1, &request.client_id, &mut out.head);
    put_string(2, &request.traceparent, &mut out.head);
    open_field(REQUEST_PUBLISH, publish.encoded_len(), &mut out.head);
    put_string(1, &publish.topic, &mut out.head);
    put_u64(2, u64::from(publish.partition), &mut out.head);
    put_i32(3, publish.acks, &mut out.head);
    if !publish.batch.is_empty() {
        out.splice(PUBLISH_BATCH, &publish.batch);
    }
    put_u64(5, u64::from(publish.timeout_ms), &mut out.head);
    Ok(())
}

/// Writes `response`'s fields (not its length), a fetch's or subscription's batches shared.
fn put_response(response: &Response, out: &mut Pieces) -> Result<(), FrameError> {
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
        _ => return encode_into(response, &mut out.head),
    };
    // Fields in number order, defaults left out, as prost writes them. Both bodies have
    // two integer fields (numbers 1 and 2) before their batches.
    put_i32(1, response.code, &mut out.head);
    put_string(2, &response.message, &mut out.head);
    open_field(tag, body_len, &mut out.head);
    put_u64(1, first, &mut out.head);
    put_u64(2, second, &mut out.head);
    out.chunks.reserve(2 * batches.len());
    for batch in batches {
        out.splice(BATCHES, batch);
    }
    Ok(())
}

/// Writes `message`'s fields (not its length) as prost does.
fn encode_into(message: &impl Message, head: &mut BytesMut) -> Result<(), FrameError> {
    let size = message.encoded_len();
    head.reserve(size);
    // Not reached: `head` has room for the message now, and grows on demand anyway.
    message.encode(head).map_err(|err| FrameError::TooLarge {
        size: u64::try_from(err.required_capacity()).unwrap_or(u64::MAX),
        max: u32::MAX,
    })
}

/// A `bytes` field copied into the frame, left out when empty.
fn put_bytes(tag: u32, value: &[u8], head: &mut BytesMut) {
    if !value.is_empty() {
        open_field(tag, value.len(), head);
        head.put_slice(value);
    }
}

/// The encoded size of a length-delimited field of `len` bytes, key and length included.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A `string` field, left out when empty.
fn put_string(tag: u32, value: &str, head: &mut BytesMut) {
    put_bytes(tag, value.as_bytes(), head);
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::peer::v1::{AppendEntries, PassedOn, PeerErrorCode, RaftGroup};
    use crate::tests::strategy::{request, response};
    use crate::v1::{FetchResult, Publish, SubscriptionBatches};

    fn bytes() -> impl Strategy<Value = Bytes> {
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from)
    }

    fn peer_request() -> impl Strategy<Value = PeerRequest> {
        let group = prop::option::of(
            (any::<String>(), any::<u32>())
                .prop_map(|(topic, partition)| RaftGroup { topic, partition }),
        );
        let body = prop_oneof![
            (bytes(), prop::collection::vec(bytes(), 0..5)).prop_map(|(request, entries)| {
                peer_request::Body::AppendEntries(AppendEntries { request, entries })
            }),
            (bytes(), any::<u32>()).prop_map(|(request, passes)| {
                peer_request::Body::Client(PassedOn { request, passes })
            }),
            bytes().prop_map(peer_request::Body::Vote),
        ];
        (group, prop::option::of(body)).prop_map(|(group, body)| PeerRequest { group, body })
    }

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

    proptest! {
        #[test]
        fn peer_request_chunks_are_the_frame(request in peer_request()) {
            let codec = FrameCodec::<PeerRequest>::default();
            let chunks = codec.encode_chunks(&request).unwrap();
            prop_assert_eq!(joined(&chunks), codec.encode_to_bytes(&request).unwrap().to_vec());
        }

        #[test]
        fn a_passed_on_request_is_the_frame_of_its_encoding(
            request in request(),
            passes in prop_oneof![Just(0_u32), any::<u32>()],
        ) {
            let codec = FrameCodec::<PeerRequest>::default();
            let chunks = codec.encode_passed_on(&request, passes).unwrap();
            let passed = PeerRequest {
                group: None,
                body: Some(peer_request::Body::Client(PassedOn {
                    request: request.encode_to_vec().into(),
                    passes,
                })),
            };
            prop_assert_eq!(joined(&chunks), codec.encode_to_bytes(&passed).unwrap().to_vec());
        }

        #[test]
        fn an_answered_response_is_the_frame_of_its_encoding(response in response()) {
            let codec = FrameCodec::<PeerResponse>::default();
            let chunks = codec.encode_answered(&response).unwrap();
            let answered = PeerResponse {
                code: PeerErrorCode::Ok.into(),
                message: String::new(),
                result: response.encode_to_vec().into(),
            };
            prop_assert_eq!(joined(&chunks), codec.encode_to_bytes(&answered).unwrap().to_vec());
        }
    }

    #[test]
    fn peer_frames_share_entries_and_passed_on_batches() {
        let batch = Bytes::from(vec![9u8; 4096]);
        let append = PeerRequest {
            group: Some(RaftGroup {
                topic: "orders".into(),
                partition: 2,
            }),
            body: Some(peer_request::Body::AppendEntries(AppendEntries {
                request: Bytes::from_static(b"{}"),
                entries: vec![batch.clone(), batch.clone()],
            })),
        };
        let codec = FrameCodec::<PeerRequest>::default();
        let chunks = codec.encode_chunks(&append).unwrap();
        let shared = chunks
            .iter()
            .filter(|c| c.as_ptr() == batch.as_ptr())
            .count();
        assert_eq!(shared, 2);

        let publish = Request {
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
        let chunks = codec.encode_passed_on(&publish, 1).unwrap();
        assert!(chunks.iter().any(|c| c.as_ptr() == batch.as_ptr()));

        let fetched = Response::ok(response::Body::Fetch(FetchResult {
            high_watermark: 1,
            log_start_offset: 0,
            batches: vec![batch.clone()],
        }));
        let chunks = FrameCodec::<PeerResponse>::default()
            .encode_answered(&fetched)
            .unwrap();
        assert!(chunks.iter().any(|c| c.as_ptr() == batch.as_ptr()));
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
