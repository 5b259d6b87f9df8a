//! The HTTP API (axum):
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /orders` with a JSON [`NewOrder`] | `201` `{"order_id", "status": "pending"}` and a `Location`; `400` naming the bad field; `415` without a JSON content type; `503` if the event could not be published |
//! | `GET /orders/{id}` | `200` with the order and its status (`pending`, `paid` or `failed`); `404` if unknown |
//! | `GET /healthz` | `200` `ok` |
//!
//! Every error answer is a JSON object `{"error": "…"}`, with `"field"` when one field of the
//! request is wrong.
//!
//! Placing an order puts it in the book as `pending` *before* publishing `OrderPlaced`, so a
//! payment outcome that arrives very fast always finds it; if publishing fails the order is
//! taken out again and the client gets `503`. (If the publish timed out after the sidecar
//! stored the event, a payment outcome may later arrive for an order this instance no longer
//! knows; the follower logs and skips it.)

use std::future::Future;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use sidestream_example_events::OrderPlaced;

use crate::new_order::NewOrder;
use crate::order::{Order, OrderStatus};
use crate::order_book::OrderBook;

/// Publishes an order's event: [`sidestream::Client`] in a service, a recorder in tests.
pub trait PublishOrder: Clone + Send + Sync + 'static {
    /// Publishes `event` and resolves once the sidecar acknowledged it.
    fn publish_order(
        &self,
        event: &OrderPlaced,
    ) -> impl Future<Output = Result<(), sidestream::Error>> + Send;
}

/// The API's routes over `orders`, publishing with `publisher`.
pub fn router<P: PublishOrder>(publisher: P, orders: OrderBook) -> Router {
    Router::new()
        .route("/orders", post(place_order::<P>))
        .route("/orders/{order_id}", get(order::<P>))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(no_route)
        .with_state(Api { publisher, orders })
}

#[derive(Debug, Clone)]
struct Api<P> {
    publisher: P,
    orders: OrderBook,
}

/// `GET /orders/{id}`'s body.
#[derive(Debug, Serialize)]
struct OrderView<'a> {
    order_id: &'a str,
    customer: &'a str,
    amount_cents: u64,
    items: Vec<ItemView<'a>>,
    status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    payment_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<&'a str>,
    /// Milliseconds since the Unix epoch.
    placed_at_ms: u64,
    /// Milliseconds from placing to settlement, once settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    settled_after_ms: Option<f64>,
}

#[derive(Debug, Serialize)]
struct ItemView<'a> {
    sku: &'a str,
    quantity: u32,
    unit_price_cents: u64,
}

async fn place_order<P: PublishOrder>(
    State(api): State<Api<P>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !is_json(&headers) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON (content-type: application/json)",
        );
    }
    let new_order = match NewOrder::from_json(&body) {
        Ok(order) => order,
        Err(invalid) => {
            tracing::debug!(%invalid, "order refused");
            let mut body = json!({ "error": invalid.to_string() });
            if let Some(field) = invalid.field {
                body["field"] = field.into();
            }
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    let event = new_order.into_event(uuid::Uuid::now_v7().to_string());
    let order_id = event.order_id.clone();
    api.orders
        .insert(Order::new(event.clone(), Instant::now(), SystemTime::now()));
    if let Err(publish_error) = api.publisher.publish_order(&event).await {
        api.orders.remove(&order_id);
        tracing::error!(%order_id, error = %publish_error, "cannot publish OrderPlaced");
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the order could not be placed: {publish_error}"),
        );
    }
    tracing::info!(
        %order_id,
        customer = %event.customer,
        amount_cents = event.amount_cents,
        items = event.items.len(),
        "order placed"
    );
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{order_id}"))],
        axum::Json(json!({ "order_id": order_id, "status": OrderStatus::Pending })),
    )
        .into_response()
}

async fn order<P: PublishOrder>(
    State(api): State<Api<P>>,
    Path(order_id): Path<String>,
) -> Response {
    let Some(order) = api.orders.order(&order_id) else {
        return error(StatusCode::NOT_FOUND, &format!("no order {order_id:?}"));
    };
    let view = OrderView {
        order_id: order.id(),
        customer: order.customer(),
        amount_cents: order.amount_cents(),
        items: order
            .items()
            .iter()
            .map(|item| ItemView {
                sku: &item.sku,
                quantity: item.quantity,
                unit_price_cents: item.unit_price_cents,
            })
            .collect(),
        status: order.status(),
        payment_id: order.payment_id(),
        failure_reason: order.failure_reason(),
        placed_at_ms: order
            .placed_at()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            }),
        settled_after_ms: order.settled_after().map(|after| after.as_secs_f64() * 1e3),
    };
    axum::Json(view).into_response()
}

async fn no_route(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!("no route {method} {}", uri.path()),
    )
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

#[cfg(test)]
mod tests;
