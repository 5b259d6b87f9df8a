//! Tracing for services and the sidecar: logs on stderr, and spans exported over OTLP when the
//! standard OpenTelemetry variables say where.
//!
//! ```text
//!   order-service                    sidecar                     payment-service
//!   span "publish orders" ──event──▶ span "append orders"        span "handle orders"
//!     writes its context into          child of the event's        child of the event's
//!     the event's `traceparent`        traceparent (links to the   traceparent
//!                                      batch's other events)       └─ "publish payments" ─▶ …
//! ```
//!
//! [`Telemetry::init`] installs the process's `tracing` subscriber. With
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, an
//! `http://host:port` address of an OTLP gRPC receiver, spans at `info` and above of the
//! service's own code and of Sidestream are exported there in batches, the resource named by
//! `OTEL_SERVICE_NAME` (else the name `init` is given). Without it nothing is exported and the
//! SDK makes no spans of its own: an event's `traceparent` is then a fresh random trace, one
//! per publish call (a batch call's events share it).
//!
//! Export happens on a thread of its own: a receiver that is down costs the service nothing but
//! the spans, and is reported once on stderr (and once more when it is back).
//!
//! Export and the spans' contexts in `traceparent` need the crate's `otel` feature, on by
//! default. A service that does without them turns default features off: its build then has
//! none of the OpenTelemetry and gRPC crates, [`Telemetry::init`] installs the stderr logs
//! alone (and says so if an OTLP endpoint is set), and every publish call's events carry a
//! fresh random trace.

use std::sync::atomic::{AtomicBool, Ordering};
#[cfg(feature = "otel")]
use std::time::Duration;

#[cfg(feature = "otel")]
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
#[cfg(feature = "otel")]
use opentelemetry_sdk::Resource;
#[cfg(feature = "otel")]
use opentelemetry_sdk::error::OTelSdkResult;
#[cfg(feature = "otel")]
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracerProvider, SpanData, SpanExporter,
};
#[cfg(feature = "otel")]
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::EnvFilter;
#[cfg(feature = "otel")]
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::prelude::*;

use crate::TraceParent;

/// Whether this process exports spans (a [`Telemetry`] with an exporter was installed).
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// The variables that name the OTLP receiver; export is on when one is set and not empty.
const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// How often the batch of finished spans is sent.
#[cfg(feature = "otel")]
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// The process's tracing: keep it until the end, then [`shutdown`](Self::shutdown) it so that
/// the last spans are sent.
#[derive(Debug)]
#[must_use = "dropping it loses the spans not sent yet; call shutdown() at the end"]
pub struct Telemetry {
    provider: Option<Provider>,
}

/// What exports the spans.
#[cfg(feature = "otel")]
type Provider = SdkTracerProvider;

/// Without the `otel` feature nothing exports: a [`Telemetry`] never holds a provider.
#[cfg(not(feature = "otel"))]
type Provider = std::convert::Infallible;

impl Telemetry {
    /// Installs the process's `tracing` subscriber: logs on stderr at `default_level` (or what
    /// `RUST_LOG` says), and, when the OpenTelemetry variables name a receiver, spans exported
    /// over OTLP gRPC for service `service` (unless `OTEL_SERVICE_NAME` names another).
    ///
    /// Call it inside a Tokio runtime (outside one, nothing is exported, as stderr says). If a
    /// subscriber was installed already, it is left as it is and nothing is exported: an
    /// application with its own OpenTelemetry subscriber gets no SDK spans, and random trace
    /// ids in its events. A receiver address that cannot be used is reported on stderr, and
    /// the process runs on without export.
    pub fn init(service: &str, default_level: &str) -> Self {
        let logs =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
        let fmt = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(logs);
        let wanted = ENDPOINT_VARIABLES
            .iter()
            .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()));
        let provider = wanted.then(|| start_export(service)).flatten();
        let installed = tracing_subscriber::registry()
            .with(export_layer(provider.as_ref()))
            .with(fmt)
            .try_init()
            .is_ok();
        let provider = provider.filter(|_| installed);
        if provider.is_some() {
            EXPORTING.store(true, Ordering::Relaxed);
        }
        Self { provider }
    }

    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans not sent yet (waiting at most 5 s for the receiver) and stops exporting.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        EXPORTING.store(false, Ordering::Relaxed);
        stop_export(provider).await;
    }
}

/// The exporting tracer provider, or `None` (said on stderr) when it cannot be made.
#[cfg(feature = "otel")]
fn start_export(service: &str) -> Option<Provider> {
    // The exporter's connection runs on the runtime it is made in.
    let made = tokio::runtime::Handle::try_current()
        .map_err(|_| "Telemetry::init was called outside a Tokio runtime".to_owned())
        .and_then(|_| provider(service));
    made.map_err(|error| export_off(&error)).ok()
}

/// Without the `otel` feature nothing can be exported, as stderr says.
#[cfg(not(feature = "otel"))]
fn start_export(_service: &str) -> Option<Provider> {
    export_off("this build of the sidestream crate lacks its `otel` feature");
    None
}

/// The layer that hands spans to `provider`'s exporter.
#[cfg(feature = "otel")]
fn export_layer(
    provider: Option<&Provider>,
) -> Option<impl tracing_subscriber::Layer<tracing_subscriber::Registry>> {
    provider.map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("sidestream"))
            .with_filter(export_filter())
    })
}

#[cfg(not(feature = "otel"))]
fn export_layer(_: Option<&Provider>) -> Option<tracing_subscriber::layer::Identity> {
    None
}

/// Sends the spans not sent yet, then stops `provider`.
#[cfg(feature = "otel")]
async fn stop_export(provider: Provider) {
    // Blocking, and the exporter's connection runs on this runtime: not on its threads.
    let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
}

#[cfg(not(feature = "otel"))]
fn stop_export(provider: Provider) -> std::future::Ready<()> {
    match provider {}
}

/// Says on stderr why spans are not exported (no subscriber is installed yet).
fn export_off(why: &str) {
    #[expect(clippy::print_stderr, reason = "no subscriber is installed yet")]
    {
        eprintln!("warning: OpenTelemetry export is off: {why}");
    }
}

/// Whether this process exports spans: the SDK and the sidecar make their spans only then.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The tracer provider: an OTLP gRPC exporter (the endpoint from the environment) in batches.
#[cfg(feature = "otel")]
fn provider(service: &str) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let exporter = ReportOnce {
        inner: exporter,
        failing: AtomicBool::new(false),
        reported: AtomicBool::new(false),
    };
    // OTEL_BSP_* are read by the builder; the delay is shorter than its 5 s unless set.
    let mut config = BatchConfigBuilder::default();
    if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
        config = config.with_scheduled_delay(EXPORT_EVERY);
    }
    let batches = BatchSpanProcessor::builder(exporter)
        .with_batch_config(config.build())
        .build();
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|name| name.is_empty()) {
        resource = resource.with_service_name(service.to_owned());
    }
    Ok(SdkTracerProvider::builder()
        .with_span_processor(batches)
        .with_resource(resource.build())
        .build())
}

/// What the export layer takes: `info` and above, but nothing of the exporter itself or of the
/// transport crates below it (each export would make spans to export) or of the crates whose
/// spans are internal detail.
#[cfg(feature = "otel")]
fn export_filter() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target(REPORT_TARGET, LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("quinn", LevelFilter::OFF)
        .with_target("rustls", LevelFilter::OFF)
        .with_target("openraft", LevelFilter::OFF)
}

/// The target of the SDK's spans (not this module's: its reports are not exported).
const SPAN_TARGET: &str = "sidestream";

/// The target of this module's own reports about the export.
#[cfg(feature = "otel")]
const REPORT_TARGET: &str = "sidestream::telemetry";

/// The OTLP exporter, reporting its first failure (and its recovery) once on the log rather
/// than at every batch.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct ReportOnce<E> {
    inner: E,
    failing: AtomicBool,
    reported: AtomicBool,
}

#[cfg(feature = "otel")]
impl<E: SpanExporter> SpanExporter for ReportOnce<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        match &result {
            Err(error) => {
                self.failing.store(true, Ordering::Relaxed);
                if !self.reported.swap(true, Ordering::Relaxed) {
                    tracing::warn!(target: REPORT_TARGET, %error, "OpenTelemetry export failed: spans are dropped until the receiver answers (said once)");
                }
            }
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(target: REPORT_TARGET, "OpenTelemetry export works again");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The trace context of `span` as an event's `traceparent`, if the span is exported.
pub fn trace_parent(span: &tracing::Span) -> Option<TraceParent> {
    if !exporting() || span.is_disabled() {
        return None;
    }
    span_trace_parent(span)
}

#[cfg(feature = "otel")]
fn span_trace_parent(span: &tracing::Span) -> Option<TraceParent> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| TraceParent {
        trace_id: span_context.trace_id().to_bytes(),
        span_id: span_context.span_id().to_bytes(),
        flags: span_context.trace_flags().to_u8(),
    })
}

/// Without the `otel` feature no span is exported (and `trace_parent` never gets here).
#[cfg(not(feature = "otel"))]
fn span_trace_parent(_: &tracing::Span) -> Option<TraceParent> {
    None
}

/// Makes `span` a child of the span that published an event with `parent` as its
/// `traceparent` (before the span is first entered).
pub fn set_parent(span: &tracing::Span, parent: TraceParent) {
    if span.is_disabled() {
        return;
    }
    #[cfg(feature = "otel")]
    {
        let remote = opentelemetry::Context::new().with_remote_span_context(remote(parent));
        let _ = span.set_parent(remote);
    }
    #[cfg(not(feature = "otel"))]
    let _ = parent;
}

/// Links `span` to the span that published an event with `traceparent` `linked`.
pub fn add_link(span: &tracing::Span, linked: TraceParent) {
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        span.add_link(remote(linked));
    }
    #[cfg(not(feature = "otel"))]
    let _ = (span, linked);
}

#[cfg(feature = "otel")]
fn remote(parent: TraceParent) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        TraceState::default(),
    )
}

/// The span of one publish through the SDK: `publish <topic>`, a child of the current span.
pub(crate) fn publish_span(topic: &str, type_name: &str, service: &str) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: SPAN_TARGET,
        "publish",
        otel.name = %format_args!("publish {topic}"),
        otel.kind = "producer",
        messaging.destination.name = %topic,
        messaging.batch.message_count = tracing::field::Empty,
        sidestream.type = %type_name,
        sidestream.service = %service,
    )
}

/// The span of one batch publish of `events` events: [`publish_span`]'s, with the
/// `messaging.batch.message_count` the OpenTelemetry messaging conventions give a batch.
pub(crate) fn publish_batch_span(
    topic: &str,
    type_name: &str,
    service: &str,
    events: usize,
) -> tracing::Span {
    let span = publish_span(topic, type_name, service);
    // As an i64: the OpenTelemetry layer exports a u64 as its text.
    span.record(
        "messaging.batch.message_count",
        i64::try_from(events).unwrap_or(i64::MAX),
    );
    span
}

/// The span of handling one delivered event: `handle <topic>`, a child of the span that
/// published it.
pub(crate) fn handle_span(
    topic: &str,
    partition: u32,
    offset: u64,
    parent: Option<TraceParent>,
) -> tracing::Span {
    if !exporting() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "handle",
        otel.name = %format_args!("handle {topic}"),
        otel.kind = "consumer",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = partition,
        messaging.kafka.offset = offset,
    );
    if let Some(parent) = parent {
        set_parent(&span, parent);
    }
    span
}
