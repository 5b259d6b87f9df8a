//! Property tests of the frame codec: every message survives a round trip, frames survive
//! any split of the stream, and no input makes the decoder panic or over-read.

use bytes::{BufMut, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

use super::strategy::{request, response};
use crate::v1::{Request, Response};
use crate::{FRAME_HEADER_SIZE, FrameCodec, FrameError};

proptest! {
    #[test]
    fn request_round_trips(request in request()) {
        let codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        codec.encode(&request, &mut wire).unwrap();
        prop_assert_eq!(codec.decode(&mut wire), Ok(Some(request)));
        prop_assert!(wire.is_empty());
    }

    #[test]
    fn response_round_trips(response in response()) {
        let codec = FrameCodec::default();
        let frame = codec.encode_to_bytes(&response).unwrap();
        let mut wire = BytesMut::from(&frame[..]);
        prop_assert_eq!(codec.decode_eof(&mut wire), Ok(Some(response)));
        prop_assert_eq!(codec.decode_eof(&mut wire), Ok(None));
    }

    #[test]
    fn frames_survive_any_split_of_the_stream(
        responses in vec(response(), 1..6),
        cuts in vec(1..64_usize, 1..200),
    ) {
        let codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for response in &responses {
            codec.encode(response, &mut wire).unwrap();
        }

        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        let mut cuts = cuts.into_iter().cycle();
        while !wire.is_empty() {
            let take = cuts.next().unwrap_or(1).min(wire.len());
            src.put(wire.split_to(take));
            while let Some(response) = codec.decode(&mut src).unwrap() {
                decoded.push(response);
            }
        }
        prop_assert_eq!(codec.decode_eof(&mut src), Ok(None));
        prop_assert_eq!(decoded, responses);
    }

    #[test]
    fn byte_by_byte_delivery_yields_exactly_the_messages(requests in vec(request(), 1..4)) {
        let codec = FrameCodec::default();
        let mut wire = BytesMut::new();
        for request in &requests {
            codec.encode(request, &mut wire).unwrap();
        }
        let mut src = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire {
            src.put_u8(byte);
            if let Some(request) = codec.decode(&mut src).unwrap() {
                decoded.push(request);
            }
        }
        prop_assert_eq!(decoded, requests);
        prop_assert!(src.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_request_decoder(
        bytes in vec(any::<u8>(), 0..512),
        max in prop_oneof![Just(crate::DEFAULT_MAX_FRAME_SIZE), 0..300_u32],
    ) {
        drain::<Request>(FrameCodec::new(max), &bytes)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_response_decoder(
        bytes in vec(any::<u8>(), 0..512),
        max in prop_oneof![Just(crate::DEFAULT_MAX_FRAME_SIZE), 0..300_u32],
    ) {
        drain::<Response>(FrameCodec::new(max), &bytes)?;
    }

    #[test]
    fn oversized_length_prefix_is_rejected_whatever_follows(
        max in 0..(1_u32 << 24),
        excess in 1..=u32::MAX,
        body in vec(any::<u8>(), 0..64),
    ) {
        let length = max.saturating_add(excess);
        prop_assume!(length > max);
        let codec = FrameCodec::<Request>::new(max);
        let mut src = BytesMut::new();
        src.put_u32_le(length);
        src.put_slice(&body);
        let before = src.clone();
        prop_assert_eq!(
            codec.decode(&mut src),
            Err(FrameError::TooLarge { size: u64::from(length), max })
        );
        prop_assert_eq!(src, before, "a refused frame is not consumed");
    }
}

/// Decodes frames from `bytes` until the decoder wants more or fails, checking that each
/// step consumes exactly one frame and that `decode_eof` agrees on what is left.
fn drain<M: prost::Message + Default + PartialEq>(
    codec: FrameCodec<M>,
    bytes: &[u8],
) -> Result<(), TestCaseError> {
    let mut src = BytesMut::from(bytes);
    loop {
        let before = src.len();
        match codec.decode(&mut src) {
            Ok(Some(_)) => {
                prop_assert!(
                    src.len() + FRAME_HEADER_SIZE <= before,
                    "a frame was consumed"
                );
            }
            Ok(None) => {
                prop_assert_eq!(src.len(), before, "nothing consumed while waiting");
                let at_end = codec.decode_eof(&mut src);
                prop_assert_eq!(at_end.is_ok(), src.is_empty());
                return Ok(());
            }
            Err(FrameError::TooLarge { size, max }) => {
                prop_assert!(size > u64::from(max));
                prop_assert_eq!(src.len(), before, "nothing consumed when too large");
                return Ok(());
            }
            Err(FrameError::Malformed(_)) => {
                prop_assert!(
                    src.len() + FRAME_HEADER_SIZE <= before,
                    "the frame was consumed"
                );
                return Ok(());
            }
            Err(other) => return Err(TestCaseError::fail(format!("unexpected {other}"))),
        }
    }
}
