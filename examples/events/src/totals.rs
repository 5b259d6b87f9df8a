//! The arithmetic of an order's total, shared so that the order service (which computes it)
//! and the payment service (which checks it) agree to the cent.

use crate::{LineItem, OrderPlaced};

impl LineItem {
    /// `quantity * unit_price_cents`, or `None` if it does not fit in a `u64`.
    pub fn total_cents(&self) -> Option<u64> {
        u64::from(self.quantity).checked_mul(self.unit_price_cents)
    }
}

impl OrderPlaced {
    /// The sum of the items' totals, or `None` if it does not fit in a `u64`.
    ///
    /// A well-formed order has `amount_cents == items_total_cents()`.
    pub fn items_total_cents(&self) -> Option<u64> {
        self.items
            .iter()
            .try_fold(0_u64, |sum, item| sum.checked_add(item.total_cents()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(quantity: u32, unit_price_cents: u64) -> LineItem {
        LineItem {
            sku: "sku".into(),
            quantity,
            unit_price_cents,
        }
    }

    #[test]
    fn total_is_the_sum_of_quantity_times_price() {
        let order = OrderPlaced {
            items: vec![item(2, 450), item(1, 1_299), item(0, 10)],
            ..OrderPlaced::default()
        };
        assert_eq!(order.items_total_cents(), Some(2_199));
        assert_eq!(OrderPlaced::default().items_total_cents(), Some(0));
    }

    #[test]
    fn overflow_is_none_not_a_wrapped_total() {
        assert_eq!(item(2, u64::MAX / 2 + 1).total_cents(), None);
        let order = OrderPlaced {
            items: vec![item(1, u64::MAX), item(1, 1)],
            ..OrderPlaced::default()
        };
        assert_eq!(order.items_total_cents(), None);
    }
}
