//! Typed events through one sidecar: order per partition, headers, live delivery, type checks.

use std::collections::{BTreeMap, HashSet};

use sidestream::{Acks, Event, RawEvent, StartAt, headers};
use tokio::time::timeout;

use crate::events::{OrderCancelled, OrderPlaced};
use crate::{PATIENCE, create_topic, sidecar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_events_across_partitions_come_back_in_partition_order() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("order-service").await;
    create_topic(&client, "orders", 4).await;

    let total = 2_000u64;
    let mut pending = Vec::new();
    for sequence in 0..total {
        let order = OrderPlaced {
            order_id: format!("o-{}", sequence % 50),
            sequence,
        };
        pending.push(client.publish_nowait(&order).await.expect("published"));
    }
    let mut receipts = Vec::new();
    for receipt in pending {
        receipts.push(receipt.await.expect("acknowledged"));
    }
    assert!(receipts.iter().all(|r| r.offset.is_some()));

    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_sequence_per_key: BTreeMap<String, u64> = BTreeMap::new();
    let mut partition_of_key: BTreeMap<String, u32> = BTreeMap::new();
    let mut ids = HashSet::new();
    for _ in 0..total {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        if let Some(last) = last_offset.insert(delivery.partition, delivery.offset) {
            assert!(
                delivery.offset > last,
                "offsets increase within a partition"
            );
        }
        let key = delivery.event.order_id.clone();
        // Same key, same partition; within a key, publish order.
        let partition = *partition_of_key
            .entry(key.clone())
            .or_insert(delivery.partition);
        assert_eq!(partition, delivery.partition);
        if let Some(previous) = last_sequence_per_key.insert(key, delivery.event.sequence) {
            assert!(delivery.event.sequence > previous, "per-key order is kept");
        }
        let header = |name: &str| {
            delivery
                .headers()
                .get_str(name)
                .unwrap_or_else(|| panic!("header {name} is missing or not UTF-8"))
                .to_owned()
        };
        assert_eq!(header(headers::TYPE), OrderPlaced::TYPE_NAME);
        assert_eq!(header(headers::SOURCE), "order-service");
        let id = delivery.headers().id().expect("an id header");
        assert_eq!(id.get_version_num(), 7);
        let time = delivery.headers().time().expect("a time");
        assert_eq!(time.len(), "2026-01-01T00:00:00.000Z".len());
        assert!(time.ends_with('Z'), "{time}");
        let trace = delivery.headers().traceparent().expect("a traceparent");
        assert!(trace.is_sampled());
        assert!(ids.insert(id), "ids are unique");
        delivery.ack().await.expect("acked");
    }
    assert_eq!(ids.len() as u64, total);
    subscription.close().await.expect("closed");
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_subscription_receives_events_published_after_it() {
    let (_dir, sidecar) = sidecar();
    let publisher = sidecar.client("publisher").await;
    let consumer = sidecar.client("consumer").await;
    create_topic(&publisher, "orders", 2).await;
    publisher
        .publish(&OrderPlaced {
            order_id: "before".into(),
            sequence: 0,
        })
        .await
        .expect("published");
    let mut subscription = consumer
        .subscribe::<OrderPlaced>()
        .from(StartAt::Latest)
        .start()
        .await
        .expect("subscribed");
    for sequence in 1..=20 {
        publisher
            .publish(&OrderPlaced {
                order_id: format!("after-{sequence}"),
                sequence,
            })
            .await
            .expect("published");
    }
    let mut seen = Vec::new();
    while seen.len() < 20 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        seen.push(delivery.event.sequence);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (1..=20).collect::<Vec<_>>(),
        "nothing from before, all from after"
    );
    publisher.close().await.expect("the client closes cleanly");
    consumer.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_of_another_type_is_reported_naming_both_types() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("orders").await;
    create_topic(&client, "orders", 1).await;
    client
        .publish(&OrderCancelled {
            order_id: "o-1".into(),
        })
        .await
        .expect("published");
    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let error = timeout(PATIENCE, subscription.next())
        .await
        .expect("an answer in time")
        .expect("an item")
        .expect_err("a type mismatch, not a mis-decoded value");
    let message = error.to_string();
    assert!(message.contains(OrderPlaced::TYPE_NAME), "{message}");
    assert!(message.contains(OrderCancelled::TYPE_NAME), "{message}");
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forwarded_raw_event_keeps_its_id_trace_and_time() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("order-service").await;
    create_topic(&client, "orders", 1).await;
    create_topic(&client, "orders-mirror", 1).await;
    client
        .publish(&OrderPlaced {
            order_id: "o-1".into(),
            sequence: 1,
        })
        .await
        .expect("published");

    let (original, delivered) = first_raw_delivery(&client, "orders").await;
    // Later than the original by more than the clock's resolution.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mirror_service = sidecar.client("mirror-service").await;
    mirror_service
        .publish_raw("orders-mirror", delivered.event.clone(), Acks::All)
        .await
        .expect("forwarded");

    let (mirror, forwarded) = first_raw_delivery(&client, "orders-mirror").await;
    let (before, after) = (delivered.headers(), forwarded.headers());
    assert_eq!(forwarded.timestamp, delivered.timestamp);
    assert_eq!(after.time(), before.time());
    assert_eq!(after.id(), before.id());
    assert_eq!(after.traceparent(), before.traceparent());
    assert_eq!(after.source(), Some("order-service"));
    assert_eq!(after.type_name(), Some(OrderPlaced::TYPE_NAME));
    assert_eq!(forwarded.event.value, delivered.event.value);
    original.close().await.expect("closed");
    mirror.close().await.expect("closed");
    mirror_service.close().await.expect("closed");
    client.close().await.expect("closed");
}

/// A subscription of `topic` from its start, and its first delivery.
async fn first_raw_delivery(
    client: &sidestream::Client,
    topic: &str,
) -> (
    sidestream::Subscription<RawEvent>,
    sidestream::Delivery<RawEvent>,
) {
    let mut subscription = client
        .subscribe_raw(topic)
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let delivery = timeout(PATIENCE, subscription.next())
        .await
        .expect("in time")
        .expect("a delivery")
        .expect("an event");
    (subscription, delivery)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_publish_stores_each_event_in_order_with_its_own_receipt_and_headers() {
    let (_dir, sidecar) = sidecar();
    // Small batches: the call's events go into the buffer in many chunks and batches.
    let client = sidestream::Client::builder("order-service")
        .sidecar(sidecar.addr().to_string())
        .tls_dir(sidecar.tls_dir())
        .batch_bytes(8 << 10)
        .connect()
        .await
        .expect("the client connects");
    create_topic(&client, "orders", 4).await;

    let total = 3_000u64;
    let orders: Vec<OrderPlaced> = (0..total)
        .map(|sequence| OrderPlaced {
            order_id: format!("o-{}", sequence % 50),
            sequence,
        })
        .collect();
    let receipts = client.publish_batch(&orders).await.expect("published");
    assert_eq!(receipts.len() as u64, total, "one receipt per event");
    let mut partition_of_key: BTreeMap<&str, u32> = BTreeMap::new();
    let mut last_offset: BTreeMap<u32, u64> = BTreeMap::new();
    for (order, receipt) in orders.iter().zip(&receipts) {
        let partition = *partition_of_key
            .entry(&order.order_id)
            .or_insert(receipt.partition);
        assert_eq!(receipt.partition, partition, "same key, same partition");
        let offset = receipt.offset.expect("an offset");
        if let Some(last) = last_offset.insert(receipt.partition, offset) {
            assert!(offset > last, "offsets follow the events' order");
        }
    }
    assert!(last_offset.len() > 1, "the keys spread over the partitions");

    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let at: BTreeMap<(u32, u64), u64> = receipts
        .iter()
        .zip(&orders)
        .map(|(receipt, order)| {
            (
                (receipt.partition, receipt.offset.unwrap_or(0)),
                order.sequence,
            )
        })
        .collect();
    let mut ids = HashSet::new();
    for _ in 0..total {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        assert_eq!(
            at.get(&(delivery.partition, delivery.offset)),
            Some(&delivery.event.sequence),
            "each event is where its receipt says"
        );
        let headers = delivery.headers();
        assert_eq!(headers.type_name(), Some(OrderPlaced::TYPE_NAME));
        assert_eq!(headers.source(), Some("order-service"));
        assert!(ids.insert(headers.id().expect("an id")), "ids are unique");
        assert!(headers.traceparent().is_some());
        delivery.ack().await.expect("acked");
    }
    subscription.close().await.expect("closed");

    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_batch_publish_keeps_headers_of_its_own_and_an_event_too_large_fails_it_whole() {
    let (_dir, sidecar) = sidecar();
    let client = sidecar.client("order-service").await;
    create_topic(&client, "audit", 1).await;
    create_topic(&client, "audit-copy", 1).await;

    // One event with headers of its own keeps them (its id, its time); the pending receipts
    // give each event's own outcome.
    let own_id = sidestream::Uuid::now_v7();
    let forwarded = RawEvent::new("forwarded")
        .with_header(headers::ID, own_id.as_bytes())
        .with_header(headers::TIME, "2026-01-02T03:04:05.678Z")
        .with_header("x-origin", "eu");
    let raw = [RawEvent::new("first"), forwarded, RawEvent::new("last")];
    let pending = client
        .publish_raw_batch_nowait("audit", &raw, Acks::All)
        .await
        .expect("buffered");
    assert_eq!(pending.len(), 3);
    let offsets: Vec<Option<u64>> = {
        let mut offsets = Vec::new();
        for receipt in pending.into_receipts() {
            offsets.push(receipt.await.expect("acknowledged").offset);
        }
        offsets
    };
    assert_eq!(offsets, [Some(0), Some(1), Some(2)]);
    let mut audit = client
        .subscribe_raw("audit")
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let mut values = Vec::new();
    for _ in 0..3 {
        let delivery = timeout(PATIENCE, audit.next())
            .await
            .expect("in time")
            .expect("a delivery")
            .expect("an event");
        if delivery.event.value.as_ref() == b"forwarded" {
            let headers = delivery.headers();
            assert_eq!(headers.id(), Some(own_id));
            assert_eq!(headers.time().as_deref(), Some("2026-01-02T03:04:05.678Z"));
            assert_eq!(headers.get_str("x-origin"), Some("eu"));
            assert_eq!(headers.source(), Some("order-service"));
        }
        values.push(delivery.event.value.clone());
    }
    assert_eq!(values, [&b"first"[..], b"forwarded", b"last"]);
    audit.close().await.expect("closed");

    // A delivered event published again keeps its time.
    let (original, delivered) = first_raw_delivery(&client, "audit").await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    client
        .publish_raw_batch(
            "audit-copy",
            std::slice::from_ref(&delivered.event),
            Acks::All,
        )
        .await
        .expect("forwarded");
    let (copy, forwarded) = first_raw_delivery(&client, "audit-copy").await;
    assert_eq!(forwarded.timestamp, delivered.timestamp);
    assert_eq!(forwarded.headers().id(), delivered.headers().id());
    original.close().await.expect("closed");
    copy.close().await.expect("closed");

    // An event too large fails the call before any event is buffered; an unknown topic is
    // named.
    let too_large = [RawEvent::new("fits"), RawEvent::new(vec![0u8; 9 << 20])];
    let error = client
        .publish_raw_batch("audit", &too_large, Acks::All)
        .await
        .expect_err("the second event is too large");
    assert!(
        matches!(error, sidestream::Error::EventTooLarge { .. }),
        "{error}"
    );
    let error = client
        .publish_raw_batch("nowhere", &raw, Acks::All)
        .await
        .expect_err("no such topic");
    assert!(error.to_string().contains("nowhere"), "{error}");
    assert!(
        client
            .publish_raw_batch("audit", &[], Acks::All)
            .await
            .expect("nothing to publish")
            .is_empty()
    );
    client.flush().await.expect("nothing is left buffered");
    let description = client.describe_topic("audit").await.expect("described");
    assert_eq!(
        description.partitions[0].high_watermark, 3,
        "nothing of the call with an event too large was stored"
    );
    client.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_publish_larger_than_the_clients_buffer_goes_through_it() {
    let (_dir, sidecar) = sidecar();
    // A buffer of a quarter of a batch: a call's chunks must fit it.
    let client = sidestream::Client::builder("order-service")
        .sidecar(sidecar.addr().to_string())
        .tls_dir(sidecar.tls_dir())
        .batch_bytes(64 << 10)
        .max_in_flight_bytes(16 << 10)
        .connect()
        .await
        .expect("the client connects");
    create_topic(&client, "orders", 2).await;
    let orders: Vec<OrderPlaced> = (0..2_000)
        .map(|sequence| OrderPlaced {
            order_id: format!("o-{sequence}"),
            sequence,
        })
        .collect();
    let receipts = timeout(PATIENCE, client.publish_batch(&orders))
        .await
        .expect("the call does not wait for more space than the buffer has")
        .expect("published");
    assert_eq!(receipts.len(), orders.len());
    let stored: u64 = client
        .describe_topic("orders")
        .await
        .expect("described")
        .partitions
        .iter()
        .map(|partition| partition.high_watermark)
        .sum();
    assert_eq!(stored, 2_000);
    client.close().await.expect("the client closes cleanly");
}
