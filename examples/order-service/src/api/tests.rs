//! The HTTP API through `Router::oneshot`: no socket, no sidecar; the publisher records the
//! events it is given, or refuses them.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::*;
use crate::order::PaymentOutcome;

/// Records what it publishes; with `refuse`, fails every publish as a closed client would.
#[derive(Debug, Clone, Default)]
struct Recorder {
    published: Arc<Mutex<Vec<OrderPlaced>>>,
    refuse: bool,
}

impl PublishOrder for Recorder {
    async fn publish_order(&self, event: &OrderPlaced) -> Result<(), sidestream::Error> {
        if self.refuse {
            return Err(sidestream::Error::Closed);
        }
        self.published.lock().unwrap().push(event.clone());
        Ok(())
    }
}

async fn send(router: &Router, request: Request<Body>) -> (StatusCode, Option<String>, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let location = response
        .headers()
        .get(header::LOCATION)
        .map(|value| value.to_str().unwrap().to_owned());
    let bytes = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, location, body)
}

fn post(body: &str) -> Request<Body> {
    Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

const TEA: &str =
    r#"{"customer": "ada", "items": [{"sku": "tea", "quantity": 2, "unit_price_cents": 450}]}"#;

#[tokio::test]
async fn placing_an_order_publishes_it_and_answers_pending() {
    let recorder = Recorder::default();
    let orders = OrderBook::new();
    let router = router(recorder.clone(), orders.clone());

    let (status, location, body) = send(&router, post(TEA)).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["status"], "pending");
    let order_id = body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(location, Some(format!("/orders/{order_id}")));

    let published = recorder.published.lock().unwrap().clone();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].order_id, order_id);
    assert_eq!(published[0].customer, "ada");
    assert_eq!(published[0].amount_cents, 900);

    let (status, _, body) = send(&router, get(&format!("/orders/{order_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "pending");
    assert_eq!(body["amount_cents"], 900);
    assert_eq!(
        body["items"],
        json!([{"sku": "tea", "quantity": 2, "unit_price_cents": 450}])
    );
    assert!(body.get("settled_after_ms").is_none());
}

#[tokio::test]
async fn the_order_shows_its_payment_outcome() {
    let orders = OrderBook::new();
    let router = router(Recorder::default(), orders.clone());
    let (_, _, body) = send(&router, post(TEA)).await;
    let order_id = body["order_id"].as_str().unwrap().to_owned();

    let outcome = PaymentOutcome::Completed {
        payment_id: format!("pay-{order_id}"),
        amount_cents: 900,
    };
    orders.apply(&order_id, outcome, Instant::now()).unwrap();
    let (status, _, body) = send(&router, get(&format!("/orders/{order_id}"))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "paid");
    assert_eq!(body["payment_id"], format!("pay-{order_id}"));
    assert!(body["settled_after_ms"].is_f64());
}

#[tokio::test]
async fn a_bad_body_is_a_400_naming_the_field_and_publishes_nothing() {
    let recorder = Recorder::default();
    let orders = OrderBook::new();
    let router = router(recorder.clone(), orders.clone());
    let cases = [
        (r#"{"customer": "", "items": []}"#, json!("customer")),
        (
            r#"{"customer": "ada", "items": [{"sku": "tea", "quantity": "2", "unit_price_cents": 1}]}"#,
            json!("items[0].quantity"),
        ),
        ("not json", Value::Null),
    ];
    for (body, field) in cases {
        let (status, _, answer) = send(&router, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer["field"], field, "{body}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    assert!(recorder.published.lock().unwrap().is_empty());
    assert_eq!(orders.stats().placed, 0);
}

#[tokio::test]
async fn a_body_that_is_not_json_by_content_type_is_a_415() {
    let router = router(Recorder::default(), OrderBook::new());
    let request = Request::post("/orders")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(TEA))
        .unwrap();
    let (status, _, body) = send(&router, request).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(body["error"].as_str().unwrap().contains("application/json"));

    let with_charset = Request::post("/orders")
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(TEA))
        .unwrap();
    assert_eq!(send(&router, with_charset).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_failed_publish_is_a_503_and_forgets_the_order() {
    let orders = OrderBook::new();
    let refusing = Recorder {
        refuse: true,
        ..Recorder::default()
    };
    let router = router(refusing, orders.clone());
    let (status, _, body) = send(&router, post(TEA)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("the order could not be placed")
    );
    assert_eq!(orders.stats().placed, 0);
}

#[tokio::test]
async fn unknown_orders_and_routes_are_404s_in_json() {
    let router = router(Recorder::default(), OrderBook::new());
    let (status, _, body) = send(&router, get("/orders/nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no order \"nope\"");

    let (status, _, body) = send(&router, get("/customers")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], "no route GET /customers");

    let health = send(&router, get("/healthz")).await;
    assert_eq!(health.0, StatusCode::OK);
}
