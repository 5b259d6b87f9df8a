//! The server over real QUIC connections on 127.0.0.1, driven with raw frames: what any
//! client, not only the SDK, meets.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::{Connection, Endpoint};
use sidestream::transport::{ClientTls, QuicTuning, bind_endpoint};
use sidestream_log::batch::{BatchBuilder, ProducerState, validate};
use sidestream_proto::v1::{self, Acks, ErrorCode, request, response, subscribe};
use sidestream_proto::{FrameCodec, Request, Response};

use super::RunningSidecar;
use crate::config::SidecarConfig;

struct Harness {
    _dir: tempfile::TempDir,
    sidecar: RunningSidecar,
    endpoint: Endpoint,
    connection: Connection,
}

async fn start() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let mut config = SidecarConfig::new(dir.path());
    config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
    config.shutdown_grace = Duration::from_secs(2);
    let sidecar = RunningSidecar::start(config).await.unwrap();
    let tuning = QuicTuning::default();
    let endpoint = bind_endpoint(SocketAddr::from(([127, 0, 0, 1], 0)), None, &tuning).unwrap();
    let tls = ClientTls::from_dir(sidecar.tls_dir()).unwrap();
    let connection = tls
        .connect(&endpoint, sidecar.local_addr(), "localhost", &tuning)
        .await
        .unwrap();
    Harness {
        _dir: dir,
        sidecar,
        endpoint,
        connection,
    }
}

impl Harness {
    async fn call(&self, body: request::Body) -> Response {
        let request = Request {
            client_id: "test".into(),
            traceparent: String::new(),
            body: Some(body),
        };
        let frame = FrameCodec::<Request>::new(u32::MAX)
            .encode_to_bytes(&request)
            .unwrap();
        self.raw(&frame).await
    }

    async fn raw(&self, bytes: &[u8]) -> Response {
        let (mut send, mut recv) = self.connection.open_bi().await.unwrap();
        send.write_all(bytes).await.unwrap();
        let _ = send.finish();
        let answer = recv.read_to_end(64 << 20).await.unwrap();
        let mut buf = BytesMut::from(&answer[..]);
        FrameCodec::<Response>::new(u32::MAX)
            .decode_eof(&mut buf)
            .unwrap()
            .unwrap()
    }

    async fn stop(self) {
        self.connection.close(0u32.into(), b"done");
        self.endpoint.wait_idle().await;
        self.sidecar.shutdown().await.unwrap();
    }
}

fn create(name: &str, partitions: u32) -> request::Body {
    request::Body::CreateTopic(v1::CreateTopic {
        name: name.into(),
        partitions,
        replication_factor: 0,
        config: None,
    })
}

fn batch(values: &[&str], producer: ProducerState) -> Bytes {
    let mut builder = BatchBuilder::new();
    for value in values {
        builder
            .push(1_700_000_000_000, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    builder.set_producer(producer);
    Bytes::from(builder.finish().unwrap())
}

fn publish(topic: &str, partition: u32, batch: Bytes) -> request::Body {
    request::Body::Publish(v1::Publish {
        topic: topic.into(),
        partition,
        acks: Acks::All.into(),
        batch,
        timeout_ms: 0,
    })
}

fn code(response: &Response) -> ErrorCode {
    ErrorCode::try_from(response.code).unwrap()
}

#[tokio::test]
async fn publishes_fetches_and_answers_bad_requests_by_name() {
    let h = start().await;
    let created = h.call(create("orders", 2)).await;
    assert_eq!(code(&created), ErrorCode::Ok, "{}", created.message);
    let again = h.call(create("orders", 2)).await;
    assert_eq!(code(&again), ErrorCode::TopicAlreadyExists);
    let bad = h.call(create("orders/eu", 1)).await;
    assert_eq!(code(&bad), ErrorCode::InvalidTopicName);
    assert!(bad.message.contains("'/'"), "{}", bad.message);

    let answer = h
        .call(publish(
            "orders",
            1,
            batch(&["a", "b"], ProducerState::NONE),
        ))
        .await;
    let Some(response::Body::Publish(result)) = answer.body else {
        panic!("{answer:?}")
    };
    assert_eq!((result.base_offset, result.next_offset), (Some(0), Some(2)));

    let unknown = h
        .call(publish("nope", 0, batch(&["a"], ProducerState::NONE)))
        .await;
    assert_eq!(code(&unknown), ErrorCode::UnknownTopic);
    assert!(unknown.message.contains("\"nope\""));
    let no_partition = h
        .call(publish("orders", 7, batch(&["a"], ProducerState::NONE)))
        .await;
    assert_eq!(code(&no_partition), ErrorCode::UnknownPartition);
    let mut corrupt = batch(&["a"], ProducerState::NONE).to_vec();
    *corrupt.last_mut().unwrap() ^= 1;
    let corrupt = h.call(publish("orders", 0, corrupt.into())).await;
    assert_eq!(
        code(&corrupt),
        ErrorCode::CorruptBatch,
        "{}",
        corrupt.message
    );

    let fetch = |offset| {
        request::Body::Fetch(v1::Fetch {
            topic: "orders".into(),
            partition: 1,
            offset,
            max_bytes: 0,
            max_wait_ms: 0,
        })
    };
    let fetched = h.call(fetch(0)).await;
    let Some(response::Body::Fetch(result)) = fetched.body else {
        panic!("{fetched:?}")
    };
    assert_eq!(result.high_watermark, 2);
    assert_eq!(validate(&result.batches[0]).unwrap().base_offset, 0);
    let past = h.call(fetch(3)).await;
    assert_eq!(code(&past), ErrorCode::OffsetOutOfRange);
    assert!(past.message.contains("offset 3"), "{}", past.message);

    // Garbage and an oversized length prefix get error answers; the sidecar keeps serving.
    let garbage = h.raw(&[3, 0, 0, 0, 0xff, 0xff, 0xff]).await;
    assert_eq!(code(&garbage), ErrorCode::MalformedFrame);
    let huge = h.raw(&u32::MAX.to_le_bytes()).await;
    assert_eq!(code(&huge), ErrorCode::FrameTooLarge);
    let empty = h.raw(&[0, 0, 0, 0]).await;
    assert_eq!(code(&empty), ErrorCode::UnsupportedVersion);
    let listed = h.call(request::Body::ListTopics(v1::ListTopics {})).await;
    assert_eq!(code(&listed), ErrorCode::Ok);
    h.stop().await;
}

#[tokio::test]
async fn idempotent_batches_keep_their_order_and_duplicates_are_answered() {
    let h = start().await;
    assert_eq!(code(&h.call(create("t", 1)).await), ErrorCode::Ok);
    let producer = |seq| ProducerState {
        producer_id: 42,
        producer_epoch: 0,
        base_sequence: seq,
    };
    let first = h
        .call(publish("t", 0, batch(&["0", "1"], producer(0))))
        .await;
    assert_eq!(code(&first), ErrorCode::Ok);
    // Sequence 3 arrives before 2: it waits for it, then follows it.
    let (late, early) = tokio::join!(
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            h.call(publish("t", 0, batch(&["2"], producer(2)))).await
        },
        h.call(publish("t", 0, batch(&["3"], producer(3)))),
    );
    let offsets = |r: Response| match r.body {
        Some(response::Body::Publish(p)) => (p.base_offset, p.duplicate),
        _ => panic!("{r:?}"),
    };
    assert_eq!(offsets(late), (Some(2), false));
    assert_eq!(offsets(early), (Some(3), false));
    let again = h.call(publish("t", 0, batch(&["2"], producer(2)))).await;
    assert_eq!(offsets(again), (Some(2), true));
    h.stop().await;
}

#[tokio::test]
async fn a_subscription_receives_committed_batches_as_they_arrive() {
    let h = start().await;
    assert_eq!(code(&h.call(create("s", 1)).await), ErrorCode::Ok);
    h.call(publish("s", 0, batch(&["before"], ProducerState::NONE)))
        .await;
    let (mut send, mut recv) = h.connection.open_bi().await.unwrap();
    let request = Request {
        client_id: "test".into(),
        traceparent: String::new(),
        body: Some(request::Body::Subscribe(v1::Subscribe {
            topic: "s".into(),
            group: Some("g".into()),
            partitions: vec![],
            start: Some(subscribe::Start::Earliest(v1::Earliest {})),
            max_bytes: 0,
        })),
    };
    let codec = FrameCodec::<Request>::new(u32::MAX);
    send.write_all(&codec.encode_to_bytes(&request).unwrap())
        .await
        .unwrap();
    let responses = FrameCodec::<Response>::new(u32::MAX);
    let mut buf = BytesMut::new();
    let mut next = async || loop {
        if let Some(r) = responses.decode(&mut buf).unwrap() {
            return r;
        }
        let chunk = recv.read_chunk(usize::MAX, true).await.unwrap().unwrap();
        buf.extend_from_slice(&chunk.bytes);
    };
    let first = next().await;
    assert!(
        matches!(first.body, Some(response::Body::Assignment(_))),
        "{first:?}"
    );
    let Some(response::Body::SubscriptionBatches(b)) = next().await.body else {
        panic!()
    };
    assert_eq!(b.batches.len(), 1);
    h.call(publish("s", 0, batch(&["after"], ProducerState::NONE)))
        .await;
    let Some(response::Body::SubscriptionBatches(b)) = next().await.body else {
        panic!()
    };
    assert_eq!(validate(&b.batches[0]).unwrap().base_offset, 1);
    assert_eq!(b.high_watermark, 2);
    // Deleting the topic ends the subscription with UNKNOWN_TOPIC.
    let deleted = h
        .call(request::Body::DeleteTopic(v1::DeleteTopic {
            name: "s".into(),
        }))
        .await;
    assert_eq!(code(&deleted), ErrorCode::Ok);
    let end = next().await;
    assert_eq!(code(&end), ErrorCode::UnknownTopic);
    // A topic created again under the name starts empty, in files of its own.
    assert_eq!(code(&h.call(create("s", 1)).await), ErrorCode::Ok);
    let again = h
        .call(publish("s", 0, batch(&["new"], ProducerState::NONE)))
        .await;
    let Some(response::Body::Publish(result)) = again.body else {
        panic!("{again:?}")
    };
    assert_eq!(result.base_offset, Some(0));
    h.stop().await;
}
