//! Tests of the subscribe path without a sidecar: frames of batches built with
//! `BatchBuilder` go into a [`Feed`], deliveries and commits come out.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use sidestream_log::batch::{BatchBuilder, BatchHeader, HeaderPieces, RaftLogId, put_header};
use sidestream_log::{ControlKind, RecordBatch};
use sidestream_proto::v1::{AssignedPartition, Assignment};

use super::feed::Feed;
use super::positions::{Commit, Positions};
use super::reader::Frame;
use super::{Delivery, Payload};
use crate::{Error, Headers, RawEvent, headers};

#[derive(Clone, PartialEq, prost::Message, crate::Event)]
#[event(
    crate = "crate",
    topic = "orders",
    key = "order_id",
    type_name = "shop.OrderPlaced.v1"
)]
struct OrderPlaced {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(uint64, tag = "2")]
    amount_cents: u64,
}

const PLACED: &[u8] = b"shop.OrderPlaced.v1";

fn order(id: &str) -> Vec<u8> {
    prost::Message::encode_to_vec(&OrderPlaced {
        order_id: id.into(),
        amount_cents: 100,
    })
}

/// A stored batch at `base_offset` of records `(key, value, type header)`.
/// A record of a test batch: key, value and `type` header.
type Spec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, Option<&'a [u8]>);

fn batch(base_offset: u64, records: &[Spec<'_>]) -> Bytes {
    let mut builder = BatchBuilder::new();
    for (i, (key, value, type_name)) in (0i64..).zip(records) {
        let mut headers: Vec<(&str, &[u8])> = vec![(
            headers::ID,
            &[
                0x01, 0x90, 0xb6, 0xa2, 0x7c, 0x1e, 0x7d, 0x3a, 0x9f, 0x2b, 0x4c, 0x5d, 0x6e, 0x7f,
                0x8a, 0x9b,
            ],
        )];
        if let Some(type_name) = type_name {
            headers.push((headers::TYPE, type_name));
        }
        headers.push((headers::SOURCE, b"order-service"));
        builder
            .push(1_700_000_000_000 + i, *key, *value, &headers)
            .unwrap();
    }
    stamped(builder.finish().unwrap(), base_offset)
}

fn stamped(mut bytes: Vec<u8>, base_offset: u64) -> Bytes {
    BatchHeader::stamp(&mut bytes, base_offset, RaftLogId { term: 1, index: 1 });
    Bytes::from(bytes)
}

fn orders(base_offset: u64, ids: &[&str]) -> Bytes {
    let values: Vec<Vec<u8>> = ids.iter().map(|id| order(id)).collect();
    let records: Vec<_> = ids
        .iter()
        .zip(&values)
        .map(|(id, value)| (Some(id.as_bytes()), Some(&value[..]), Some(PLACED)))
        .collect();
    batch(base_offset, &records)
}

fn assignment(generation: u64, partitions: &[(u32, u64)]) -> Assignment {
    Assignment {
        generation,
        partitions: partitions
            .iter()
            .map(|&(partition, offset)| AssignedPartition { partition, offset })
            .collect(),
    }
}

fn frame(partition: u32, batches: Vec<Bytes>) -> Frame {
    Frame::Batches {
        partition,
        high_watermark: 100,
        batches,
        permit: None,
    }
}

fn new_feed<T: Payload>(group: bool, first: &Assignment) -> (Feed<T>, Arc<Mutex<Positions>>) {
    let mut positions = Positions::new(group);
    positions.assign(first, group);
    let positions = Arc::new(Mutex::new(positions));
    (
        Feed::new("orders".into(), group, Arc::clone(&positions)),
        positions,
    )
}

fn drain<T: Payload>(feed: &mut Feed<T>) -> Vec<Result<Delivery<T>, Error>> {
    std::iter::from_fn(|| feed.next_item()).collect()
}

fn commits(positions: &Mutex<Positions>) -> Vec<Commit> {
    positions.lock().unwrap().commits_due()
}

#[test]
fn typed_deliveries_carry_event_place_key_and_headers() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(4, &[(2, 10)]));
    assert!(feed.next_item().is_none(), "nothing before a frame");
    assert!(
        feed.handle_frame(frame(2, vec![orders(10, &["o-1", "o-2"])]))
            .is_none()
    );
    let items = drain(&mut feed);
    assert_eq!(items.len(), 2);
    let first = items[0].as_ref().unwrap();
    assert_eq!(first.event.order_id, "o-1");
    assert_eq!(first.event.amount_cents, 100);
    assert_eq!(
        (first.topic(), first.partition, first.offset),
        ("orders", 2, 10)
    );
    assert_eq!(first.timestamp, 1_700_000_000_000);
    assert_eq!(first.key.as_deref(), Some(&b"o-1"[..]));
    assert_eq!(first.headers().type_name(), Some("shop.OrderPlaced.v1"));
    assert_eq!(first.headers().source(), Some("order-service"));
    assert_eq!(first.headers().len(), 3);
    let second = items[1].as_ref().unwrap();
    assert_eq!((second.offset, second.timestamp), (11, 1_700_000_000_001));

    assert_eq!(commits(&positions), [], "nothing acked yet");
    first.ack().into_inner().unwrap();
    assert_eq!(
        commits(&positions),
        [Commit {
            partition: 2,
            offset: 11,
            generation: 4
        }]
    );
}

#[test]
fn an_event_of_another_type_is_reported_not_decoded() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
    let cancelled = order("o-9");
    let frame_batch = batch(
        0,
        &[
            (None, Some(&order("o-1")), Some(PLACED)),
            (None, Some(&cancelled), Some(b"shop.OrderCancelled.v1")),
            (None, Some(&order("o-2")), Some(PLACED)),
        ],
    );
    feed.handle_frame(frame(0, vec![frame_batch]));
    let items = drain(&mut feed);
    assert_eq!(items.len(), 3, "the stream goes on after the mismatch");
    match &items[1] {
        Err(Error::TypeMismatch {
            topic,
            partition: 0,
            offset: 1,
            expected: "shop.OrderPlaced.v1",
            found: Some(found),
        }) if topic == "orders" && found == "shop.OrderCancelled.v1" => {}
        other => panic!("expected a type mismatch, got {other:?}"),
    }
    let message = items[1].as_ref().err().unwrap().to_string();
    assert!(message.contains("shop.OrderCancelled.v1") && message.contains("shop.OrderPlaced.v1"));
    assert_eq!(items[2].as_ref().unwrap().event.order_id, "o-2");

    items[0].as_ref().unwrap().ack().into_inner().unwrap();
    assert_eq!(
        commits(&positions)[0].offset,
        2,
        "the reported event counts as handled"
    );
}

#[test]
fn missing_type_bad_value_and_tombstone_are_typed_errors() {
    let (mut feed, _) = new_feed::<OrderPlaced>(false, &assignment(0, &[(3, 0)]));
    let garbage = [0xff_u8, 0xff, 0xff];
    let frame_batch = batch(
        0,
        &[
            (None, Some(&order("o-1")), None),
            (None, Some(&garbage), Some(PLACED)),
            (Some(b"o-1"), None, Some(PLACED)),
        ],
    );
    feed.handle_frame(frame(3, vec![frame_batch]));
    let items = drain(&mut feed);
    assert!(matches!(
        &items[0],
        Err(Error::TypeMismatch {
            found: None,
            offset: 0,
            ..
        })
    ));
    assert!(matches!(
        &items[1],
        Err(Error::Decode {
            partition: 3,
            offset: 1,
            type_name: "shop.OrderPlaced.v1",
            ..
        })
    ));
    assert!(matches!(
        &items[2],
        Err(Error::MissingValue {
            partition: 3,
            offset: 2,
            ..
        })
    ));
}

#[test]
fn records_below_the_start_offset_and_redelivered_batches_are_skipped() {
    let (mut feed, _) = new_feed::<OrderPlaced>(false, &assignment(0, &[(0, 3)]));
    feed.handle_frame(frame(0, vec![orders(0, &["a", "b", "c", "d", "e"])]));
    let offsets: Vec<u64> = drain(&mut feed)
        .into_iter()
        .map(|d| d.unwrap().offset)
        .collect();
    assert_eq!(offsets, [3, 4]);

    // After a resubscription the sidecar sends the same batch again, then new ones.
    feed.handle_frame(Frame::Assignment(assignment(0, &[(0, 0)])));
    feed.handle_frame(frame(
        0,
        vec![orders(0, &["a", "b", "c", "d", "e"]), orders(5, &["f"])],
    ));
    let offsets: Vec<u64> = drain(&mut feed)
        .into_iter()
        .map(|d| d.unwrap().offset)
        .collect();
    assert_eq!(offsets, [5]);
}

#[test]
fn control_batches_move_the_position_without_deliveries() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
    let blank = RecordBatch::control(ControlKind::Blank, 1, Bytes::new())
        .encode()
        .unwrap();
    feed.handle_frame(frame(
        0,
        vec![orders(0, &["a"]), stamped(blank, 1), orders(1, &["b"])],
    ));
    let items = drain(&mut feed);
    let offsets: Vec<u64> = items.iter().map(|d| d.as_ref().unwrap().offset).collect();
    assert_eq!(offsets, [0, 1]);
    for item in &items {
        item.as_ref().unwrap().ack().into_inner().unwrap();
    }
    assert_eq!(commits(&positions)[0].offset, 2);
}

#[test]
fn a_corrupt_batch_ends_the_feed() {
    let (mut feed, _) = new_feed::<OrderPlaced>(false, &assignment(0, &[(0, 0)]));
    let mut corrupt = orders(1, &["b"]).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0x55;
    feed.handle_frame(frame(
        0,
        vec![orders(0, &["a"]), Bytes::from(corrupt), orders(2, &["c"])],
    ));
    let items = drain(&mut feed);
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(matches!(
        &items[1],
        Err(Error::CorruptBatch { partition: 0, .. })
    ));
    assert!(feed.is_broken());
    feed.handle_frame(frame(0, vec![orders(3, &["d"])]));
    assert!(feed.next_item().is_none());
}

#[test]
fn truncated_bytes_are_corrupt_not_a_panic() {
    let (mut feed, _) = new_feed::<RawEvent>(false, &assignment(0, &[(0, 0)]));
    let whole = orders(0, &["a"]);
    for cut in [0, 1, 40, 72, 73, whole.len() - 1] {
        let (mut feed_cut, _) = new_feed::<RawEvent>(false, &assignment(0, &[(0, 0)]));
        feed_cut.handle_frame(frame(0, vec![whole.slice(..cut)]));
        assert!(matches!(
            feed_cut.next_item(),
            Some(Err(Error::CorruptBatch { .. }))
        ));
    }
    feed.handle_frame(frame(0, vec![whole]));
    assert!(feed.next_item().unwrap().is_ok());
}

/// `bytes` with its length and CRC made right again after an edit.
fn resealed(mut bytes: Vec<u8>) -> Bytes {
    let length = u32::try_from(bytes.len()).unwrap();
    bytes[8..12].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&bytes[33..]);
    bytes[29..33].copy_from_slice(&crc.to_le_bytes());
    Bytes::from(bytes)
}

#[test]
fn a_bad_record_under_a_good_crc_drops_its_batch_and_is_named() {
    let whole = orders(0, &["a", "b"]);
    // The last record's last header is `source`: its name's first byte made not UTF-8.
    let mut bad_name = whole.to_vec();
    let at = bad_name.len() - b"order-service".len() - 1 - b"source".len();
    assert_eq!(&bad_name[at..at + 6], b"source");
    bad_name[at] = 0xff;
    let mut trailing = whole.to_vec();
    trailing.push(0);
    for (bytes, named) in [
        (resealed(bad_name), "header name is not UTF-8"),
        (resealed(trailing), "bytes after the last record"),
    ] {
        let (mut feed, _) = new_feed::<RawEvent>(false, &assignment(0, &[(0, 0)]));
        feed.handle_frame(frame(0, vec![bytes]));
        let items = drain(&mut feed);
        assert_eq!(items.len(), 1, "no record of the batch is delivered");
        let Err(error @ Error::CorruptBatch { .. }) = &items[0] else {
            panic!("expected a corrupt batch, got {:?}", items[0]);
        };
        let source = std::error::Error::source(error).unwrap().to_string();
        assert!(source.contains(named), "{source:?} names {named:?}");
    }
}

#[test]
fn hostile_bytes_never_panic() {
    let valid = batch(
        5,
        &[
            (Some(b"k"), Some(&order("a")), Some(PLACED)),
            (None, None, None),
            (Some(b""), Some(b"\xff"), Some(b"other.v1")),
        ],
    );
    for round in 0..3000_u64 {
        let mut bytes = valid.to_vec();
        let flips = 1 + crate::random::random_u64() % 4;
        for _ in 0..flips {
            let at = usize::try_from(crate::random::random_u64() % bytes.len() as u64).unwrap();
            bytes[at] = u8::try_from(crate::random::random_u64() & 0xff).unwrap();
        }
        if round % 2 == 0 {
            // Make the CRC right again, so that the record parser sees the damage.
            let crc = crc32c::crc32c(&bytes[33..]);
            bytes[29..33].copy_from_slice(&crc.to_le_bytes());
        }
        if round % 7 == 0 {
            BatchHeader::stamp(&mut bytes, u64::MAX - 1, RaftLogId::default());
        }
        let (mut typed, _) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
        typed.handle_frame(frame(0, vec![Bytes::from(bytes.clone())]));
        let _ = drain(&mut typed);
        let (mut raw, _) = new_feed::<RawEvent>(false, &assignment(0, &[(0, u64::MAX)]));
        raw.handle_frame(frame(0, vec![Bytes::from(bytes)]));
        let _ = drain(&mut raw);
    }
}

#[test]
fn raw_deliveries_keep_every_header_in_order() {
    let (mut feed, _) = new_feed::<RawEvent>(false, &assignment(0, &[(1, 0)]));
    feed.handle_frame(frame(
        1,
        vec![batch(
            7,
            &[
                (Some(b"k"), Some(b"hello"), Some(b"text")),
                (None, None, None),
            ],
        )],
    ));
    let items = drain(&mut feed);
    let first = items[0].as_ref().unwrap();
    assert_eq!(first.offset, 7);
    assert_eq!(first.event.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(&first.event.value[..], b"hello");
    let names: Vec<&str> = first.event.headers.iter().map(|(name, _)| name).collect();
    assert_eq!(names, ["id", "type", "source"]);
    assert_eq!(first.event.header("type"), Some(&b"text"[..]));
    let second = items[1].as_ref().unwrap();
    assert!(second.event.value.is_empty() && second.event.key.is_none());
}

/// A stored batch at `base_offset` whose records share `type` and `source` headers: each
/// record is `(value, type)`, its type its own where it differs from the first record's.
fn sharing_batch(base_offset: u64, records: &[(&[u8], &[u8])]) -> Bytes {
    let mut source = Vec::new();
    put_header(&mut source, headers::SOURCE, b"order-service");
    let types: Vec<Vec<u8>> = records
        .iter()
        .map(|(_, type_name)| {
            let mut wire = Vec::new();
            put_header(&mut wire, headers::TYPE, type_name);
            wire
        })
        .collect();
    let offer = |i: usize| [&types[i][..], &source[..]];
    let first = offer(0);
    let per_header = &[1, 1];
    let mut builder = BatchBuilder::with_shared_headers(
        0,
        HeaderPieces {
            pieces: &first,
            per_header,
        },
    )
    .unwrap();
    for (i, (value, _)) in records.iter().enumerate() {
        let mut id = Vec::new();
        put_header(&mut id, headers::ID, &[u8::try_from(i).unwrap(); 16]);
        let pieces = offer(i);
        builder
            .push_sharing(
                1_700_000_000_000,
                None,
                Some(value),
                HeaderPieces {
                    pieces: &[&id],
                    per_header: &[1],
                },
                HeaderPieces {
                    pieces: &pieces,
                    per_header,
                },
            )
            .unwrap();
    }
    stamped(builder.finish().unwrap(), base_offset)
}

#[test]
fn deliveries_carry_the_headers_their_batch_shares() {
    let (placed, cancelled) = (order("o-1"), order("o-2"));
    let records: &[(&[u8], &[u8])] = &[(&placed, PLACED), (&cancelled, b"shop.OrderCancelled.v1")];

    let (mut raw, _) = new_feed::<RawEvent>(false, &assignment(0, &[(0, 0)]));
    raw.handle_frame(frame(0, vec![sharing_batch(0, records)]));
    let items = drain(&mut raw);
    let names = |headers: &Headers| -> Vec<String> {
        headers
            .iter()
            .map(|(name, value)| format!("{name}={}", value.len()))
            .collect()
    };
    let first = &items[0].as_ref().unwrap().event.headers;
    assert_eq!(names(first), ["id=16", "type=19", "source=13"]);
    assert_eq!(first.type_name(), Some("shop.OrderPlaced.v1"));
    assert_eq!(first.source(), Some("order-service"));
    assert_eq!(first.len(), 3);
    // Its own type first, then the shared source; the shared type is not its.
    let second = &items[1].as_ref().unwrap().event.headers;
    assert_eq!(second.type_name(), Some("shop.OrderCancelled.v1"));
    assert_eq!(
        second.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        ["id", "type", "source"]
    );
    assert_eq!(second.len(), 3);
    // Equal to the same headers held whole.
    let whole: Headers = first.iter().collect();
    assert_eq!(
        first.iter().collect::<Vec<_>>(),
        whole.iter().collect::<Vec<_>>()
    );
    // A header added keeps the shared ones, even of the same name.
    let mut more = first.clone();
    more.push(headers::SOURCE, "relay");
    assert_eq!(
        more.iter().map(|(name, _)| name).collect::<Vec<_>>(),
        ["id", "type", "source", "source"]
    );
    assert_eq!(more.source(), Some("order-service"));

    let (mut typed, _) = new_feed::<OrderPlaced>(false, &assignment(0, &[(0, 0)]));
    typed.handle_frame(frame(0, vec![sharing_batch(0, records)]));
    let items = drain(&mut typed);
    assert_eq!(items[0].as_ref().unwrap().event.order_id, "o-1");
    assert!(
        matches!(&items[1], Err(Error::TypeMismatch { .. })),
        "{:?}",
        items[1]
    );
}

#[test]
fn frames_of_unassigned_partitions_are_dropped() {
    let (mut feed, _) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
    feed.handle_frame(frame(5, vec![orders(0, &["x"])]));
    assert!(feed.next_item().is_none());
}

#[test]
fn a_rebalance_drops_revoked_partitions_and_owes_their_commit() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0), (1, 0)]));
    feed.handle_frame(frame(0, vec![orders(0, &["a", "b"])]));
    let items = drain(&mut feed);
    for item in &items {
        item.as_ref().unwrap().ack().into_inner().unwrap();
    }
    feed.handle_frame(Frame::Assignment(assignment(2, &[(1, 0)])));
    assert_eq!(
        commits(&positions),
        [Commit {
            partition: 0,
            offset: 2,
            generation: 2
        }]
    );
    feed.handle_frame(frame(0, vec![orders(2, &["c"])]));
    assert!(
        feed.next_item().is_none(),
        "partition 0 is no longer delivered"
    );
    feed.handle_frame(frame(1, vec![orders(0, &["z"])]));
    assert_eq!(feed.next_item().unwrap().unwrap().partition, 1);
}

#[test]
fn an_ack_handle_acknowledges_after_the_event_moved_on() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
    feed.handle_frame(frame(0, vec![orders(0, &["a"])]));
    let delivery = feed.next_item().unwrap().unwrap();
    let handle = delivery.ack_handle();
    let event = delivery.into_event();
    assert_eq!(event.order_id, "a");
    assert_eq!((handle.partition(), handle.offset()), (0, 0));
    handle.ack();
    assert_eq!(commits(&positions)[0].offset, 1);
}

#[test]
fn half_a_batch_handed_out_commits_and_reports_lag_from_the_first_record_held() {
    let (mut feed, positions) = new_feed::<OrderPlaced>(true, &assignment(1, &[(0, 0)]));
    feed.handle_frame(frame(0, vec![orders(0, &["a", "b", "c", "d"])]));
    for _ in 0..2 {
        let delivery = feed.next_item().unwrap().unwrap();
        delivery.ack().into_inner().unwrap();
    }
    assert_eq!(
        commits(&positions)[0].offset,
        2,
        "records decoded but not handed out hold the commit back"
    );
    let (partition, next) = feed.held().map(|(p, _, o)| (p, o)).unwrap();
    assert_eq!((partition, next), (0, 2));
    let snapshot = positions.lock().unwrap().snapshot(feed.held());
    assert_eq!(snapshot, [(0, 2, 100)], "lag counts the records held");
    let rest = drain(&mut feed);
    assert_eq!(rest.len(), 2);
    assert_eq!(feed.held(), None);
    assert_eq!(positions.lock().unwrap().snapshot(None), [(0, 4, 100)]);
    assert_eq!(commits(&positions)[0].offset, 2, "c and d are not acked");
}

#[test]
fn public_types_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<crate::Client>();
    send_sync::<Error>();
    send_sync::<crate::AckHandle>();
    send::<crate::PendingReceipt>();
    send::<crate::Subscription<OrderPlaced>>();
    send::<crate::Subscription<RawEvent>>();
    send_sync::<Delivery<OrderPlaced>>();
}

#[test]
fn a_final_error_frame_ends_with_its_error() {
    let (mut feed, _) = new_feed::<OrderPlaced>(false, &assignment(0, &[(0, 0)]));
    let error = feed.handle_frame(Frame::End(Error::UnknownTopic {
        topic: "orders".into(),
        message: "deleted".into(),
    }));
    assert!(matches!(error, Some(Error::UnknownTopic { .. })));
}
