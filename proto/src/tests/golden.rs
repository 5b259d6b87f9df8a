//! Fixed frames, byte for byte. They catch a renumbered field or a changed frame layout,
//! which would break every deployed client: such a change needs a new protocol version.

use bytes::{Bytes, BytesMut};

use crate::FrameCodec;
use crate::v1::{
    Acks, ErrorCode, Publish, Request, Response, SubscriptionBatches, request, response,
};

fn check<M: prost::Message + Default + PartialEq + std::fmt::Debug>(message: &M, frame: &[u8]) {
    let codec = FrameCodec::<M>::default();
    assert_eq!(&codec.encode_to_bytes(message).unwrap()[..], frame);
    let mut src = BytesMut::from(frame);
    assert_eq!(codec.decode(&mut src).unwrap().as_ref(), Some(message));
}

#[test]
fn publish_request() {
    let request = Request {
        client_id: "svc".into(),
        traceparent: String::new(),
        body: Some(request::Body::Publish(Publish {
            topic: "t".into(),
            partition: 1,
            acks: Acks::All.into(),
            batch: Bytes::from_static(&[1, 2]),
            timeout_ms: 0,
        })),
    };
    #[rustfmt::skip]
    let frame = [
        18, 0, 0, 0,                    // length 18, little-endian
        0x0a, 3, b's', b'v', b'c',      // 1 client_id: "svc"
        0x72, 11,                       // 14 publish: 11 bytes
        0x0a, 1, b't',                  //   1 topic: "t"
        0x10, 1,                        //   2 partition: 1
        0x18, 3,                        //   3 acks: ACKS_ALL
        0x22, 2, 1, 2,                  //   4 batch: 01 02
    ];
    check(&request, &frame);
}

#[test]
fn error_response() {
    let response = Response::error(ErrorCode::UnknownTopic, "x");
    #[rustfmt::skip]
    let frame = [
        5, 0, 0, 0,                     // length 5
        0x08, 10,                       // 1 code: UNKNOWN_TOPIC
        0x12, 1, b'x',                  // 2 message: "x"
    ];
    check(&response, &frame);
}

#[test]
fn subscription_batches_response() {
    let response = Response::ok(response::Body::SubscriptionBatches(SubscriptionBatches {
        partition: 2,
        high_watermark: 7,
        batches: vec![Bytes::from_static(b"ab")],
    }));
    #[rustfmt::skip]
    let frame = [
        11, 0, 0, 0,                    // length 11 (code OK and empty message: not written)
        0xa2, 0x01, 8,                  // 20 subscription_batches: 8 bytes
        0x08, 2,                        //   1 partition: 2
        0x10, 7,                        //   2 high_watermark: 7
        0x1a, 2, b'a', b'b',            //   3 batches: "ab"
    ];
    check(&response, &frame);
}
