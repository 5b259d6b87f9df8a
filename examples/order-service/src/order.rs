//! One order and the rules of its status, as a pure state machine: payment outcomes come in
//! with the time they arrived, and [`Order::apply`] says what they changed.
//!
//! ```text
//!            PaymentCompleted (amount matches)
//! pending ─┬───────────────────────────────────▶ paid
//!          └───────────────────────────────────▶ failed
//!            PaymentFailed
//! ```
//!
//! `paid` and `failed` are final. Delivery is at least once, so the same outcome may arrive
//! twice: a repeat changes nothing ([`Transition::Unchanged`]). An outcome that contradicts
//! the order (another payment, a different amount, the opposite result) is refused
//! ([`Transition::Refused`]) and the order keeps its status.

use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use sidestream_example_events::{LineItem, OrderPlaced, PaymentCompleted, PaymentFailed};

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// The payment service declined it.
    Failed,
    /// The payment service charged it.
    Paid,
    /// Placed; no payment outcome yet.
    Pending,
}

/// What the payment service decided about an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaymentOutcome {
    /// Charged: the payment's id and the amount charged.
    Completed {
        /// The payment's id.
        payment_id: String,
        /// The amount charged, in cents.
        amount_cents: u64,
    },
    /// Declined, and why.
    Failed {
        /// Why, for people.
        reason: String,
    },
}

/// What applying a payment outcome did to an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The outcome contradicts what the order already is or holds; it was ignored.
    Refused {
        /// Why.
        reason: String,
    },
    /// The order left `pending` for `status`, `after` it was placed.
    Settled {
        /// The new status, `paid` or `failed`.
        status: OrderStatus,
        /// Time from placing the order to its settlement.
        after: Duration,
    },
    /// The same outcome again (a redelivery): nothing changed.
    Unchanged,
}

/// An order: what was placed, when, and its status.
#[derive(Debug, Clone)]
pub struct Order {
    event: OrderPlaced,
    placed_at: SystemTime,
    placed: Instant,
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    Failed { reason: String, after: Duration },
    Paid { payment_id: String, after: Duration },
    Pending,
}

impl Order {
    /// A new `pending` order for the event about to be published; `placed` is when the
    /// latency to its settlement starts, `placed_at` the wall-clock time shown to people.
    pub fn new(event: OrderPlaced, placed: Instant, placed_at: SystemTime) -> Self {
        Self {
            event,
            placed_at,
            placed,
            state: State::Pending,
        }
    }

    /// The order's id.
    pub fn id(&self) -> &str {
        &self.event.order_id
    }

    /// Who placed it.
    pub fn customer(&self) -> &str {
        &self.event.customer
    }

    /// Its total, in cents.
    pub fn amount_cents(&self) -> u64 {
        self.event.amount_cents
    }

    /// What was ordered.
    pub fn items(&self) -> &[LineItem] {
        &self.event.items
    }

    /// When it was placed (wall clock).
    pub fn placed_at(&self) -> SystemTime {
        self.placed_at
    }

    /// Its status.
    pub fn status(&self) -> OrderStatus {
        match self.state {
            State::Failed { .. } => OrderStatus::Failed,
            State::Paid { .. } => OrderStatus::Paid,
            State::Pending => OrderStatus::Pending,
        }
    }

    /// The payment's id once paid.
    pub fn payment_id(&self) -> Option<&str> {
        match &self.state {
            State::Paid { payment_id, .. } => Some(payment_id),
            _ => None,
        }
    }

    /// Why the payment failed, once it did.
    pub fn failure_reason(&self) -> Option<&str> {
        match &self.state {
            State::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// Time from placing to settlement, once settled.
    pub fn settled_after(&self) -> Option<Duration> {
        match self.state {
            State::Failed { after, .. } | State::Paid { after, .. } => Some(after),
            State::Pending => None,
        }
    }

    /// Applies a payment outcome that arrived at `now`.
    pub fn apply(&mut self, outcome: PaymentOutcome, now: Instant) -> Transition {
        let after = now.saturating_duration_since(self.placed);
        match (&self.state, outcome) {
            (
                State::Pending,
                PaymentOutcome::Completed {
                    payment_id,
                    amount_cents,
                },
            ) => {
                if amount_cents != self.event.amount_cents {
                    return Transition::Refused {
                        reason: format!(
                            "payment {payment_id} charged {amount_cents} cents for an order of {} cents",
                            self.event.amount_cents
                        ),
                    };
                }
                self.state = State::Paid { payment_id, after };
                Transition::Settled {
                    status: OrderStatus::Paid,
                    after,
                }
            }
            (State::Pending, PaymentOutcome::Failed { reason }) => {
                self.state = State::Failed { reason, after };
                Transition::Settled {
                    status: OrderStatus::Failed,
                    after,
                }
            }
            (
                State::Paid { payment_id, .. },
                PaymentOutcome::Completed {
                    payment_id: again, ..
                },
            ) if *payment_id == again => Transition::Unchanged,
            (State::Failed { reason, .. }, PaymentOutcome::Failed { reason: again })
                if *reason == again =>
            {
                Transition::Unchanged
            }
            (_, outcome) => Transition::Refused {
                reason: format!("the order is already {} ({outcome})", self.status()),
            },
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Failed => "failed",
            Self::Paid => "paid",
            Self::Pending => "pending",
        })
    }
}

impl fmt::Display for PaymentOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed {
                payment_id,
                amount_cents,
            } => write!(f, "payment {payment_id} of {amount_cents} cents completed"),
            Self::Failed { reason } => write!(f, "payment failed: {reason}"),
        }
    }
}

impl From<PaymentCompleted> for PaymentOutcome {
    fn from(event: PaymentCompleted) -> Self {
        Self::Completed {
            payment_id: event.payment_id,
            amount_cents: event.amount_cents,
        }
    }
}

impl From<PaymentFailed> for PaymentOutcome {
    fn from(event: PaymentFailed) -> Self {
        Self::Failed {
            reason: event.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount_cents: u64, placed: Instant) -> Order {
        let event = OrderPlaced {
            order_id: "o-1".into(),
            customer: "ada".into(),
            amount_cents,
            items: vec![LineItem {
                sku: "tea".into(),
                quantity: 1,
                unit_price_cents: amount_cents,
            }],
        };
        Order::new(event, placed, SystemTime::UNIX_EPOCH)
    }

    fn completed(payment_id: &str, amount_cents: u64) -> PaymentOutcome {
        PaymentOutcome::Completed {
            payment_id: payment_id.into(),
            amount_cents,
        }
    }

    fn failed(reason: &str) -> PaymentOutcome {
        PaymentOutcome::Failed {
            reason: reason.into(),
        }
    }

    #[test]
    fn a_new_order_is_pending() {
        let order = order(500, Instant::now());
        assert_eq!(order.status(), OrderStatus::Pending);
        assert_eq!(order.settled_after(), None);
        assert_eq!(order.payment_id(), None);
        assert_eq!(order.failure_reason(), None);
    }

    #[test]
    fn a_completed_payment_settles_as_paid_with_its_latency() {
        let placed = Instant::now();
        let mut order = order(500, placed);
        let later = placed + Duration::from_millis(7);
        assert_eq!(
            order.apply(completed("pay-1", 500), later),
            Transition::Settled {
                status: OrderStatus::Paid,
                after: Duration::from_millis(7)
            }
        );
        assert_eq!(order.status(), OrderStatus::Paid);
        assert_eq!(order.payment_id(), Some("pay-1"));
        assert_eq!(order.settled_after(), Some(Duration::from_millis(7)));
    }

    #[test]
    fn a_failed_payment_settles_as_failed_with_its_reason() {
        let placed = Instant::now();
        let mut order = order(500, placed);
        let transition = order.apply(failed("customer is blocked"), placed);
        assert_eq!(
            transition,
            Transition::Settled {
                status: OrderStatus::Failed,
                after: Duration::ZERO
            }
        );
        assert_eq!(order.failure_reason(), Some("customer is blocked"));
    }

    #[test]
    fn a_redelivered_outcome_changes_nothing() {
        let placed = Instant::now();
        let mut paid = order(500, placed);
        paid.apply(completed("pay-1", 500), placed);
        assert_eq!(
            paid.apply(completed("pay-1", 500), placed + Duration::from_secs(1)),
            Transition::Unchanged
        );
        assert_eq!(
            paid.settled_after(),
            Some(Duration::ZERO),
            "first settlement kept"
        );

        let mut failed_order = order(500, placed);
        failed_order.apply(failed("declined"), placed);
        assert_eq!(
            failed_order.apply(failed("declined"), placed),
            Transition::Unchanged
        );
    }

    #[test]
    fn contradicting_outcomes_are_refused_and_the_status_stays() {
        let placed = Instant::now();
        let mut paid = order(500, placed);
        paid.apply(completed("pay-1", 500), placed);
        assert!(matches!(
            paid.apply(failed("declined"), placed),
            Transition::Refused { reason } if reason.contains("already paid")
        ));
        assert!(matches!(
            paid.apply(completed("pay-2", 500), placed),
            Transition::Refused { .. }
        ));
        assert_eq!(paid.payment_id(), Some("pay-1"));

        let mut failed_order = order(500, placed);
        failed_order.apply(failed("declined"), placed);
        assert!(matches!(
            failed_order.apply(completed("pay-1", 500), placed),
            Transition::Refused { .. }
        ));
        assert_eq!(failed_order.status(), OrderStatus::Failed);
    }

    #[test]
    fn a_payment_of_another_amount_is_refused() {
        let placed = Instant::now();
        let mut order = order(500, placed);
        assert!(matches!(
            order.apply(completed("pay-1", 499), placed),
            Transition::Refused { reason } if reason.contains("499")
        ));
        assert_eq!(order.status(), OrderStatus::Pending);
    }

    #[test]
    fn status_names_are_the_api_names() {
        assert_eq!(OrderStatus::Pending.to_string(), "pending");
        assert_eq!(
            serde_json::to_value(OrderStatus::Paid).unwrap(),
            serde_json::json!("paid")
        );
        assert_eq!(
            serde_json::to_value(OrderStatus::Failed).unwrap(),
            serde_json::json!("failed")
        );
    }
}
