//! Follows the topic `payments` in the group `order-service` and settles each order from its
//! payment's outcome.
//!
//! `payments` carries two event types, `shop.PaymentCompleted.v1` and
//! `shop.PaymentFailed.v1`, so the follower subscribes to the topic's raw events and decodes
//! each by its `type` header ([`PaymentEvent::from_raw`]). An event it cannot read (another
//! type, a corrupt value) or about an order this instance does not know is logged and
//! acknowledged: one bad event must not stop every order behind it.
//!
//! Each event is acknowledged after its order was updated, so a crash in between redelivers
//! it, which the order's state machine absorbs ([`Transition::Unchanged`]).

use std::future::Future;
use std::time::Instant;

use anyhow::Context as _;
use sidestream::{Event as _, RawEvent, Subscription};
use sidestream_example_events::{PaymentCompleted, PaymentFailed};

use crate::order::{PaymentOutcome, Transition};
use crate::order_book::OrderBook;

/// One event of `payments`, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEvent {
    /// The order it concerns.
    pub order_id: String,
    /// What the payment service decided.
    pub outcome: PaymentOutcome,
}

/// Why an event of `payments` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UnreadableEvent {
    /// Its value is not a valid message of its type.
    #[error("value is not a valid {type_name}")]
    Decode {
        /// The type it claims.
        type_name: &'static str,
        /// What prost found wrong.
        #[source]
        source: prost::DecodeError,
    },
    /// It has a type this service does not know (or no `type` header).
    #[error("unexpected event type {0:?}")]
    UnknownType(Option<String>),
}

impl PaymentEvent {
    /// Decodes a raw event of `payments` by its `type` header.
    pub fn from_raw(event: &RawEvent) -> Result<Self, UnreadableEvent> {
        let type_name = event
            .header(sidestream::headers::TYPE)
            .map(|value| String::from_utf8_lossy(value).into_owned());
        match type_name.as_deref() {
            Some(PaymentCompleted::TYPE_NAME) => {
                let event = decode::<PaymentCompleted>(event)?;
                Ok(Self {
                    order_id: event.order_id.clone(),
                    outcome: event.into(),
                })
            }
            Some(PaymentFailed::TYPE_NAME) => {
                let event = decode::<PaymentFailed>(event)?;
                Ok(Self {
                    order_id: event.order_id.clone(),
                    outcome: event.into(),
                })
            }
            _ => Err(UnreadableEvent::UnknownType(type_name)),
        }
    }
}

/// Applies the payment events of `subscription` to `orders` until `stop` completes or the
/// subscription fails, then closes the subscription (committing what was acknowledged).
pub(crate) async fn follow(
    mut subscription: Subscription<RawEvent>,
    orders: OrderBook,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut stop = std::pin::pin!(stop);
    loop {
        let next = tokio::select! {
            () = &mut stop => break,
            next = subscription.next() => next,
        };
        let Some(delivery) = next else {
            anyhow::bail!("the subscription to payments ended");
        };
        let delivery = delivery.context("the subscription to payments failed")?;
        let (partition, offset) = (delivery.partition, delivery.offset);
        // In the trace of the payment's publisher (and so of the order's).
        delivery.handling_span().in_scope(|| match PaymentEvent::from_raw(&delivery.event) {
            Ok(event) => settle(&orders, event, Instant::now()),
            Err(error) => {
                tracing::warn!(partition, offset, %error, "skipping an unreadable payment event");
            }
        });
        delivery.ack().await.with_context(|| {
            format!("cannot acknowledge payments partition {partition} offset {offset}")
        })?;
    }
    subscription
        .close()
        .await
        .context("cannot close the subscription to payments")
}

fn settle(orders: &OrderBook, event: PaymentEvent, now: Instant) {
    let order_id = event.order_id;
    match orders.apply(&order_id, event.outcome, now) {
        Some(Transition::Settled { status, after }) => tracing::info!(
            %order_id,
            %status,
            ?after,
            "order settled"
        ),
        Some(Transition::Unchanged) => {
            tracing::debug!(%order_id, "payment outcome delivered again");
        }
        Some(Transition::Refused { reason }) => {
            tracing::warn!(%order_id, %reason, "payment outcome refused");
        }
        None => tracing::warn!(%order_id, "payment outcome for an unknown order"),
    }
}

fn decode<E: sidestream::Event>(event: &RawEvent) -> Result<E, UnreadableEvent> {
    E::decode(event.value.clone()).map_err(|source| UnreadableEvent::Decode {
        type_name: E::TYPE_NAME,
        source,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn raw(type_name: Option<&str>, value: Vec<u8>) -> RawEvent {
        let event = RawEvent::new(value);
        match type_name {
            Some(name) => event.with_header(sidestream::headers::TYPE, name.as_bytes()),
            None => event,
        }
    }

    #[test]
    fn both_payment_types_are_read_by_their_type_header() {
        let completed = PaymentCompleted {
            order_id: "o-1".into(),
            payment_id: "pay-o-1".into(),
            amount_cents: 900,
        };
        let event = raw(Some(PaymentCompleted::TYPE_NAME), completed.encode_to_vec());
        assert_eq!(
            PaymentEvent::from_raw(&event).unwrap(),
            PaymentEvent {
                order_id: "o-1".into(),
                outcome: PaymentOutcome::Completed {
                    payment_id: "pay-o-1".into(),
                    amount_cents: 900
                },
            }
        );

        let failed = PaymentFailed {
            order_id: "o-2".into(),
            reason: "customer \"mallory\" is blocked".into(),
        };
        let event = raw(Some(PaymentFailed::TYPE_NAME), failed.encode_to_vec());
        let read = PaymentEvent::from_raw(&event).unwrap();
        assert_eq!(read.order_id, "o-2");
        assert!(
            matches!(read.outcome, PaymentOutcome::Failed { reason } if reason.contains("blocked"))
        );
    }

    #[test]
    fn other_types_and_bad_values_are_reported() {
        let untyped = raw(None, Vec::new());
        assert!(matches!(
            PaymentEvent::from_raw(&untyped),
            Err(UnreadableEvent::UnknownType(None))
        ));
        let other = raw(Some("shop.Refund.v1"), Vec::new());
        assert_eq!(
            PaymentEvent::from_raw(&other).unwrap_err().to_string(),
            "unexpected event type Some(\"shop.Refund.v1\")"
        );
        let corrupt = raw(Some(PaymentFailed::TYPE_NAME), vec![0xff, 0xff, 0xff]);
        assert!(matches!(
            PaymentEvent::from_raw(&corrupt),
            Err(UnreadableEvent::Decode {
                type_name: "shop.PaymentFailed.v1",
                ..
            })
        ));
    }

    #[test]
    fn settling_an_unknown_order_changes_nothing() {
        let orders = OrderBook::new();
        let event = PaymentEvent {
            order_id: "nope".into(),
            outcome: PaymentOutcome::Failed {
                reason: "declined".into(),
            },
        };
        settle(&orders, event, Instant::now());
        assert_eq!(orders.stats().placed, 0);
    }
}
