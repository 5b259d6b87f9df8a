//! `sidestream demo`: the shop example end to end on this machine, in one process.
//!
//! ```text
//!  demo ──HTTP POST /orders──▶ order service ──OrderPlaced──▶ orders ──▶ payment service
//!   ▲                            ▲      │                                    │
//!   │  status changes ───────────┘      └──── payments ◀── PaymentCompleted / PaymentFailed
//!   └── watcher: reads orders and payments (no group) and prints every event
//! ```
//!
//! It starts a sidecar in a temporary data directory on a free loopback port, then the
//! payment service and the order service as tasks, each with its own client (so its own QUIC
//! connection, as separate processes would have), and the order service's HTTP API on a free
//! port. It places the orders over real HTTP, prints one line per event as it happens, waits
//! until every order is settled (at most [`SETTLE_TIMEOUT`] after the last one was placed),
//! reads each order back over HTTP, prints a summary with the end-to-end latency (placed →
//! settled, measured by the order service), and stops everything: services, clients, sidecar.
//! The data directory is removed unless `--keep-data` is given.
//!
//! The orders are the same on every run: every fifth comes from a blocked customer and every
//! fourth holds an item above the payment limit, so some payments fail for each reason.

use std::fmt::Display;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use order_service::{OrderBook, PaymentOutcome, StatusChange};
use payment_service::PaymentPolicy;
use serde_json::{Value, json};
use sidestream::prost::Message as _;
use sidestream::{Client, Event as _, RawEvent, StartAt, Subscription};
use sidestream_example_events::{
    ORDERS_TOPIC, OrderPlaced, PAYMENTS_TOPIC, PaymentCompleted, PaymentFailed,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::{RunningSidecar, SidecarConfig};

/// Flags of `sidestream demo`.
#[derive(Debug, clap::Args)]
pub(super) struct DemoArgs {
    /// How many orders to place.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    orders: u32,
    /// Keep the temporary data directory (its path is printed) instead of removing it.
    #[arg(long)]
    keep_data: bool,
    /// The sidecar's admin HTTP address (/metrics, /healthz, /readyz) [default: a free port
    /// of 127.0.0.1]
    #[arg(long, default_value = "127.0.0.1:0")]
    admin_listen: SocketAddr,
    /// After the summary, keep the sidecar and the services running until Ctrl-C (to look
    /// at /metrics, the payment group's lag among them).
    #[arg(long)]
    stay: bool,
}

pub(super) async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let console = Console::new();
    let dir = tempfile::Builder::new()
        .prefix("sidestream-demo-")
        .tempdir()
        .context("cannot create a temporary data directory")?;
    let mut config = SidecarConfig::new(dir.path());
    config.listen = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    config.admin_listen = Some(args.admin_listen);
    let sidecar = RunningSidecar::start(config)
        .await
        .context("cannot start the sidecar")?;
    console.say(format_args!(
        "sidecar listening on {} (data in {})",
        sidecar.local_addr(),
        dir.path().display()
    ));
    if let Some(admin) = sidecar.admin_addr() {
        console.say(format_args!("sidecar metrics on http://{admin}/metrics"));
    }

    let outcome = match Shop::start(&sidecar, &console).await {
        Ok(shop) => {
            let placed = tokio::select! {
                placed = shop.place_and_settle(args.orders, &console) => placed,
                () = super::sidecar::shutdown_signal() => Err(anyhow!("interrupted")),
            };
            if placed.is_ok() && args.stay {
                // Watched before saying so: a Ctrl-C right after the line is not lost.
                let interrupted = super::sidecar::shutdown_signal();
                console.say(format_args!(
                    "still running: the services, and the sidecar's metrics; Ctrl-C stops them"
                ));
                interrupted.await;
            }
            let stopped = shop.stop().await;
            placed.and(stopped)
        }
        Err(error) => Err(error),
    };
    let sidecar_stopped = sidecar
        .shutdown()
        .await
        .context("the sidecar did not shut down cleanly");
    if args.keep_data {
        console.say(format_args!("data kept in {}", dir.keep().display()));
    } else {
        let path = dir.path().to_path_buf();
        dir.close()
            .with_context(|| format!("cannot remove {}", path.display()))?;
    }
    outcome.and(sidecar_stopped)
}

/// The two services, the watcher and the printer of status changes, running as tasks.
struct Shop {
    client: Client,
    http: SocketAddr,
    orders: OrderBook,
    stop: watch::Sender<bool>,
    events_seen: watch::Receiver<usize>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

impl Shop {
    async fn start(sidecar: &RunningSidecar, console: &Console) -> anyhow::Result<Self> {
        let client = connect(sidecar, "sidestream-demo").await?;
        sidestream_example_events::create_topics(&client)
            .await
            .context("cannot create the shop's topics")?;
        let payment_client = connect(sidecar, "payment-service").await?;
        let order_client = connect(sidecar, "order-service").await?;
        let subscriptions = [
            watch_topic(&client, ORDERS_TOPIC).await?,
            watch_topic(&client, PAYMENTS_TOPIC).await?,
        ];
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("cannot bind the order service's HTTP port")?;
        let http = listener
            .local_addr()
            .context("the HTTP listener has no address")?;
        let policy = PaymentPolicy::new(PAYMENT_LIMIT_CENTS).block(BLOCKED_CUSTOMER);
        console.say(format_args!(
            "payment service: charges up to {}, declines customer {BLOCKED_CUSTOMER:?}",
            Money(PAYMENT_LIMIT_CENTS)
        ));
        console.say(format_args!("order service: HTTP on http://{http}"));

        let orders = OrderBook::new();
        let (stop, stopped) = watch::channel(false);
        let (seen, events_seen) = watch::channel(0);
        let payment = payment_service::run(payment_client, policy, wait(stopped.clone()));
        let order = order_service::run(
            order_client,
            listener,
            orders.clone(),
            wait(stopped.clone()),
        );
        let watcher = print_events(subscriptions, *console, seen, wait(stopped.clone()));
        let printer = print_changes(orders.status_changes(), *console, wait(stopped));
        let tasks = vec![
            ("payment service", tokio::spawn(payment)),
            ("order service", tokio::spawn(order)),
            ("event watcher", tokio::spawn(watcher)),
            ("status printer", tokio::spawn(printer)),
        ];
        Ok(Self {
            client,
            http,
            orders,
            stop,
            events_seen,
            tasks,
        })
    }

    /// Places `count` orders over HTTP, waits until each is settled and the watcher printed
    /// their events, reads them back and prints the summary.
    async fn place_and_settle(&self, count: u32, console: &Console) -> anyhow::Result<()> {
        let mut http = HttpClient::connect(self.http).await?;
        console.say(format_args!(
            "placing {count} orders with POST http://{}/orders",
            self.http
        ));
        let mut placed = Vec::new();
        for index in 0..count {
            let (status, body) = http
                .send(Method::POST, "/orders", Some(&sample_order(index)))
                .await?;
            match (status, body["order_id"].as_str()) {
                (StatusCode::CREATED, Some(order_id)) => placed.push(order_id.to_owned()),
                _ => bail!("POST /orders answered {status}: {body}"),
            }
        }
        self.wait_until_settled(placed.len()).await?;
        let everything = 2 * placed.len();
        let mut events_seen = self.events_seen.clone();
        let caught_up = tokio::time::timeout(WATCHER_GRACE, async {
            events_seen
                .wait_for(|seen| *seen >= everything)
                .await
                .is_ok()
        })
        .await;
        if caught_up != Ok(true) {
            console.say("(the watcher did not print every event in time)");
        }

        let (mut paid, mut failed) = (0, 0);
        for order_id in &placed {
            let (status, body) = http
                .send(Method::GET, &format!("/orders/{order_id}"), None)
                .await?;
            match (status, body["status"].as_str()) {
                (StatusCode::OK, Some("paid")) => paid += 1,
                (StatusCode::OK, Some("failed")) => failed += 1,
                _ => bail!("GET /orders/{order_id} answered {status}: {body}"),
            }
        }
        drop(http);
        let stats = self.orders.stats();
        console.say("summary");
        console.say(format_args!("  orders placed  {:>6}", placed.len()));
        console.say(format_args!("  paid           {paid:>6}"));
        console.say(format_args!("  failed         {failed:>6}"));
        if let Some(latency) = stats.latency() {
            console.say(format_args!(
                "  end to end (placed → settled): p50 {}, p99 {}, max {}",
                Millis(latency.p50),
                Millis(latency.p99),
                Millis(latency.max)
            ));
        }
        Ok(())
    }

    async fn wait_until_settled(&self, placed: usize) -> anyhow::Result<()> {
        let mut changes = self.orders.status_changes();
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            let settled = self.orders.settled();
            if settled >= placed {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, changes.recv()).await {
                Ok(Ok(_) | Err(broadcast::error::RecvError::Lagged(_))) => {}
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    bail!("the order service stopped")
                }
                Err(_) => bail!(
                    "{} of {placed} orders still pending after {SETTLE_TIMEOUT:?}",
                    placed - settled
                ),
            }
        }
    }

    /// Stops every task (each finishes what it is doing), then closes the demo's client.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send_replace(true);
        let mut outcome = Ok(());
        for (name, task) in self.tasks {
            let stopped = match tokio::time::timeout(STOP_TIMEOUT, task).await {
                Ok(Ok(result)) => result.with_context(|| format!("the {name} failed")),
                Ok(Err(join)) => Err(anyhow!("the {name} panicked or was cancelled: {join}")),
                Err(_) => Err(anyhow!("the {name} did not stop within {STOP_TIMEOUT:?}")),
            };
            outcome = outcome.and(stopped);
        }
        let closed = self
            .client
            .close()
            .await
            .context("cannot close the demo's client");
        outcome.and(closed)
    }
}

/// Prints every event of the watched topics until `stop`, counting them in `seen`.
async fn print_events(
    [mut orders, mut payments]: [Subscription<RawEvent>; 2],
    console: Console,
    seen: watch::Sender<usize>,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = tokio::select! {
            () = &mut stop => break,
            next = orders.next() => next,
            next = payments.next() => next,
        };
        let delivery = next
            .ok_or_else(|| anyhow!("a watched subscription ended"))?
            .context("a watched subscription failed")?;
        let at = format!(
            "{}/{}@{}",
            delivery.topic(),
            delivery.partition,
            delivery.offset
        );
        console.say(format_args!("{at:<14} {}", describe(&delivery.event)));
        seen.send_modify(|seen| *seen += 1);
    }
    let closed_orders = orders.close().await;
    let closed_payments = payments.close().await;
    closed_orders
        .and(closed_payments)
        .context("cannot close the watcher's subscriptions")
}

/// Prints each order's settlement as the order service records it, until `stop`.
async fn print_changes(
    mut changes: broadcast::Receiver<StatusChange>,
    console: Console,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let change = tokio::select! {
            () = &mut stop => return Ok(()),
            change = changes.recv() => change,
        };
        match change {
            Ok(change) => {
                let detail = match &change.outcome {
                    PaymentOutcome::Completed { .. } => String::new(),
                    PaymentOutcome::Failed { reason } => format!(" ({reason})"),
                };
                console.say(format_args!(
                    "{:<14} {:<17} {}  after {}{detail}",
                    "order-service",
                    format!("order {}", change.status),
                    short(&change.order_id),
                    Millis(change.after)
                ));
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                console.say(format_args!("({missed} status changes not shown)"));
            }
            Err(broadcast::error::RecvError::Closed) => return Ok(()),
        }
    }
}

/// One line about an event of `orders` or `payments`, decoded by its `type` header.
fn describe(event: &RawEvent) -> String {
    let type_name = event
        .header(sidestream::headers::TYPE)
        .map(|value| String::from_utf8_lossy(value).into_owned())
        .unwrap_or_default();
    let value = event.value.clone();
    let line = match type_name.as_str() {
        OrderPlaced::TYPE_NAME => OrderPlaced::decode(value).map(|order| {
            let items = order
                .items
                .iter()
                .map(|item| format!("{} × {}", item.quantity, item.sku))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "{:<17} {}  {:<8} {:>9}  {items}",
                "order placed",
                short(&order.order_id),
                order.customer,
                Money(order.amount_cents).to_string()
            )
        }),
        PaymentCompleted::TYPE_NAME => PaymentCompleted::decode(value).map(|payment| {
            format!(
                "{:<17} {}  {:<8} {:>9}",
                "payment completed",
                short(&payment.order_id),
                "",
                Money(payment.amount_cents).to_string()
            )
        }),
        PaymentFailed::TYPE_NAME => PaymentFailed::decode(value).map(|failure| {
            format!(
                "{:<17} {}  {}",
                "payment failed",
                short(&failure.order_id),
                failure.reason
            )
        }),
        _ => return format!("event of type {type_name:?}"),
    };
    line.unwrap_or_else(|error| format!("unreadable {type_name}: {error}"))
}

/// The body of the `index`th order. Deterministic: customers take turns, one of them blocked;
/// every fourth order adds two espresso machines, which exceed the payment limit.
fn sample_order(index: u32) -> Value {
    let i = usize::try_from(index).unwrap_or_default();
    let customer = CUSTOMERS[i % CUSTOMERS.len()];
    let (sku, price) = CATALOG[i % CATALOG.len()];
    let mut items = vec![json!({ "sku": sku, "quantity": i % 3 + 1, "unit_price_cents": price })];
    if i % 4 == 3 {
        let (sku, price) = EXPENSIVE;
        items.push(json!({ "sku": sku, "quantity": 2, "unit_price_cents": price }));
    }
    json!({ "customer": customer, "items": items })
}

async fn connect(sidecar: &RunningSidecar, service: &str) -> anyhow::Result<Client> {
    Client::builder(service)
        .sidecar(sidecar.local_addr().to_string())
        .tls_dir(sidecar.tls_dir())
        .connect()
        .await
        .with_context(|| format!("{service} cannot connect to the sidecar"))
}

async fn watch_topic(client: &Client, topic: &str) -> anyhow::Result<Subscription<RawEvent>> {
    client
        .subscribe_raw(topic)
        .from(StartAt::Earliest)
        .start()
        .await
        .with_context(|| format!("cannot watch {topic:?}"))
}

/// Completes once `stopped` turns true (or its sender is gone).
async fn wait(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stopped| *stopped).await;
}

/// An HTTP/1.1 client on one keep-alive connection to the order service; the connection
/// closes when the client is dropped.
struct HttpClient {
    host: String,
    sender: SendRequest<Full<Bytes>>,
}

impl HttpClient {
    async fn connect(addr: SocketAddr) -> anyhow::Result<Self> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("cannot connect to the order service at {addr}"))?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the order service failed")?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "HTTP connection to the order service ended");
            }
        });
        Ok(Self {
            host: addr.to_string(),
            sender,
        })
    }

    /// Sends one request and reads the JSON answer.
    async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host);
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .with_context(|| format!("cannot build {method} {path}"))?;
        self.sender
            .ready()
            .await
            .context("the HTTP connection to the order service is gone")?;
        let response = self
            .sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path} failed"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .with_context(|| format!("cannot read the answer to {method} {path}"))?
            .to_bytes();
        let json = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{method} {path} answered {status} with a body that is not JSON: {:?}",
                String::from_utf8_lossy(&bytes)
            )
        })?;
        Ok((status, json))
    }
}

/// Writes the demo's lines to stdout, each with the time since the demo started.
#[derive(Debug, Clone, Copy)]
struct Console {
    start: Instant,
}

impl Console {
    fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    fn say(&self, line: impl Display) {
        let elapsed = Millis(self.start.elapsed());
        // A closed stdout (`sidestream demo | head`) must not stop the demo halfway.
        let _ = writeln!(std::io::stdout().lock(), "[{elapsed:>10}] {line}");
    }
}

/// A duration in milliseconds with one decimal, e.g. `12.3 ms`.
struct Millis(Duration);

impl Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} ms", self.0.as_secs_f64() * 1e3)
    }
}

/// An amount of cents as units and cents, e.g. `12.50`.
struct Money(u64);

impl Display for Money {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// The last 8 characters of an order id: the random end of a UUID v7, enough to tell the
/// demo's orders apart (the start is a timestamp, nearly the same for all of them).
fn short(order_id: &str) -> &str {
    order_id
        .char_indices()
        .rev()
        .nth(7)
        .map_or(order_id, |(at, _)| &order_id[at..])
}

const CUSTOMERS: [&str; 5] = ["ada", "grace", BLOCKED_CUSTOMER, "linus", "barbara"];
const CATALOG: [(&str, u64); 3] = [("tea-earl-grey", 450), ("mug", 1_299), ("kettle", 4_999)];
const EXPENSIVE: (&str, u64) = ("espresso-machine", 64_900);
const BLOCKED_CUSTOMER: &str = "mallory";
/// The payment limit: 1000.00, below two espresso machines.
const PAYMENT_LIMIT_CENTS: u64 = 100_000;
/// How long after the last order was placed every order must be settled.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the watcher may take to print the last events once every order is settled.
const WATCHER_GRACE: Duration = Duration::from_secs(5);
/// How long each task may take to stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_orders_are_valid_and_some_fail_for_each_reason() {
        let policy = PaymentPolicy::new(PAYMENT_LIMIT_CENTS).block(BLOCKED_CUSTOMER);
        let (mut blocked, mut over_limit, mut charged) = (0, 0, 0);
        for index in 0..20 {
            let body = sample_order(index).to_string();
            let order = order_service::NewOrder::from_json(body.as_bytes())
                .unwrap()
                .into_event(format!("o-{index}"));
            match policy.decide(&order) {
                payment_service::Decision::Charge(_) => charged += 1,
                payment_service::Decision::Decline(failure)
                    if failure.reason.contains("blocked") =>
                {
                    blocked += 1;
                }
                payment_service::Decision::Decline(_) => over_limit += 1,
            }
        }
        assert!(
            blocked > 0 && over_limit > 0 && charged > 0,
            "{blocked} {over_limit} {charged}"
        );
    }

    #[test]
    fn short_ids_and_amounts_read_well() {
        assert_eq!(short("0193a1b2-7c1e-7d3a-9f2b-4c5d6e7f8a9b"), "6e7f8a9b");
        assert_eq!(short("o-1"), "o-1");
        assert_eq!(Money(1_250).to_string(), "12.50");
        assert_eq!(Money(7).to_string(), "0.07");
        assert_eq!(Millis(Duration::from_micros(12_345)).to_string(), "12.3 ms");
    }
}
