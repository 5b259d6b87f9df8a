//! OpenTelemetry across services: the demo (a sidecar, the order and payment services) run
//! with `OTEL_EXPORTER_OTLP_ENDPOINT` naming a real OTLP gRPC receiver that this test serves,
//! and what arrives there checked span by span; and a batch publish's span, from
//! `sidestream bench`.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// One span as the receiver got it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    links: Vec<(Vec<u8>, Vec<u8>)>,
    /// The span's integer attributes.
    numbers: HashMap<String, i64>,
}

/// An OTLP trace receiver that keeps every span it is sent.
#[derive(Debug, Default, Clone)]
struct Receiver(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(
                    |attribute| match attribute.value.as_ref()?.value.as_ref()? {
                        Value::StringValue(name) => Some(name.clone()),
                        _ => None,
                    },
                )
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                for span in scope_spans.spans {
                    kept.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent: span.parent_span_id,
                        links: span
                            .links
                            .into_iter()
                            .map(|link| (link.trace_id, link.span_id))
                            .collect(),
                        numbers: span
                            .attributes
                            .into_iter()
                            .filter_map(|attribute| match attribute.value?.value? {
                                Value::IntValue(number) => Some((attribute.key, number)),
                                _ => None,
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Runs the demo with `orders` orders and the OpenTelemetry variables `env`, to its end; its
/// exit status and stderr.
fn run_demo(orders: u32, env: &[(&str, &str)]) -> (bool, String) {
    run_cli(&["demo", "--orders", &orders.to_string()], env)
}

/// Runs `sidestream <args>` with the OpenTelemetry variables `env`, to its end; its exit
/// status and stderr.
fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(sidestream_tests::cli_path());
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let child = command.spawn().expect("the command starts");
    let pid = child.id();
    // Bounded: each command here ends by itself within seconds; past two minutes it is stuck.
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(child.wait_with_output());
    });
    let Ok(output) = done.recv_timeout(Duration::from_secs(120)) else {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("sidestream {args:?} did not end within 120 s");
    };
    let output = output.expect("the command's output is read");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A receiver served on a free loopback port; its endpoint, and the task serving it.
async fn serve_receiver() -> (Receiver, String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let endpoint = format!("http://{}", listener.local_addr().expect("bound"));
    let receiver = Receiver::default();
    let serving = tonic::transport::Server::builder().serve_with_incoming(
        TraceServiceServer::new(receiver.clone()),
        tonic::transport::server::TcpIncoming::from(listener),
    );
    let server = tokio::spawn(async move {
        let _ = serving.await;
    });
    (receiver, endpoint, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_the_order_service_through_the_sidecar_into_the_payment_service_and_back()
 {
    let (receiver, endpoint, server) = serve_receiver().await;

    let (ok, stderr) = tokio::task::spawn_blocking(move || {
        run_demo(
            6,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
                ("OTEL_SERVICE_NAME", "shop-demo"),
            ],
        )
    })
    .await
    .expect("the demo runs");
    assert!(ok, "the demo fails; its stderr:\n{stderr}");
    assert!(
        !stderr.contains("OpenTelemetry export failed"),
        "the receiver was up: {stderr}"
    );
    server.abort();

    // The demo flushed its spans before it exited.
    let spans = receiver
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    assert!(
        spans.iter().all(|s| s.service == "shop-demo"),
        "OTEL_SERVICE_NAME names the resource: {spans:?}"
    );
    let by_id: HashMap<&[u8], &Received> =
        spans.iter().map(|s| (s.span_id.as_slice(), s)).collect();
    let parent_of = |span: &Received| by_id.get(span.parent.as_slice()).copied();
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);

    // Every order handled by the payment service is handled in the trace of its publish by
    // the order service, and every payment outcome published there is that handling's child.
    let handled: Vec<&Received> = named("handle orders").collect();
    assert_eq!(handled.len(), 6, "one handling span per order: {spans:#?}");
    for handle in &handled {
        let publish = parent_of(handle).unwrap_or_else(|| panic!("no parent for {handle:?}"));
        assert_eq!(publish.name, "publish orders", "{handle:?}");
        assert_eq!(publish.trace_id, handle.trace_id);
        assert!(
            !publish
                .numbers
                .contains_key("messaging.batch.message_count"),
            "a single publish is no batch: {publish:?}"
        );
        let outcome = named("publish payments")
            .find(|p| p.parent == handle.span_id)
            .unwrap_or_else(|| panic!("no payment published under {handle:?}: {spans:#?}"));
        assert_eq!(outcome.trace_id, handle.trace_id);
        // The order service applies the outcome in the same trace.
        let applied = named("handle payments")
            .find(|h| h.parent == outcome.span_id)
            .unwrap_or_else(|| panic!("the outcome {outcome:?} was not handled: {spans:#?}"));
        assert_eq!(applied.trace_id, handle.trace_id);
        // The sidecar appended the order's batch in the trace: as the publish's child, or
        // linked to it from a batch that another order's publish leads.
        let appended = named("append orders").any(|append| {
            append.parent == publish.span_id
                || append
                    .links
                    .iter()
                    .any(|(trace, span)| *trace == publish.trace_id && *span == publish.span_id)
        });
        assert!(appended, "no append span for {publish:?}: {spans:#?}");
    }
    assert!(
        named("append payments").count() >= 1,
        "the payments were appended in a trace: {spans:#?}"
    );
}

#[test]
fn a_receiver_that_is_down_is_reported_once_and_costs_nothing_else() {
    // A port nothing listens on: bound, then closed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("bound");
    let endpoint = format!("http://{closed}");
    let (ok, stderr) = run_demo(4, &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())]);
    assert!(
        ok,
        "the demo runs to its end without the receiver:\n{stderr}"
    );
    assert_eq!(
        stderr.matches("OpenTelemetry export failed").count(),
        1,
        "said once:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_publish_span_says_how_many_events_it_carries() {
    let (receiver, endpoint, server) = serve_receiver().await;
    // 10 events, 4 to a call: calls of 4, 4 and 2 events.
    let (ok, stderr) = tokio::task::spawn_blocking(move || {
        run_cli(
            &[
                "bench",
                "produce",
                "--embedded",
                "--events",
                "10",
                "--publish-batch",
                "4",
            ],
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
        )
    })
    .await
    .expect("the bench runs");
    assert!(ok, "the bench fails; its stderr:\n{stderr}");
    server.abort();

    let spans = receiver
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let publishes: Vec<&Received> = spans
        .iter()
        .filter(|span| span.name.starts_with("publish bench-"))
        .collect();
    let mut counts: Vec<i64> = publishes
        .iter()
        .map(|span| {
            *span
                .numbers
                .get("messaging.batch.message_count")
                .unwrap_or_else(|| panic!("a batch publish without its count: {span:?}"))
        })
        .collect();
    counts.sort_unstable();
    assert_eq!(counts, [2, 4, 4], "one span per call: {spans:#?}");
}
