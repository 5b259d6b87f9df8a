//! The order service of the Sidestream shop example: an HTTP API that places orders and
//! follows their payments, talking to nobody but its sidecar.
//!
//! ```text
//!  POST /orders ──▶ api ──publish OrderPlaced──▶ orders ──▶ (payment service)
//!  GET /orders/{id} ◀── OrderBook ◀── payment_follower ◀── payments ◀──┘
//! ```
//!
//! - [`api`]: the axum routes; placing an order checks the body ([`NewOrder`]), records the
//!   order as `pending` and publishes `OrderPlaced`;
//! - [`OrderBook`]: the orders in memory, their [statistics](OrderStats) and a feed of
//!   [status changes](StatusChange);
//! - the payment follower: group `order-service` on `payments`, settles each order as
//!   `paid` or `failed` ([`Order::apply`]).
//!
//! The service never calls the payment service: the two only share topics. It keeps orders
//! in memory because it is an example; a real one would keep them in its database.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let client = sidestream::Client::connect_local("order-service").await?;
//! sidestream_example_events::create_topics(&client).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! let orders = order_service::OrderBook::new();
//! order_service::run(client, listener, orders, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await?;
//! # Ok(())
//! # }
//! ```

pub mod api;
mod new_order;
mod order;
mod order_book;
mod payment_follower;

use std::future::Future;

use anyhow::Context as _;
use sidestream::{Client, StartAt};
use sidestream_example_events::{OrderPlaced, PAYMENTS_TOPIC};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use api::{PublishOrder, router};
pub use new_order::{InvalidOrder, NewOrder};
pub use order::{Order, OrderStatus, PaymentOutcome, Transition};
pub use order_book::{LatencySummary, OrderBook, OrderStats, StatusChange};
pub use payment_follower::{PaymentEvent, UnreadableEvent};

/// The consumer group the service follows `payments` in.
pub const GROUP: &str = "order-service";

/// Runs the service: serves the HTTP API on `listener` and settles the orders of `orders`
/// from `payments`, until `shutdown` completes. Then it stops taking requests, lets those in
/// progress finish, closes its subscription (committing its position) and the client.
///
/// # Errors
///
/// If the subscription cannot start or fails, or the HTTP server fails; the other half is
/// stopped then too.
pub async fn run(
    client: Client,
    listener: TcpListener,
    orders: OrderBook,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let subscription = client
        .subscribe_raw(PAYMENTS_TOPIC)
        .group(GROUP)
        .from(StartAt::Earliest)
        .start()
        .await
        .with_context(|| format!("cannot subscribe to {PAYMENTS_TOPIC:?} in group {GROUP:?}"))?;
    let address = listener
        .local_addr()
        .context("the HTTP listener has no address")?;
    tracing::info!(%address, "order service listening");

    let (stop, stopped) = watch::channel(false);
    let trigger = async {
        shutdown.await;
        tracing::info!("order service stopping");
        stop.send_replace(true);
        anyhow::Ok(())
    };
    let api = router(client.clone(), orders.clone());
    let http = async {
        axum::serve(listener, api)
            .with_graceful_shutdown(wait(stopped.clone()))
            .await
            .context("the HTTP server failed")
    };
    let payments = payment_follower::follow(subscription, orders, wait(stopped.clone()));
    let served = tokio::try_join!(trigger, http, payments);
    let closed = client
        .close()
        .await
        .context("cannot close the client cleanly");
    served?;
    closed
}

impl PublishOrder for Client {
    async fn publish_order(&self, event: &OrderPlaced) -> Result<(), sidestream::Error> {
        let receipt = self.publish(event).await?;
        tracing::debug!(
            order_id = %event.order_id,
            partition = receipt.partition,
            offset = receipt.offset,
            "OrderPlaced stored"
        );
        Ok(())
    }
}

/// Completes once `stopped` turns true (or its sender is gone).
async fn wait(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}
