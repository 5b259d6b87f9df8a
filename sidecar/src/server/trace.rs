//! The sidecar's part of a trace: a span for each batch published through it, continuing the
//! trace of the service that published the batch's events (their `traceparent` headers),
//! when the sidecar exports spans (`sidestream::telemetry`).

use std::collections::HashSet;

use sidestream::TraceParent;
use sidestream::headers::TRACEPARENT;
use sidestream::telemetry;
use sidestream_log::batch::{HEADER_LEN, RecordIter, ValidBatch};

/// The most events of a batch whose publishing spans the append span is linked to (a batch
/// of a batching publisher holds events of many publish calls).
const MAX_LINKS: usize = 32;

/// The span of appending `batch` to partition `partition` of `topic`: `append <topic>`, the
/// child of the span that published the batch's first event, linked to the spans that
/// published the others. A disabled span unless this sidecar exports spans: the batch's
/// records are read only then.
pub(super) fn append_span(topic: &str, partition: u32, batch: &ValidBatch<'_>) -> tracing::Span {
    if !telemetry::exporting() {
        return tracing::Span::none();
    }
    let header = batch.header();
    let span = tracing::info_span!(
        "append",
        otel.name = %format_args!("append {topic}"),
        otel.kind = "server",
        messaging.destination.name = %topic,
        messaging.destination.partition.id = partition,
        messaging.batch.message_count = header.record_count,
    );
    let body = batch.bytes().get(HEADER_LEN..).unwrap_or_default();
    let mut parent = None;
    let mut linked = HashSet::new();
    for record in RecordIter::new(header, body).map_while(Result::ok) {
        let Some(trace) = record
            .headers()
            .find(|(name, _)| *name == TRACEPARENT)
            .and_then(|(_, value)| TraceParent::from_header(value))
        else {
            continue;
        };
        match parent {
            None => {
                telemetry::set_parent(&span, trace);
                parent = Some(trace);
            }
            Some(first) if first != trace && linked.len() < MAX_LINKS => {
                if linked.insert(trace) {
                    telemetry::add_link(&span, trace);
                }
            }
            Some(_) => {}
        }
        if linked.len() >= MAX_LINKS {
            break;
        }
    }
    span
}
