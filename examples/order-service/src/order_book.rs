//! [`OrderBook`]: the orders this instance placed, kept in memory, with their statistics and a
//! feed of status changes.
//!
//! It is an example: the book lives as long as the process and is not shared between
//! instances. A real service keeps orders in its database and updates them from the same
//! events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::order::{Order, OrderStatus, PaymentOutcome, Transition};

/// The orders, shared by the HTTP handlers and the payment follower. Cloning is cheap: clones
/// share one book.
#[derive(Debug, Clone)]
pub struct OrderBook {
    book: Arc<Mutex<Book>>,
    changes: broadcast::Sender<StatusChange>,
}

/// The orders, and how many of them are settled (kept as orders change, so that waiting for
/// settlement costs no scan).
#[derive(Debug, Default)]
struct Book {
    orders: HashMap<String, Order>,
    settled: usize,
}

/// An order left `pending`: sent to every [`OrderBook::status_changes`] receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusChange {
    /// The order.
    pub order_id: String,
    /// Its new status.
    pub status: OrderStatus,
    /// What settled it (the payment's id or the failure reason).
    pub outcome: PaymentOutcome,
    /// Time from placing the order to this change.
    pub after: Duration,
}

/// Counts of the book's orders by status, and how long the settled ones took.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderStats {
    /// Orders placed (every status).
    pub placed: usize,
    /// Orders still waiting for their payment.
    pub pending: usize,
    /// Orders paid.
    pub paid: usize,
    /// Orders whose payment failed.
    pub failed: usize,
    /// Time from placing to settlement of each settled order, shortest first.
    pub settle_latencies: Vec<Duration>,
}

/// Percentiles of the settlement latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatencySummary {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Longest.
    pub max: Duration,
}

impl OrderBook {
    /// An empty book.
    pub fn new() -> Self {
        let (changes, _) = broadcast::channel(STATUS_CHANGE_BUFFER);
        Self {
            book: Arc::new(Mutex::new(Book::default())),
            changes,
        }
    }

    /// Adds a new order (before its event is published, so that a fast payment outcome
    /// always finds it).
    pub fn insert(&self, order: Order) {
        let mut book = self.lock();
        let settled = order.settled_after().is_some();
        if let Some(replaced) = book.orders.insert(order.id().to_owned(), order) {
            book.settled -= usize::from(replaced.settled_after().is_some());
        }
        book.settled += usize::from(settled);
    }

    /// Takes back an order whose event could not be published.
    pub fn remove(&self, order_id: &str) -> Option<Order> {
        let mut book = self.lock();
        let removed = book.orders.remove(order_id)?;
        book.settled -= usize::from(removed.settled_after().is_some());
        Some(removed)
    }

    /// A copy of one order.
    pub fn order(&self, order_id: &str) -> Option<Order> {
        self.lock().orders.get(order_id).cloned()
    }

    /// How many orders are paid or failed; unlike [`stats`](Self::stats), costs no scan.
    pub fn settled(&self) -> usize {
        self.lock().settled
    }

    /// Applies a payment outcome that arrived at `now` to its order; `None` if the book has
    /// no such order. A settlement is sent to the [`status_changes`](Self::status_changes)
    /// receivers.
    pub fn apply(
        &self,
        order_id: &str,
        outcome: PaymentOutcome,
        now: Instant,
    ) -> Option<Transition> {
        let transition = {
            let mut book = self.lock();
            let transition = book.orders.get_mut(order_id)?.apply(outcome.clone(), now);
            if matches!(transition, Transition::Settled { .. }) {
                book.settled += 1;
            }
            transition
        };
        if let Transition::Settled { status, after } = transition {
            // No receiver is not an error: nobody is watching.
            let _ = self.changes.send(StatusChange {
                order_id: order_id.to_owned(),
                status,
                outcome,
                after,
            });
        }
        Some(transition)
    }

    /// A receiver of every status change from now on. A receiver that falls more than
    /// 1024 changes behind gets [`broadcast::error::RecvError::Lagged`] and then continues;
    /// [`stats`](Self::stats) is always exact.
    pub fn status_changes(&self) -> broadcast::Receiver<StatusChange> {
        self.changes.subscribe()
    }

    /// Counts the orders by status and collects the settlement latencies.
    pub fn stats(&self) -> OrderStats {
        let book = self.lock();
        let mut stats = OrderStats {
            placed: book.orders.len(),
            ..OrderStats::default()
        };
        for order in book.orders.values() {
            match order.status() {
                OrderStatus::Failed => stats.failed += 1,
                OrderStatus::Paid => stats.paid += 1,
                OrderStatus::Pending => stats.pending += 1,
            }
            stats.settle_latencies.extend(order.settled_after());
        }
        stats.settle_latencies.sort_unstable();
        stats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // Nothing panics while the lock is held (`Order::apply` and the map operations do not),
        // so a poisoned lock still guards a consistent book.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for OrderBook {
    fn default() -> Self {
        Self::new()
    }
}

impl OrderStats {
    /// Orders paid or failed.
    pub fn settled(&self) -> usize {
        self.paid + self.failed
    }

    /// p50, p99 and max of the settlement latencies (nearest rank); `None` before any order
    /// settled.
    pub fn latency(&self) -> Option<LatencySummary> {
        Some(LatencySummary {
            p50: nearest_rank(&self.settle_latencies, 50)?,
            p99: nearest_rank(&self.settle_latencies, 99)?,
            max: *self.settle_latencies.last()?,
        })
    }
}

/// The `percent`th percentile of sorted values by the nearest-rank method: the smallest value
/// that at least `percent`% of the values are less than or equal to.
fn nearest_rank(sorted: &[Duration], percent: usize) -> Option<Duration> {
    let rank = (sorted.len() * percent).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// Status changes a slow receiver may fall behind by before it misses some.
const STATUS_CHANGE_BUFFER: usize = 1024;

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use sidestream_example_events::OrderPlaced;

    use super::*;

    fn place(book: &OrderBook, order_id: &str, placed: Instant) {
        let event = OrderPlaced {
            order_id: order_id.into(),
            customer: "ada".into(),
            amount_cents: 100,
            items: Vec::new(),
        };
        book.insert(Order::new(event, placed, SystemTime::now()));
    }

    fn paid(payment_id: &str) -> PaymentOutcome {
        PaymentOutcome::Completed {
            payment_id: payment_id.into(),
            amount_cents: 100,
        }
    }

    #[test]
    fn outcomes_update_their_order_and_the_stats() {
        let book = OrderBook::new();
        let start = Instant::now();
        for id in ["a", "b", "c"] {
            place(&book, id, start);
        }
        let ms = Duration::from_millis;
        assert!(matches!(
            book.apply("a", paid("pay-a"), start + ms(4)),
            Some(Transition::Settled {
                status: OrderStatus::Paid,
                ..
            })
        ));
        let declined = PaymentOutcome::Failed {
            reason: "blocked".into(),
        };
        book.apply("b", declined, start + ms(2));
        assert_eq!(book.apply("nope", paid("pay-x"), start), None);

        let stats = book.stats();
        assert_eq!(
            (stats.placed, stats.pending, stats.paid, stats.failed),
            (3, 1, 1, 1)
        );
        assert_eq!(stats.settled(), 2);
        assert_eq!(book.settled(), 2);
        assert_eq!(stats.settle_latencies, [ms(2), ms(4)]);
        assert_eq!(book.order("a").map(|o| o.status()), Some(OrderStatus::Paid));
    }

    #[test]
    fn settlements_reach_status_change_receivers_once() {
        let book = OrderBook::new();
        let mut changes = book.status_changes();
        let start = Instant::now();
        place(&book, "a", start);
        book.apply("a", paid("pay-a"), start);
        book.apply("a", paid("pay-a"), start);
        let change = changes.try_recv().unwrap();
        assert_eq!(change.order_id, "a");
        assert_eq!(change.status, OrderStatus::Paid);
        assert_eq!(change.outcome, paid("pay-a"));
        assert!(changes.try_recv().is_err(), "a redelivery is no change");
    }

    #[test]
    fn removed_orders_are_gone() {
        let book = OrderBook::new();
        place(&book, "a", Instant::now());
        place(&book, "b", Instant::now());
        book.apply("b", paid("pay-b"), Instant::now());
        assert!(book.remove("a").is_some());
        assert!(book.order("a").is_none());
        assert_eq!(book.settled(), 1);
        assert!(book.remove("b").is_some());
        assert_eq!(book.settled(), 0);
        assert_eq!(book.stats(), OrderStats::default());
    }

    #[test]
    fn latency_percentiles_use_the_nearest_rank() {
        let ms = Duration::from_millis;
        let stats = OrderStats {
            settle_latencies: (1..=200).map(ms).collect(),
            ..OrderStats::default()
        };
        assert_eq!(
            stats.latency(),
            Some(LatencySummary {
                p50: ms(100),
                p99: ms(198),
                max: ms(200)
            })
        );
        let one = OrderStats {
            settle_latencies: vec![ms(9)],
            ..OrderStats::default()
        };
        assert_eq!(
            one.latency().map(|l| (l.p50, l.p99, l.max)),
            Some((ms(9), ms(9), ms(9)))
        );
        assert_eq!(OrderStats::default().latency(), None);
    }
}
