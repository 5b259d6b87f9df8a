//! A sidecar killed with SIGKILL in the middle of a publish burst: every event whose publish
//! was acknowledged (acks=all, fsync always) is there after the restart, exactly once, and
//! the client that published it carries on after the restart.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sidestream::StartAt;
use tokio::time::timeout;

use crate::events::OrderPlaced;
use crate::{PATIENCE, create_topic, sidecar};

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
