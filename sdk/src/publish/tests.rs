//! Tests of the publish path's state machine: batching rules, partitioning, sequence numbers,
//! retries and failures, fed with events and a virtual clock.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use sidestream_log::batch::{BatchBuilder, ProducerState, validate};
use sidestream_log::{BatchBody, RecordBatch};
use sidestream_proto::{ErrorCode, ResponseError};

use super::accumulator::{Accumulator, AppendError, BatchConfig, Route, Transmit};
use super::partition_queue::{
    LazyNow, Outcome, RecordHeaders, RecordParts, batch_capacity, next_sequence, record_bound,
    restamp,
};
use super::standard_headers::{StandardHeaders, TypePrefix, encode_header};
use super::{Acks, PendingReceipt, Receipt};
use crate::Error;
use crate::partitioner::{murmur2, partition_for_key};

const PRODUCER: i64 = 4242;

/// The id of the connection the tests' batches are acknowledged on.
const CONNECTION: usize = 1;

fn config() -> BatchConfig {
    BatchConfig {
        batch_bytes: 1024,
        linger: Duration::ZERO,
        max_in_flight: 3,
        request_timeout: Duration::from_secs(30),
        retry_backoff: Duration::from_millis(10),
        max_retry_backoff: Duration::from_secs(1),
    }
}

fn next_producer() -> i64 {
    7777
}

fn accumulator(config: BatchConfig, partitions: u32) -> Accumulator {
    let mut accumulator = Accumulator::new(config, PRODUCER, next_producer);
    accumulator.set_topic("orders", partitions, 0);
    accumulator.set_connection(Some(CONNECTION));
    accumulator
}

/// Appends an event with `value` (and `key`), reserving its bound as the producer does.
fn append(
    accumulator: &mut Accumulator,
    key: Option<&[u8]>,
    value: &[u8],
    acks: Acks,
    now: Instant,
) -> (PendingReceipt, bool) {
    let headers = [("type", &b"shop.OrderPlaced.v1"[..])];
    let reserved = record_bound(key, Some(value.len()), &RecordHeaders::Pairs(&headers));
    let route = key.map_or(Route::Sticky, |key| Route::Hash(murmur2(key)));
    let record = RecordParts {
        timestamp: 1_700_000_000_000,
        key,
        value: Some(value),
        headers: RecordHeaders::Pairs(&headers),
    };
    let appended = accumulator
        .append(
            "orders",
            route,
            record,
            acks,
            reserved,
            &mut LazyNow::at(now),
        )
        .unwrap();
    (appended.receipt, appended.wake)
}

fn poll(accumulator: &mut Accumulator, now: Instant) -> Vec<Transmit> {
    let mut out = Vec::new();
    accumulator.poll_transmit(now, &mut out);
    out
}

fn decode(transmit: &Transmit) -> RecordBatch {
    RecordBatch::decode(&transmit.bytes).unwrap()
}

fn values(transmit: &Transmit) -> Vec<Bytes> {
    match decode(transmit).body {
        BatchBody::Records(records) => records.into_iter().filter_map(|r| r.value).collect(),
        BatchBody::Control(_) => Vec::new(),
    }
}

fn resolved(receipt: &mut PendingReceipt) -> Option<Result<Receipt, Error>> {
    match Pin::new(receipt).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => Some(result),
        Poll::Pending => None,
    }
}

fn refused(code: ErrorCode) -> Error {
    Error::from_response(
        &ResponseError::new(code, "refused"),
        Some("orders"),
        Some(0),
    )
}

#[test]
fn record_bound_matches_the_batch_builder() {
    let headers = [
        ("id", &[0x55; 16][..]),
        ("type", &b"shop.OrderPlaced.v1"[..]),
        ("source", &b"order-service"[..]),
    ];
    for key in [
        None,
        Some(&b""[..]),
        Some(&b"order-17"[..]),
        Some(&[7u8; 300][..]),
    ] {
        for value_len in [0, 1, 63, 64, 100, 8191, 8192, 100_000] {
            let value = vec![1u8; value_len];
            let bound = BatchBuilder::record_size_bound(key, Some(&value), &headers);
            assert_eq!(
                record_bound(key, Some(value_len), &RecordHeaders::Pairs(&headers)),
                bound,
                "key {key:?} value {value_len}"
            );
            // The same headers in wire form, in two pieces.
            let mut wire = Vec::new();
            for (name, value) in headers {
                sidestream_log::batch::put_header(&mut wire, name, value);
            }
            let (first, second) = wire.split_at(7);
            let pieces = [first, second];
            assert_eq!(
                record_bound(
                    key,
                    Some(value_len),
                    &RecordHeaders::Wire {
                        count: headers.len(),
                        pieces: &pieces,
                    }
                ),
                bound,
                "wire headers, key {key:?} value {value_len}"
            );
        }
    }
    assert_eq!(
        record_bound(None, None, &RecordHeaders::Pairs(&[])),
        BatchBuilder::record_size_bound(None, None, &[])
    );
}

#[test]
fn a_batch_starts_a_little_larger_than_the_one_before_within_the_batch_size() {
    let batch_bytes = 1 << 20;
    // The first batch of a partition, and one after small batches, start at 16 KiB.
    assert_eq!(batch_capacity(0, batch_bytes), 16 * 1024);
    assert_eq!(batch_capacity(200, batch_bytes), 16 * 1024);
    // After a larger one, an eighth more: a batch of the same size does not grow.
    assert_eq!(batch_capacity(400_000, batch_bytes), 450_000);
    // Never more than a whole batch, nor more than the batch size when that is small.
    assert_eq!(batch_capacity(1_000_000, batch_bytes), batch_bytes);
    assert_eq!(batch_capacity(0, 1024), 1024);
    assert_eq!(batch_capacity(usize::MAX, 1024), 1024);
}

#[test]
fn an_idle_partition_sends_its_first_event_at_once() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let (mut first, wake) = append(&mut acc, None, b"a", Acks::All, now);
    assert!(wake, "a new batch wakes the sender");
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 1);
    assert_eq!(values(&sent[0]), [Bytes::from("a")]);
    assert_eq!(sent[0].acks, Acks::All);

    // While it is in flight, events accumulate (Nagle): nothing more is sent.
    let (mut second, wake) = append(&mut acc, None, b"b", Acks::All, now);
    assert!(wake, "opening the next batch wakes the sender once");
    let (mut third, wake) = append(&mut acc, None, b"c", Acks::All, now);
    assert!(!wake, "filling an open batch does not");
    assert!(poll(&mut acc, now).is_empty());
    assert!(resolved(&mut first).is_none());

    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(Some(40), CONNECTION),
        now,
    );
    let Some(Ok(receipt)) = resolved(&mut first) else {
        panic!("acked");
    };
    assert_eq!((receipt.partition, receipt.offset), (0, Some(40)));
    let sent = poll(&mut acc, now);
    assert_eq!(
        sent.len(),
        1,
        "the partition is idle again: the open batch goes"
    );
    assert_eq!(values(&sent[0]), [Bytes::from("b"), Bytes::from("c")]);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(Some(41), CONNECTION),
        now,
    );
    assert_eq!(resolved(&mut second).unwrap().unwrap().offset, Some(41));
    assert_eq!(resolved(&mut third).unwrap().unwrap().offset, Some(42));
    assert!(acc.is_drained());
}

#[test]
fn full_batches_are_pipelined_up_to_the_in_flight_limit() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let value = [9u8; 100];
    let mut receipts = Vec::new();
    for _ in 0..60 {
        receipts.push(append(&mut acc, None, &value, Acks::All, now).0);
    }
    let first = poll(&mut acc, now);
    assert_eq!(first.len(), 1, "a new producer's first batch goes alone");
    assert_eq!(first[0].only_on, None);
    acc.handle_outcome(
        first[0].at,
        first[0].id,
        Outcome::Acked(Some(0), CONNECTION),
        now,
    );
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 3, "then max_in_flight batches at once");
    assert!(
        sent.iter().all(|t| t.only_on == Some(CONNECTION)),
        "pipelined on that connection only"
    );
    for transmit in &sent {
        assert!(
            transmit.bytes.len() <= 1024,
            "{} bytes",
            transmit.bytes.len()
        );
        assert!(transmit.bytes.len() > 1024 - 200, "batches are filled");
    }
    assert!(poll(&mut acc, now).is_empty());
    acc.handle_outcome(
        sent[1].at,
        sent[1].id,
        Outcome::Acked(Some(100), CONNECTION),
        now,
    );
    let more = poll(&mut acc, now);
    assert_eq!(more.len(), 1, "one slot freed, one batch sent");
}

#[test]
fn on_a_new_connection_the_first_batch_goes_alone() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let value = [9u8; 100];
    for _ in 0..60 {
        let _ = append(&mut acc, None, &value, Acks::All, now);
    }
    let first = poll(&mut acc, now);
    acc.handle_outcome(
        first[0].at,
        first[0].id,
        Outcome::Acked(Some(0), CONNECTION),
        now,
    );
    let pipelined = poll(&mut acc, now);
    assert_eq!(pipelined.len(), 3);
    for transmit in &pipelined {
        acc.handle_outcome(
            transmit.at,
            transmit.id,
            Outcome::Acked(Some(0), CONNECTION),
            now,
        );
    }
    // The sidecar restarted: the client has another connection, where the producer is new.
    acc.set_connection(Some(CONNECTION + 1));
    let probe = poll(&mut acc, now);
    assert_eq!(
        probe.len(),
        1,
        "one batch until the sidecar acknowledged one"
    );
    assert_eq!(probe[0].only_on, None);
    assert!(poll(&mut acc, now).is_empty());
    acc.handle_outcome(
        probe[0].at,
        probe[0].id,
        Outcome::Acked(Some(0), CONNECTION + 1),
        now,
    );
    let again = poll(&mut acc, now);
    assert_eq!(again.len(), 3);
    assert!(again.iter().all(|t| t.only_on == Some(CONNECTION + 1)));
}

#[test]
fn a_single_large_event_gets_a_batch_of_its_own() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let _ = append(&mut acc, None, b"small", Acks::All, now);
    let big = vec![1u8; 5000];
    let _ = append(&mut acc, None, &big, Acks::All, now);
    let _ = append(&mut acc, None, b"after", Acks::All, now);
    let mut sizes = Vec::new();
    let mut sent = poll(&mut acc, now);
    while !sent.is_empty() {
        for transmit in &sent {
            sizes.push(values(transmit).iter().map(Bytes::len).collect::<Vec<_>>());
            acc.handle_outcome(
                transmit.at,
                transmit.id,
                Outcome::Acked(Some(0), CONNECTION),
                now,
            );
        }
        sent = poll(&mut acc, now);
    }
    assert_eq!(sizes, [vec![5], vec![5000], vec![5]]);
}

#[test]
fn linger_holds_a_batch_until_it_expires() {
    let now = Instant::now();
    let mut config = config();
    config.linger = Duration::from_millis(5);
    let mut acc = accumulator(config, 1);
    let _ = append(&mut acc, None, b"a", Acks::All, now);
    assert!(poll(&mut acc, now).is_empty(), "lingering even though idle");
    assert_eq!(acc.next_timeout(), Some(now + Duration::from_millis(5)));
    let _ = append(
        &mut acc,
        None,
        b"b",
        Acks::All,
        now + Duration::from_millis(1),
    );
    assert!(poll(&mut acc, now + Duration::from_millis(4)).is_empty());
    let sent = poll(&mut acc, now + Duration::from_millis(5));
    assert_eq!(values(&sent[0]), [Bytes::from("a"), Bytes::from("b")]);
}

#[test]
fn flush_sends_a_lingering_batch_now() {
    let now = Instant::now();
    let mut config = config();
    config.linger = Duration::from_secs(60);
    let mut acc = accumulator(config, 2);
    let (mut receipt, _) = append(&mut acc, Some(b"k"), b"a", Acks::All, now);
    let completions = acc.flush(now);
    assert_eq!(completions.len(), 1);
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 1);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(Some(3), CONNECTION),
        now,
    );
    assert!(resolved(&mut receipt).unwrap().is_ok());
    assert!(acc.flush(now).is_empty(), "nothing left to wait for");
}

#[test]
fn keyed_events_go_to_kafkas_partition_and_unkeyed_ones_stick() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 5);
    for key in ["order-1", "order-2", "21", "foobar", ""] {
        let (receipt, _) = append(&mut acc, Some(key.as_bytes()), b"v", Acks::All, now);
        assert_eq!(
            receipt.partition(),
            partition_for_key(key.as_bytes(), 5),
            "{key:?}"
        );
    }

    let mut acc = accumulator(config(), 3);
    let (first, _) = append(&mut acc, None, b"v", Acks::All, now);
    let (second, _) = append(&mut acc, None, b"v", Acks::All, now);
    assert_eq!(
        first.partition(),
        second.partition(),
        "sticky until the batch is sent"
    );
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 1);
    let (third, _) = append(&mut acc, None, b"v", Acks::All, now);
    assert_eq!(
        third.partition(),
        (first.partition() + 1) % 3,
        "then the next partition"
    );
}

#[test]
fn batches_carry_the_producer_and_advancing_sequences() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    acc.assume_established(CONNECTION);
    let mut sequences = Vec::new();
    for round in 0..3 {
        for _ in 0..=round {
            let _ = append(&mut acc, None, b"v", Acks::All, now);
        }
        let flushed = acc.flush(now);
        assert!(!flushed.is_empty());
    }
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 3);
    for transmit in &sent {
        let header = validate(&transmit.bytes).unwrap();
        assert_eq!(header.producer.producer_id, PRODUCER);
        assert_eq!(header.producer.producer_epoch, 0);
        sequences.push((header.producer.base_sequence, header.record_count));
    }
    assert_eq!(sequences, [(0, 1), (1, 2), (3, 3)]);
}

#[test]
fn sequences_wrap_like_kafkas() {
    assert_eq!(next_sequence(0, 5), 5);
    assert_eq!(next_sequence(i32::MAX, 1), 0);
    assert_eq!(next_sequence(i32::MAX - 1, 3), 1);
}

#[test]
fn restamping_keeps_the_batch_valid() {
    let mut builder = BatchBuilder::new();
    builder
        .push(1, Some(b"k"), Some(b"v"), &[("type", b"t")])
        .unwrap();
    builder.push(2, None, Some(b"w"), &[]).unwrap();
    builder.set_producer(ProducerState {
        producer_id: 1,
        producer_epoch: 0,
        base_sequence: 40,
    });
    let original = Bytes::from(builder.finish().unwrap());
    let producer = ProducerState {
        producer_id: 99,
        producer_epoch: 0,
        base_sequence: 0,
    };
    let restamped = restamp(&original, producer);
    let header = validate(&restamped).unwrap();
    assert_eq!(header.producer, producer);
    let (mut before, after) = (
        RecordBatch::decode(&original).unwrap(),
        RecordBatch::decode(&restamped).unwrap(),
    );
    before.producer = producer;
    assert_eq!(before, after, "only the producer fields changed");
}

#[test]
fn an_early_batch_waits_for_its_predecessors_then_goes_alone() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    acc.assume_established(CONNECTION);
    let mut receipts = Vec::new();
    for round in 0..3 {
        receipts.push(append(&mut acc, None, &[round; 4], Acks::All, now).0);
        acc.flush(now);
    }
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 3);
    let (first, second, third) = (&sent[0], &sent[1], &sent[2]);

    // The second overtook the first on the wire.
    let ooo = || Outcome::Retry(refused(ErrorCode::OutOfOrderSequence));
    acc.handle_outcome(second.at, second.id, ooo(), now);
    acc.handle_outcome(third.at, third.id, ooo(), now);
    let later = now + Duration::from_millis(50);
    assert!(
        poll(&mut acc, later).is_empty(),
        "the first is still outstanding"
    );
    acc.handle_outcome(
        first.at,
        first.id,
        Outcome::Acked(Some(0), CONNECTION),
        later,
    );

    let resent = poll(&mut acc, later);
    assert_eq!(resent.len(), 1, "recovering: one batch at a time");
    assert_eq!(resent[0].id, second.id);
    assert_eq!(resent[0].bytes, second.bytes, "resent unchanged");
    assert!(poll(&mut acc, later).is_empty());
    acc.handle_outcome(
        resent[0].at,
        resent[0].id,
        Outcome::Acked(Some(1), CONNECTION),
        later,
    );

    let resent = poll(&mut acc, later);
    assert_eq!(resent.len(), 1);
    assert_eq!(resent[0].id, third.id);
    acc.handle_outcome(
        resent[0].at,
        resent[0].id,
        Outcome::Acked(Some(2), CONNECTION),
        later,
    );
    let offsets: Vec<Option<u64>> = receipts
        .iter_mut()
        .map(|receipt| resolved(receipt).unwrap().unwrap().offset)
        .collect();
    assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
}

#[test]
fn retries_back_off_and_pipelining_resumes_after_recovery() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let _ = append(&mut acc, None, b"a", Acks::All, now);
    let sent = poll(&mut acc, now);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Retry(refused(ErrorCode::Unavailable)),
        now,
    );
    assert!(poll(&mut acc, now).is_empty(), "backing off");
    assert_eq!(acc.next_timeout(), Some(now + Duration::from_millis(10)));
    for _ in 0..40 {
        let _ = append(&mut acc, None, &[0u8; 100], Acks::All, now);
    }
    let retry_at = now + Duration::from_millis(10);
    let resent = poll(&mut acc, retry_at);
    assert_eq!(resent.len(), 1, "the failed batch alone");
    assert_eq!(resent[0].id, sent[0].id);
    acc.handle_outcome(
        resent[0].at,
        resent[0].id,
        Outcome::Acked(None, CONNECTION),
        retry_at,
    );
    assert_eq!(poll(&mut acc, retry_at).len(), 3, "pipelining again");
}

#[test]
fn a_failed_batch_fails_its_receipts_and_renumbers_the_rest() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    acc.assume_established(CONNECTION);
    let (mut doomed, _) = append(&mut acc, None, b"a", Acks::All, now);
    acc.flush(now);
    let (mut survivor, _) = append(&mut acc, None, b"b", Acks::All, now);
    acc.flush(now);
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 2);
    assert_eq!(validate(&sent[1].bytes).unwrap().producer.base_sequence, 1);

    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Fail(refused(ErrorCode::NotAuthorized)),
        now,
    );
    let Some(Err(error)) = resolved(&mut doomed) else {
        panic!("failed");
    };
    assert!(
        matches!(
            &error,
            Error::Sidecar { code: Some(ErrorCode::NotAuthorized), topic: Some(t), partition: Some(0), .. } if t == "orders"
        ),
        "{error:?}"
    );
    assert!(
        poll(&mut acc, now).is_empty(),
        "waits for the outstanding batch"
    );
    acc.handle_outcome(
        sent[1].at,
        sent[1].id,
        Outcome::Retry(refused(ErrorCode::OutOfOrderSequence)),
        now,
    );
    let resent = poll(&mut acc, now + Duration::from_millis(10));
    assert_eq!(resent.len(), 1);
    let header = validate(&resent[0].bytes).unwrap();
    assert_eq!(
        (
            header.producer.producer_id,
            header.producer.producer_epoch,
            header.producer.base_sequence
        ),
        (validate(&sent[1].bytes).unwrap().producer.producer_id, 1, 0),
        "a new epoch of the producer, numbered from 0"
    );
    acc.handle_outcome(
        resent[0].at,
        resent[0].id,
        Outcome::Acked(Some(9), CONNECTION),
        now,
    );
    assert_eq!(resolved(&mut survivor).unwrap().unwrap().offset, Some(9));
}

#[test]
fn a_batch_that_may_have_been_written_is_not_renumbered_but_fails_as_unknown() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    acc.assume_established(CONNECTION);
    let (mut doomed, _) = append(&mut acc, None, b"a", Acks::All, now);
    acc.flush(now);
    let (mut uncertain, _) = append(&mut acc, None, b"b", Acks::All, now);
    acc.flush(now);
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 2);
    // The second one timed out at the sidecar after it was passed on: it may be in the log.
    acc.handle_outcome(
        sent[1].at,
        sent[1].id,
        Outcome::Retry(refused(ErrorCode::Timeout)),
        now,
    );
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Fail(refused(ErrorCode::NotAuthorized)),
        now,
    );
    assert!(matches!(resolved(&mut doomed), Some(Err(_))));
    let resent = poll(&mut acc, now + Duration::from_secs(1));
    assert!(
        resent.is_empty(),
        "sent again under a new id, it could be written twice"
    );
    let Some(Err(error)) = resolved(&mut uncertain) else {
        panic!("the uncertain batch fails");
    };
    assert!(matches!(error, Error::OutcomeUnknown { .. }), "{error:?}");
}

#[test]
fn the_oldest_batch_is_sent_again_while_later_ones_are_held_by_the_sidecar() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    acc.assume_established(CONNECTION);
    let (mut first, _) = append(&mut acc, None, b"a", Acks::All, now);
    acc.flush(now);
    let (_second, _) = append(&mut acc, None, b"b", Acks::All, now);
    acc.flush(now);
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 2);
    // The first is refused for now; the second is held by the sidecar until the first comes.
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Retry(refused(ErrorCode::LeaderNotAvailable)),
        now,
    );
    let resent = poll(&mut acc, now + Duration::from_secs(1));
    assert_eq!(resent.len(), 1, "the first goes again at once");
    assert_eq!(
        validate(&resent[0].bytes).unwrap().producer.base_sequence,
        0
    );
    acc.handle_outcome(
        resent[0].at,
        resent[0].id,
        Outcome::Acked(Some(0), CONNECTION),
        now,
    );
    assert_eq!(resolved(&mut first).unwrap().unwrap().offset, Some(0));
}

#[test]
fn retries_stop_at_the_request_timeout() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let (mut receipt, _) = append(&mut acc, None, b"a", Acks::All, now);
    let sent = poll(&mut acc, now);
    let late = now + Duration::from_secs(31);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Retry(refused(ErrorCode::LeaderNotAvailable)),
        late,
    );
    let Some(Err(Error::Timeout {
        operation,
        after,
        last_error,
    })) = resolved(&mut receipt)
    else {
        panic!("timed out");
    };
    assert_eq!(operation, "publish to topic \"orders\" partition 0");
    assert_eq!(after, Duration::from_secs(30));
    assert!(last_error.unwrap().contains("leader_not_available"));
}

#[test]
fn acks_none_receipts_have_no_offset_and_acks_split_batches() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let _ = append(&mut acc, None, b"block", Acks::All, now);
    let blocking = poll(&mut acc, now);
    let (mut none, _) = append(&mut acc, None, b"a", Acks::None, now);
    let (mut leader, _) = append(&mut acc, None, b"b", Acks::Leader, now);
    acc.handle_outcome(
        blocking[0].at,
        blocking[0].id,
        Outcome::Acked(Some(0), CONNECTION),
        now,
    );
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 1, "a different acks sealed the first batch");
    assert_eq!(sent[0].acks, Acks::None);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(None, CONNECTION),
        now,
    );
    let sent = poll(&mut acc, now);
    assert_eq!(sent[0].acks, Acks::Leader);
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(Some(1), CONNECTION),
        now,
    );
    assert_eq!(resolved(&mut none).unwrap().unwrap().offset, None);
    assert_eq!(resolved(&mut leader).unwrap().unwrap().offset, Some(1));
}

#[test]
fn unknown_partition_forgets_the_partition_count() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 1);
    let _ = append(&mut acc, None, b"a", Acks::All, now);
    let sent = poll(&mut acc, now);
    let error = Error::from_response(
        &ResponseError::new(ErrorCode::UnknownPartition, "gone"),
        Some("orders"),
        Some(0),
    );
    acc.handle_outcome(sent[0].at, sent[0].id, Outcome::Fail(error), now);
    assert_eq!(acc.partition_count("orders"), None);
    let headers: [(&str, &[u8]); 0] = [];
    let record = RecordParts {
        timestamp: 0,
        key: None,
        value: Some(b"x"),
        headers: RecordHeaders::Pairs(&headers),
    };
    assert!(matches!(
        acc.append(
            "orders",
            Route::Sticky,
            record,
            Acks::All,
            10,
            &mut LazyNow::at(now)
        ),
        Err(AppendError::UnknownTopic)
    ));
    acc.set_topic("orders", 2, 0);
    assert_eq!(acc.partition_count("orders"), Some(2));
}

#[test]
fn close_drains_what_is_buffered_and_refuses_more() {
    let now = Instant::now();
    let mut config = config();
    config.linger = Duration::from_secs(60);
    let mut acc = accumulator(config, 1);
    let _ = append(&mut acc, None, b"a", Acks::All, now);
    acc.close();
    assert!(acc.is_closing());
    let headers: [(&str, &[u8]); 0] = [];
    let record = RecordParts {
        timestamp: 0,
        key: None,
        value: None,
        headers: RecordHeaders::Pairs(&headers),
    };
    assert!(matches!(
        acc.append(
            "orders",
            Route::Sticky,
            record,
            Acks::All,
            10,
            &mut LazyNow::at(now)
        ),
        Err(AppendError::Failed(Error::Closed))
    ));
    let sent = poll(&mut acc, now);
    assert_eq!(sent.len(), 1, "closing seals at once");
    assert!(!acc.is_drained());
    acc.handle_outcome(
        sent[0].at,
        sent[0].id,
        Outcome::Acked(Some(0), CONNECTION),
        now,
    );
    assert!(acc.is_drained());
}

#[test]
fn released_bytes_add_up_to_what_was_reserved() {
    let now = Instant::now();
    let mut acc = accumulator(config(), 2);
    let headers = [("type", &b"t"[..])];
    let mut reserved = 0;
    for i in 0u8..50 {
        let key = [i];
        let value = [i; 30];
        let bound = record_bound(
            Some(&key),
            Some(value.len()),
            &RecordHeaders::Pairs(&headers),
        );
        reserved += bound;
        let record = RecordParts {
            timestamp: 0,
            key: Some(&key),
            value: Some(&value),
            headers: RecordHeaders::Pairs(&headers),
        };
        acc.append(
            "orders",
            Route::Hash(murmur2(&key)),
            record,
            Acks::All,
            bound,
            &mut LazyNow::at(now),
        )
        .unwrap();
    }
    let mut released = 0;
    let mut out = Vec::new();
    released += acc.poll_transmit(now, &mut out);
    while !out.is_empty() {
        for transmit in out.drain(..) {
            released += acc.handle_outcome(
                transmit.at,
                transmit.id,
                Outcome::Acked(Some(0), CONNECTION),
                now,
            );
        }
        released += acc.poll_transmit(now, &mut out);
    }
    assert!(acc.is_drained());
    assert_eq!(released, reserved);
}

/// A decoded record's headers as pairs.
fn records_pairs(record: &sidestream_log::Record) -> Vec<(&str, &[u8])> {
    record
        .headers
        .iter()
        .map(|h| (&h.key[..], &h.value[..]))
        .collect()
}

/// Appends an event with the standard headers (`typed` or not) in trace `trace`.
fn append_standard(accumulator: &mut Accumulator, typed: bool, trace: u8, now: Instant) {
    let standard = StandardHeaders::at_in(
        1_700_000_000_000,
        Some(crate::TraceParent {
            trace_id: [trace; 16],
            span_id: [trace; 8],
            flags: 1,
        }),
    );
    let source = encode_header(crate::headers::SOURCE, b"order-service");
    let prefix = TypePrefix::new("shop.OrderPlaced.v1");
    let typed_wire = standard.wire(&prefix, "shop.OrderPlaced.v1", &source);
    let untyped_wire = standard.untyped_wire(&source);
    let headers = if typed {
        RecordHeaders::typed(&typed_wire, false)
    } else {
        RecordHeaders::untyped(&untyped_wire, false)
    };
    let reserved = record_bound(None, Some(3), &headers);
    let record = RecordParts {
        timestamp: standard.timestamp_ms,
        key: None,
        value: Some(b"abc"),
        headers,
    };
    accumulator
        .append(
            "orders",
            Route::Sticky,
            record,
            Acks::Leader,
            reserved,
            &mut LazyNow::at(now),
        )
        .unwrap();
}

#[test]
fn a_batch_shares_the_standard_headers_its_events_have_in_common() {
    let now = Instant::now();
    let mut accumulator = accumulator(
        BatchConfig {
            linger: Duration::from_millis(5),
            ..config()
        },
        1,
    );
    append_standard(&mut accumulator, true, 1, now);
    append_standard(&mut accumulator, true, 1, now);
    append_standard(&mut accumulator, true, 2, now);
    // Another set of headers to share: another batch.
    append_standard(&mut accumulator, false, 1, now);
    let sent = poll(&mut accumulator, now + Duration::from_millis(5));
    assert_eq!(
        sent.len(),
        1,
        "one batch in flight until it is acknowledged"
    );
    let header = validate(&sent[0].bytes).unwrap();
    assert!(header.shared_headers);
    assert_eq!(header.record_count, 3);
    let BatchBody::Records(records) = decode(&sent[0]).body else {
        panic!("a data batch");
    };
    let names = |i: usize| -> Vec<&str> { records[i].headers.iter().map(|h| &h.key[..]).collect() };
    assert_eq!(names(0), ["id", "type", "source", "traceparent"]);
    assert_eq!(names(1), ["id", "type", "source", "traceparent"]);
    // Its own trace, then the shared headers it does not override.
    assert_eq!(names(2), ["id", "traceparent", "type", "source"]);
    let trace = |i: usize| {
        let value = &records[i]
            .headers
            .iter()
            .find(|h| h.key == "traceparent")
            .unwrap()
            .value;
        crate::TraceParent::from_header(value).unwrap().trace_id[0]
    };
    assert_eq!([trace(0), trace(1), trace(2)], [1, 1, 2]);
    // Each record carries only what differs: the shared headers are in the batch once (and
    // the first record's trace, which the third overrides).
    let mut plain = BatchBuilder::new();
    for record in &records {
        let pairs: Vec<(&str, &[u8])> = records_pairs(record);
        plain
            .push(record.timestamp, None, Some(b"abc"), &pairs)
            .unwrap();
    }
    let len = |name: &str| {
        let value = &records[0]
            .headers
            .iter()
            .find(|h| h.key == name)
            .unwrap()
            .value;
        sidestream_log::batch::header_len(name, value)
    };
    let (t, s, p) = (len("type"), len("source"), len("traceparent"));
    // Three times each, against once each and one more trace, and the count's byte.
    assert_eq!(plain.size() - sent[0].bytes.len(), 2 * (t + s) + p - 1);

    // The bound a record reserves counts every header, shared or not.
    let standard = StandardHeaders::at(1);
    let source = encode_header(crate::headers::SOURCE, b"order-service");
    let prefix = TypePrefix::new("shop.OrderPlaced.v1");
    let wire = standard.wire(&prefix, "shop.OrderPlaced.v1", &source);
    let all = BatchBuilder::record_size_bound(
        None,
        Some(b"abc"),
        &standard.pairs("shop.OrderPlaced.v1", "order-service"),
    );
    assert_eq!(
        record_bound(None, Some(3), &RecordHeaders::typed(&wire, false)),
        all
    );
    // One that may open a section of shared headers: its mark and count too.
    assert_eq!(
        record_bound(None, Some(3), &RecordHeaders::typed(&wire, true)),
        all + 2
    );
}
