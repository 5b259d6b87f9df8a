//! [`PaymentPolicy`]: which orders are charged and which are declined, as a pure function of
//! the order, so every instance of the service (and every redelivery of an order) decides the
//! same.
//!
//! The rules, in order; the first that applies declines the order:
//!
//! 1. an order without items, or whose amount is not the sum of its items, is malformed;
//! 2. an order of 0 cents has nothing to charge;
//! 3. a customer on the block list is declined;
//! 4. an amount above the limit is declined.
//!
//! Everything else is charged, under a payment id derived from the order id, so that charging
//! a redelivered order twice is recognisable as the same payment.

use std::collections::BTreeSet;
use std::fmt;

use sidestream_example_events::{OrderPlaced, PaymentCompleted, PaymentFailed};

/// The rules that decide each payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPolicy {
    limit_cents: u64,
    blocked_customers: BTreeSet<String>,
}

/// What the payment service decided about one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Charge it: publish [`PaymentCompleted`].
    Charge(PaymentCompleted),
    /// Decline it: publish [`PaymentFailed`].
    Decline(PaymentFailed),
}

impl PaymentPolicy {
    /// Charges orders up to `limit_cents` (inclusive), blocks nobody.
    pub fn new(limit_cents: u64) -> Self {
        Self {
            limit_cents,
            blocked_customers: BTreeSet::new(),
        }
    }

    /// The same policy, also declining every order of `customer` (compared without regard
    /// to case or surrounding spaces).
    #[must_use]
    pub fn block(mut self, customer: &str) -> Self {
        self.blocked_customers.insert(normalize(customer));
        self
    }

    /// The largest amount charged, in cents.
    pub fn limit_cents(&self) -> u64 {
        self.limit_cents
    }

    /// Decides about `order`.
    pub fn decide(&self, order: &OrderPlaced) -> Decision {
        match self.refusal(order) {
            Some(reason) => Decision::Decline(PaymentFailed {
                order_id: order.order_id.clone(),
                reason,
            }),
            None => Decision::Charge(PaymentCompleted {
                order_id: order.order_id.clone(),
                payment_id: format!("pay-{}", order.order_id),
                amount_cents: order.amount_cents,
            }),
        }
    }

    fn refusal(&self, order: &OrderPlaced) -> Option<String> {
        if order.items.is_empty() {
            return Some("the order has no items".into());
        }
        match order.items_total_cents() {
            Some(total) if total == order.amount_cents => {}
            Some(total) => {
                return Some(format!(
                    "amount {} cents is not the items' total of {total} cents",
                    order.amount_cents
                ));
            }
            None => return Some("the items' total overflows".into()),
        }
        if order.amount_cents == 0 {
            return Some("nothing to charge".into());
        }
        if self.blocked_customers.contains(&normalize(&order.customer)) {
            return Some(format!("customer {:?} is blocked", order.customer));
        }
        if order.amount_cents > self.limit_cents {
            return Some(format!(
                "amount {} cents exceeds the limit of {} cents",
                order.amount_cents, self.limit_cents
            ));
        }
        None
    }
}

impl Default for PaymentPolicy {
    /// A limit of [`DEFAULT_LIMIT_CENTS`], nobody blocked.
    fn default() -> Self {
        Self::new(DEFAULT_LIMIT_CENTS)
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Charge(payment) => write!(
                f,
                "charge {} cents as {}",
                payment.amount_cents, payment.payment_id
            ),
            Self::Decline(failure) => write!(f, "decline: {}", failure.reason),
        }
    }
}

fn normalize(customer: &str) -> String {
    customer.trim().to_lowercase()
}

/// The default limit: 1000.00 in cents.
pub const DEFAULT_LIMIT_CENTS: u64 = 100_000;

#[cfg(test)]
mod tests {
    use sidestream_example_events::LineItem;

    use super::*;

    fn order(customer: &str, quantity: u32, unit_price_cents: u64) -> OrderPlaced {
        OrderPlaced {
            order_id: "o-1".into(),
            customer: customer.into(),
            amount_cents: u64::from(quantity).wrapping_mul(unit_price_cents),
            items: vec![LineItem {
                sku: "tea".into(),
                quantity,
                unit_price_cents,
            }],
        }
    }

    fn reason(decision: Decision) -> String {
        match decision {
            Decision::Decline(failure) => failure.reason,
            Decision::Charge(payment) => panic!("charged {payment:?}"),
        }
    }

    #[test]
    fn orders_within_the_limit_are_charged_under_an_id_from_the_order() {
        let policy = PaymentPolicy::new(1_000);
        assert_eq!(
            policy.decide(&order("ada", 2, 500)),
            Decision::Charge(PaymentCompleted {
                order_id: "o-1".into(),
                payment_id: "pay-o-1".into(),
                amount_cents: 1_000,
            })
        );
        assert_eq!(
            policy.decide(&order("ada", 2, 500)),
            policy.decide(&order("ada", 2, 500)),
            "the same order, the same decision"
        );
    }

    #[test]
    fn amounts_over_the_limit_are_declined() {
        let policy = PaymentPolicy::new(1_000);
        let decision = policy.decide(&order("ada", 1, 1_001));
        assert_eq!(
            reason(decision),
            "amount 1001 cents exceeds the limit of 1000 cents"
        );
    }

    #[test]
    fn blocked_customers_are_declined_whatever_their_case() {
        let policy = PaymentPolicy::new(1_000).block(" Mallory ");
        assert_eq!(
            reason(policy.decide(&order("mallory", 1, 10))),
            "customer \"mallory\" is blocked"
        );
        assert!(reason(policy.decide(&order("MALLORY", 1, 10))).contains("blocked"));
        assert!(matches!(
            policy.decide(&order("ada", 1, 10)),
            Decision::Charge(_)
        ));
    }

    #[test]
    fn malformed_orders_are_declined() {
        let policy = PaymentPolicy::default();
        let mut no_items = order("ada", 1, 10);
        no_items.items.clear();
        assert_eq!(reason(policy.decide(&no_items)), "the order has no items");

        let mut wrong_total = order("ada", 2, 10);
        wrong_total.amount_cents = 15;
        assert_eq!(
            reason(policy.decide(&wrong_total)),
            "amount 15 cents is not the items' total of 20 cents"
        );

        let mut overflow = order("ada", 2, u64::MAX);
        overflow.amount_cents = 1;
        assert_eq!(
            reason(policy.decide(&overflow)),
            "the items' total overflows"
        );

        assert_eq!(
            reason(policy.decide(&order("ada", 1, 0))),
            "nothing to charge"
        );
    }

    #[test]
    fn the_first_rule_that_applies_gives_the_reason() {
        let policy = PaymentPolicy::new(100).block("mallory");
        assert!(reason(policy.decide(&order("mallory", 1, 5_000))).contains("blocked"));
    }

    #[test]
    fn decisions_read_well() {
        let policy = PaymentPolicy::new(1_000);
        assert_eq!(
            policy.decide(&order("ada", 1, 250)).to_string(),
            "charge 250 cents as pay-o-1"
        );
        assert_eq!(PaymentPolicy::default().limit_cents(), DEFAULT_LIMIT_CENTS);
    }
}
