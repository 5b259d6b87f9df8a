//! A sidecar killed with SIGKILL in the middle of a publish burst: every event whose publish
//! was acknowledged (acks=all, fsync always) is there after the restart, exactly once, and
//! the client that published it carries on after the restart; the connections of the killed
//! process are reset by the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidestream::StartAt;
use tokio::time::timeout;

use crate::events::OrderPlaced;
use crate::{PATIENCE, create_topic, publish_orders, sidecar};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_publish_burst_loses_no_acknowledged_event() {
    let (_dir, mut sidecar) = sidecar();
    let setup = sidecar.client("setup").await;
    create_topic(&setup, "orders", 3).await;
    setup.close().await.expect("the client closes cleanly");

    let client = sidecar.client("order-service").await;
    let acknowledged: Arc<Mutex<HashMap<u64, (u32, u64)>>> = Arc::default();
    let burst = {
        let client = client.clone();
        let acknowledged = Arc::clone(&acknowledged);
        tokio::spawn(async move {
            let mut tasks = tokio::task::JoinSet::new();
            for sequence in 0..20_000u64 {
                let order = OrderPlaced {
                    order_id: format!("o-{}", sequence % 97),
                    sequence,
                };
                let Ok(receipt) = client.publish_nowait(&order).await else {
                    break;
                };
                let acknowledged = Arc::clone(&acknowledged);
                tasks.spawn(async move {
                    if let Ok(receipt) = receipt.await {
                        let offset = receipt.offset.expect("acks=all gives offsets");
                        acknowledged
                            .lock()
                            .expect("not poisoned")
                            .insert(sequence, (receipt.partition, offset));
                    }
                });
            }
            while tasks.join_next().await.is_some() {}
        })
    };
    // Kill the sidecar once part of the burst is acknowledged.
    let started = tokio::time::Instant::now();
    while acknowledged.lock().expect("not poisoned").len() < 2_000 {
        assert!(started.elapsed() < PATIENCE, "publishes are acknowledged");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sidecar.kill();
    let acked_at_kill = acknowledged.lock().expect("not poisoned").len();
    sidecar.restart();
    // The client reconnects and the rest of the burst completes (or fails per event).
    timeout(Duration::from_secs(120), burst)
        .await
        .expect("the burst ends")
        .expect("the burst task does not panic");
    let acknowledged = acknowledged.lock().expect("not poisoned").clone();
    assert!(acknowledged.len() >= acked_at_kill);

    let reader = sidecar.client("checker").await;
    let mut subscription = reader
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    // A batch appended but not acknowledged before the kill is sent again after it, so an
    // event may be there twice (at least once); an acknowledged one must be where its
    // receipt said.
    let mut found: HashMap<u64, Vec<(u32, u64)>> = HashMap::new();
    loop {
        let next = timeout(Duration::from_secs(3), subscription.next()).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.expect("no corrupt or mistyped event is delivered");
        found
            .entry(delivery.event.sequence)
            .or_default()
            .push((delivery.partition, delivery.offset));
    }
    for (sequence, at) in &acknowledged {
        let copies = found.get(sequence).map_or(&[][..], Vec::as_slice);
        assert!(
            copies.contains(at),
            "acknowledged event {sequence} at {at:?} is there after the restart (found {copies:?})"
        );
    }
    client.close().await.expect("the client closes cleanly");
    reader.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_carries_on_across_a_sidecar_restart() {
    let (_dir, mut sidecar) = sidecar();
    let publisher = sidecar.client("publisher").await;
    create_topic(&publisher, "orders", 2).await;
    let consumer = sidecar.client("consumer").await;
    let mut subscription = consumer
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let mut seen = Vec::new();
    publish_orders(&publisher, 0..10).await;
    while seen.len() < 10 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("in time")
            .expect("the subscription goes on")
            .expect("an event");
        seen.push(delivery.event.sequence);
    }
    sidecar.kill();
    sidecar.restart();
    publish_orders(&publisher, 10..20).await;
    while seen.len() < 20 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("in time")
            .expect("the subscription survives the restart")
            .expect("an event");
        seen.push(delivery.event.sequence);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..20).collect::<Vec<_>>(),
        "each event once, none lost"
    );
    publisher.close().await.expect("the client closes cleanly");
    consumer.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_sidecar_is_left_for_a_new_connection_without_losing_events() {
    let (_dir, sidecar) = sidecar();
    let client = sidestream::Client::builder("order-service")
        .sidecar(sidecar.addr().to_string())
        .tls_dir(sidecar.tls_dir())
        .answer_timeout(Duration::from_millis(500))
        .connect()
        .await
        .expect("connected");
    create_topic(&client, "orders", 1).await;
    let burst = {
        let client = client.clone();
        tokio::spawn(async move {
            let mut receipts = Vec::new();
            for sequence in 0..200u64 {
                let order = OrderPlaced {
                    order_id: format!("o-{sequence}"),
                    sequence,
                };
                receipts.push(client.publish_nowait(&order).await.expect("buffered"));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let mut offsets = Vec::new();
            for receipt in receipts {
                offsets.push(receipt.await.expect("acknowledged in the end").offset);
            }
            offsets
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The sidecar stops answering for longer than the client's answer timeout.
    sidecar.pause();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sidecar.resume();
    let offsets = timeout(PATIENCE, burst)
        .await
        .expect("the burst completes")
        .expect("no publish failed");
    assert_eq!(offsets.len(), 200);
    let reader = sidecar.client("checker").await;
    let mut subscription = reader
        .subscribe::<OrderPlaced>()
        .from(StartAt::Earliest)
        .start()
        .await
        .expect("subscribed");
    let mut sequences = std::collections::BTreeSet::new();
    while sequences.len() < 200 {
        let delivery = timeout(PATIENCE, subscription.next())
            .await
            .expect("every event arrives in time")
            .expect("the subscription goes on")
            .expect("an event");
        sequences.insert(delivery.event.sequence);
    }
    client.close().await.expect("the client closes cleanly");
    reader.close().await.expect("the client closes cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sidecar_resets_the_connections_the_killed_one_had() {
    let (_dir, mut sidecar) = sidecar();
    let tuning = sidestream::transport::QuicTuning::default();
    let tls = sidestream::transport::ClientTls::from_dir(&sidecar.tls_dir()).unwrap();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let endpoint = sidestream::transport::bind_endpoint(local, None, &tuning).unwrap();
    let connection = tls
        .connect(&endpoint, sidecar.addr(), "localhost", &tuning)
        .await
        .expect("connected");
    // Killed once the handshake is confirmed: packets of a connection still in its handshake
    // are not answered with resets.
    let confirmed = async {
        while connection.stats().frame_rx.handshake_done == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    timeout(Duration::from_secs(10), confirmed)
        .await
        .expect("the sidecar confirms the handshake");
    tokio::task::block_in_place(|| sidecar.restart());

    // A packet of the old connection reaches the new process, which knows nothing of it and
    // answers with a stateless reset; signed with the data directory's key, as the killed
    // process signed its tokens, the reset ends the connection (with a key of its own, the
    // reset would be ignored and the connection would wait out its 30 s idle timeout). The
    // client's own acknowledgements or probes may have drawn the reset already.
    if let Ok((mut send, _recv)) = connection.open_bi().await {
        let _ = send.write_all(&[0; 200]).await;
    }
    let reason = timeout(Duration::from_secs(20), connection.closed())
        .await
        .expect("the connection ends");
    assert!(
        matches!(reason, quinn::ConnectionError::Reset),
        "{reason:?}"
    );
    endpoint.close(0u32.into(), b"done");
}
