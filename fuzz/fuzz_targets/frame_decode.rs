//! Arbitrary bytes through the frame decoder, as requests and as responses: never a panic,
//! only whole frames are consumed, and every decoded message survives a round trip.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use sidestream_proto::{FrameCodec, Request, Response};

fn drain<M: prost::Message + Default + PartialEq + std::fmt::Debug>(data: &[u8]) {
    let codec = FrameCodec::<M>::new(1 << 16);
    let mut src = BytesMut::from(data);
    while let Ok(Some(message)) = codec.decode(&mut src) {
        // Re-encoding may be longer than the input (a negative int32 is a 10-byte varint even
        // if it arrived shorter), so re-encode under the default limit.
        let frame = FrameCodec::<M>::default()
            .encode_to_bytes(&message)
            .expect("a decoded message re-encodes");
        let again = FrameCodec::<M>::default().decode(&mut BytesMut::from(&frame[..]));
        assert_eq!(again, Ok(Some(message)));
    }
    let _ = codec.decode_eof(&mut src);
}

fuzz_target!(|data: &[u8]| {
    drain::<Request>(data);
    drain::<Response>(data);
});
