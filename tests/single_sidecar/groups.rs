//! Group offsets: a group resumes where it committed, after a client restart and after a
//! sidecar restart.

use std::time::Duration;

use sidestream::StartAt;
use tokio::time::timeout;

use crate::events::OrderPlaced;
use crate::{PATIENCE, create_topic, publish_orders, sidecar};

/// Takes `count` deliveries of the group, acking each; returns their sequences.
async fn take(client: &sidestream::Client, count: usize) -> Vec<u64> {
    let mut subscription = client
        .subscribe::<OrderPlaced>()
        .group("payments")
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let sequences = next_sequences(&mut subscription, count).await;
    subscription
        .close()
        .await
        .expect("offsets committed on close");
    sequences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_offsets_survive_a_client_restart_and_a_sidecar_restart() {
    let (_dir, mut sidecar) = sidecar();
    let publisher = sidecar.client("order-service").await;
    // One partition, so the group's order is the publish order.
    create_topic(&publisher, "orders", 1).await;
    publish_orders(&publisher, 0..30).await;
    publisher.close().await.expect("the client closes cleanly");

    let first = sidecar.client("payment-service").await;
    assert_eq!(take(&first, 10).await, (0..10).collect::<Vec<_>>());
    first.close().await.expect("the client closes cleanly");

    // A new client (a restarted service) continues after the committed offset.
    let second = sidecar.client("payment-service").await;
    assert_eq!(take(&second, 10).await, (10..20).collect::<Vec<_>>());
    second.close().await.expect("the client closes cleanly");

    // The sidecar restarts (gracefully); the group still continues where it was.
    let (clean, log) = sidecar.terminate(Duration::from_secs(20));
    assert!(
        clean,
        "the sidecar stops cleanly on SIGTERM; its log:\n{log}"
    );
    sidecar.restart();
    let third = sidecar.client("payment-service").await;
    assert_eq!(take(&third, 10).await, (20..30).collect::<Vec<_>>());
    third.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_skips_nothing_published_while_its_sidecar_restarts() {
    let (_dir, mut sidecar) = sidecar();
    let publisher = sidecar.client("order-service").await;
    create_topic(&publisher, "orders", 2).await;
    let consumer = sidecar.client("payment-service").await;
    // From the latest offset, and nothing committed (nothing is acked) when the sidecar
    // goes away.
    let mut subscription = consumer
        .subscribe::<OrderPlaced>()
        .group("payments")
        .from(StartAt::Latest)
        .start()
        .await
        .expect("subscribed");
    publish_orders(&publisher, 0..5).await;
    let mut seen = std::collections::BTreeSet::new();
    while seen.len() < 5 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("in time")
            .expect("the subscription goes on")
            .expect("an event");
        seen.insert(delivery.event.sequence);
    }
    sidecar.kill();
    sidecar.restart();
    // Published before the consumer has resubscribed.
    publish_orders(&publisher, 5..25).await;
    while seen.len() < 25 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("every event arrives in time")
            .expect("the subscription survives the restart")
            .expect("an event");
        seen.insert(delivery.event.sequence);
    }
    assert_eq!(seen, (0..25).collect(), "nothing skipped");
    publisher.close().await.expect("the client closes cleanly");
    consumer.close().await.expect("the client closes cleanly");
}

/// The next `count` deliveries' sequences, each acked.
async fn next_sequences(
    subscription: &mut sidestream::Subscription<OrderPlaced>,
    count: usize,
) -> Vec<u64> {
    let mut sequences = Vec::new();
    while sequences.len() < count {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("a delivery in time")
            .expect("the subscription goes on")
            .expect("a valid event");
        sequences.push(delivery.event.sequence);
        delivery.ack().await.expect("acked");
    }
    sequences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_start_a_new_group_reads_from_the_earliest_and_a_lone_subscription_from_the_latest()
 {
    let (_dir, sidecar) = sidecar();
    let publisher = sidecar.client("order-service").await;
    create_topic(&publisher, "orders", 1).await;
    // Published before anyone subscribed.
    publish_orders(&publisher, 0..3).await;

    let consumer = sidecar.client("payment-service").await;
    let mut group = consumer
        .subscribe::<OrderPlaced>()
        .group("payments")
        .start()
        .await
        .expect("subscribed as a group");
    let mut lone = consumer
        .subscribe::<OrderPlaced>()
        .start()
        .await
        .expect("subscribed alone");
    // Both have their assignments: what comes now is after the lone one's start.
    publish_orders(&publisher, 3..5).await;

    assert_eq!(
        next_sequences(&mut group, 5).await,
        (0..5).collect::<Vec<_>>(),
        "a new group misses nothing published before it came up"
    );
    assert_eq!(
        next_sequences(&mut lone, 2).await,
        vec![3, 4],
        "a subscription of its own starts at the high watermark"
    );
    group.close().await.expect("offsets committed on close");
    lone.close().await.expect("closed");
    publisher.close().await.expect("the client closes cleanly");
    consumer.close().await.expect("the client closes cleanly");
}
