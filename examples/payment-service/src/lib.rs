//! The payment service of the Sidestream shop example: charges or declines every placed
//! order, talking to nobody but its sidecar.
//!
//! ```text
//!  orders ──OrderPlaced──▶ group "payments" ──PaymentPolicy::decide──▶ publish ──▶ payments
//!                                   ▲                                     │
//!                                   └────────────── ack ◀─────────────────┘
//! ```
//!
//! Each order is acknowledged only after its outcome ([`PaymentCompleted`] or
//! [`PaymentFailed`]) is stored, so a crash in between redelivers the order and the outcome
//! is published again: delivery is at least once. The [`PaymentPolicy`] is a pure function
//! of the order and the payment id derives from the order id, so the repeat is the same
//! outcome, which the order service recognises.
//!
//! Instances of the service share the group `payments`: each partition of `orders` goes to
//! one of them.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use payment_service::PaymentPolicy;
//!
//! let client = sidestream::Client::connect_local("payment-service").await?;
//! sidestream_example_events::create_topics(&client).await?;
//! let policy = PaymentPolicy::new(100_000).block("mallory");
//! payment_service::run(client, policy, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! [`PaymentCompleted`]: sidestream_example_events::PaymentCompleted
//! [`PaymentFailed`]: sidestream_example_events::PaymentFailed

mod policy;

use std::future::Future;

use anyhow::Context as _;
use sidestream::{Client, StartAt};
use sidestream_example_events::OrderPlaced;
use tracing::Instrument as _;

pub use policy::{DEFAULT_LIMIT_CENTS, Decision, PaymentPolicy};

/// The consumer group the service reads `orders` in.
pub const GROUP: &str = "payments";

/// Runs the service until `shutdown` completes: decides about every order placed, publishes
/// the outcome, acknowledges the order. Then it closes its subscription (committing its
/// position) and the client.
///
/// An order being handled when `shutdown` completes is finished first.
///
/// # Errors
///
/// If the subscription cannot start or fails, or an outcome cannot be published (the order
/// stays unacknowledged and is delivered again after a restart).
pub async fn run(
    client: Client,
    policy: PaymentPolicy,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let result = serve(&client, &policy, shutdown).await;
    let closed = client
        .close()
        .await
        .context("cannot close the client cleanly");
    result?;
    closed
}

async fn serve(
    client: &Client,
    policy: &PaymentPolicy,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut orders = client
        .subscribe::<OrderPlaced>()
        .group(GROUP)
        .from(StartAt::Earliest)
        .start()
        .await
        .with_context(|| format!("cannot subscribe to OrderPlaced in group {GROUP:?}"))?;
    tracing::info!(
        limit_cents = policy.limit_cents(),
        "payment service following orders"
    );
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let next = tokio::select! {
            () = &mut shutdown => break,
            next = orders.next() => next,
        };
        let Some(delivery) = next else {
            anyhow::bail!("the subscription to orders ended");
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            // An event of another type, or one that does not decode: the subscription goes
            // on past it (it counts as handled), and so does the service.
            Err(
                error @ (sidestream::Error::TypeMismatch { .. }
                | sidestream::Error::Decode { .. }
                | sidestream::Error::MissingValue { .. }),
            ) => {
                tracing::warn!(%error, "skipping an event that is not an order");
                continue;
            }
            Err(error) => return Err(error).context("the subscription to orders failed"),
        };
        // One trace from the order's publisher through its handling here and on.
        let span = delivery.handling_span();
        decide_and_publish(client, policy, &delivery.event)
            .instrument(span)
            .await?;
        let (partition, offset) = (delivery.partition, delivery.offset);
        delivery.ack().await.with_context(|| {
            format!("cannot acknowledge orders partition {partition} offset {offset}")
        })?;
    }
    tracing::info!("payment service stopping");
    orders
        .close()
        .await
        .context("cannot close the subscription to orders")
}

/// Decides on `order` and publishes the outcome.
async fn decide_and_publish(
    client: &Client,
    policy: &PaymentPolicy,
    order: &OrderPlaced,
) -> anyhow::Result<()> {
    match policy.decide(order) {
        Decision::Charge(payment) => {
            client.publish(&payment).await.with_context(|| {
                format!(
                    "cannot publish PaymentCompleted of order {}",
                    order.order_id
                )
            })?;
            tracing::info!(
                order_id = %order.order_id,
                payment_id = %payment.payment_id,
                amount_cents = payment.amount_cents,
                "payment completed"
            );
        }
        Decision::Decline(failure) => {
            client.publish(&failure).await.with_context(|| {
                format!("cannot publish PaymentFailed of order {}", order.order_id)
            })?;
            tracing::info!(
                order_id = %order.order_id,
                reason = %failure.reason,
                "payment failed"
            );
        }
    }
    Ok(())
}
