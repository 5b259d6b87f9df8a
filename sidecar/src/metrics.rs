//! The sidecar's Prometheus metrics: counters the request paths move as they go, and the
//! state of every partition, group and Raft replica read when `/metrics` is scraped.
//!
//! Counters and histograms live in a [`Metrics`] shared by the server; the partition state
//! is not copied anywhere: a [`Collector`] walks the topics and groups at each scrape. Names
//! and labels are listed in `docs/OPERATIONS.md` ("Metrics").

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use sidestream_log::{BatchHeader, SyncObserver};
use sidestream_proto::v1::ErrorCode;

use crate::groups::Groups;
use crate::topics::{Kind, Topics};

/// A partition of a topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PartitionLabels {
    topic: String,
    partition: u32,
}

/// A topic.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TopicLabels {
    topic: String,
}

/// A response code.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct CodeLabels {
    code: String,
}

/// The counters and histograms of one sidecar, and the registry that encodes them.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    /// What the partitions' state is read from, once the topics are open.
    sources: Arc<OnceLock<Sources>>,
    published_events: Family<PartitionLabels, Counter>,
    published_bytes: Family<PartitionLabels, Counter>,
    delivered_events: Family<PartitionLabels, Counter>,
    delivered_bytes: Family<PartitionLabels, Counter>,
    publish_latency: Family<TopicLabels, Histogram>,
    responses: Family<CodeLabels, Counter>,
    /// The counters of the codes this sidecar knows, by number: a response finds its own
    /// without building a label.
    known_responses: Vec<Option<Counter>>,
    connections: Gauge,
    streams: Gauge,
    /// The topics the per-partition counters have series for, each with one more than the
    /// highest partition counted: a scrape that no longer finds a topic removes its series.
    counted: RwLock<HashMap<String, u32>>,
}

/// The partition logs' group-commit syncs, as a histogram of their durations.
#[derive(Debug, Clone)]
pub(crate) struct FsyncLatency(Histogram);

impl FsyncLatency {
    pub(crate) fn new() -> Self {
        // 50 µs to about 26 s, doubling.
        Self(latency_histogram())
    }
}

impl SyncObserver for FsyncLatency {
    fn synced(&self, took: Duration, _appends: u64) {
        self.0.observe(took.as_secs_f64());
    }
}

/// Publish latency buckets: 50 µs to about 26 s, doubling.
fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(50e-6, 2.0, 20))
}

impl Metrics {
    /// Counters at zero, and `fsync` (which the partition logs report to) registered.
    ///
    /// The partitions' state is reported once [`attach`](Self::attach) gave it; before that
    /// (while the topics open) a scrape has the counters only.
    pub(crate) fn new(fsync: FsyncLatency) -> Self {
        let mut registry = Registry::with_prefix("sidestream");
        let published_events = Family::<PartitionLabels, Counter>::default();
        let published_bytes = Family::<PartitionLabels, Counter>::default();
        let delivered_events = Family::<PartitionLabels, Counter>::default();
        let delivered_bytes = Family::<PartitionLabels, Counter>::default();
        let publish_latency =
            Family::<TopicLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        let responses = Family::<CodeLabels, Counter>::default();
        let connections = Gauge::default();
        let streams = Gauge::default();
        registry.register(
            "published_events",
            "Events services published through this sidecar (acknowledged)",
            published_events.clone(),
        );
        registry.register_with_unit(
            "published",
            "Record batch bytes services published through this sidecar (acknowledged)",
            Unit::Bytes,
            published_bytes.clone(),
        );
        registry.register(
            "delivered_events",
            "Events this sidecar delivered to services (fetches and subscriptions)",
            delivered_events.clone(),
        );
        registry.register_with_unit(
            "delivered",
            "Record batch bytes this sidecar delivered to services",
            Unit::Bytes,
            delivered_bytes.clone(),
        );
        registry.register_with_unit(
            "publish_latency",
            "Time from a publish request's arrival to its acknowledgement",
            Unit::Seconds,
            publish_latency.clone(),
        );
        registry.register_with_unit(
            "fsync_latency",
            "Time a partition log's group-commit fdatasync took",
            Unit::Seconds,
            fsync.0,
        );
        registry.register(
            "responses",
            "Responses sent to services, by error code (OK included)",
            responses.clone(),
        );
        registry.register(
            "connections",
            "Open client connections",
            connections.clone(),
        );
        registry.register(
            "streams",
            "Open client request and subscription streams",
            streams.clone(),
        );
        let sources = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(StateCollector {
            sources: Arc::clone(&sources),
        }));
        let known_responses = (0..=MAX_KNOWN_CODE)
            .map(|code| {
                ErrorCode::try_from(code)
                    .ok()
                    .map(|_| responses.get_or_create(&code_labels(code)).clone())
            })
            .collect();
        Self {
            registry,
            sources,
            published_events,
            published_bytes,
            delivered_events,
            delivered_bytes,
            publish_latency,
            responses,
            known_responses,
            connections,
            streams,
            counted: RwLock::new(HashMap::new()),
        }
    }

    /// Reports the state of `topics` and `groups` at each scrape from now on, this sidecar
    /// being node `node_id`.
    pub(crate) fn attach(&self, topics: Arc<Topics>, groups: Arc<Groups>, node_id: u64) {
        let _ = self.sources.set(Sources {
            topics,
            groups,
            node_id,
        });
    }

    /// Counts an acknowledged publish of `batch` to a partition, `elapsed` after it arrived.
    pub(crate) fn published(&self, topic: &str, partition: u32, batch: &[u8], elapsed: Duration) {
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        self.published_events
            .get_or_create(&labels)
            .inc_by(u64::from(record_count(batch)));
        self.published_bytes
            .get_or_create(&labels)
            .inc_by(batch.len() as u64);
        self.publish_latency
            .get_or_create(&TopicLabels {
                topic: topic.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
        self.count_for(topic, partition);
    }

    /// Counts `batches` delivered to a service from a partition.
    pub(crate) fn delivered(&self, topic: &str, partition: u32, batches: &[bytes::Bytes]) {
        if batches.is_empty() {
            return;
        }
        let labels = PartitionLabels {
            topic: topic.to_owned(),
            partition,
        };
        let events: u64 = batches.iter().map(|b| u64::from(record_count(b))).sum();
        let bytes: u64 = batches.iter().map(|b| b.len() as u64).sum();
        self.delivered_events.get_or_create(&labels).inc_by(events);
        self.delivered_bytes.get_or_create(&labels).inc_by(bytes);
        self.count_for(topic, partition);
    }

    /// Counts a response with error code `code` (a number, named if this sidecar knows it).
    pub(crate) fn responded(&self, code: i32) {
        let known = usize::try_from(code)
            .ok()
            .and_then(|index| self.known_responses.get(index)?.as_ref());
        match known {
            Some(counter) => counter.inc(),
            None => self.responses.get_or_create(&code_labels(code)).inc(),
        };
    }

    /// A client connection, counted while the guard lives.
    pub(crate) fn connection(self: &Arc<Self>) -> OpenGuard {
        self.connections.inc();
        OpenGuard(self.connections.clone())
    }

    /// A client stream, counted while the guard lives.
    pub(crate) fn stream(self: &Arc<Self>) -> OpenGuard {
        self.streams.inc();
        OpenGuard(self.streams.clone())
    }

    /// Notes that partition `partition` of `topic` has series of its own: after they were
    /// moved, so that a scrape that removes them meanwhile leaves none untracked.
    fn count_for(&self, topic: &str, partition: u32) {
        let partitions = partition.saturating_add(1);
        let known = self
            .counted
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(topic)
            .is_some_and(|&known| known >= partitions);
        if known {
            return;
        }
        let mut counted = self.counted.write().unwrap_or_else(PoisonError::into_inner);
        let known = counted.entry(topic.to_owned()).or_insert(partitions);
        *known = (*known).max(partitions);
    }

    /// Removes the series of the topics that are gone (deleted here, or by the cluster) since
    /// they were counted. A topic deleted and created again under its name between two
    /// scrapes keeps its series; a publish that ends after the delete counts it again, until
    /// the next scrape.
    fn forget_deleted_topics(&self) {
        let Some(sources) = self.sources.get() else {
            return;
        };
        let mut counted = self.counted.write().unwrap_or_else(PoisonError::into_inner);
        counted.retain(|topic, &mut partitions| {
            if sources.topics.get(topic).is_some() {
                return true;
            }
            for partition in 0..partitions {
                let labels = PartitionLabels {
                    topic: topic.clone(),
                    partition,
                };
                for family in [
                    &self.published_events,
                    &self.published_bytes,
                    &self.delivered_events,
                    &self.delivered_bytes,
                ] {
                    family.remove(&labels);
                }
            }
            self.publish_latency.remove(&TopicLabels {
                topic: topic.clone(),
            });
            false
        });
    }

    /// Every metric in the `OpenMetrics` text format (which Prometheus reads).
    pub(crate) fn encode(&self) -> Result<String, std::fmt::Error> {
        self.forget_deleted_topics();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// The label of response code `code`: its name without the `ERROR_CODE_` prefix, or its
/// number if this sidecar does not know it.
fn code_labels(code: i32) -> CodeLabels {
    let name = ErrorCode::try_from(code).map_or_else(
        |_| code.to_string(),
        |code| {
            code.as_str_name()
                .trim_start_matches("ERROR_CODE_")
                .to_owned()
        },
    );
    CodeLabels { code: name }
}

/// The largest response code looked for when the known codes' counters are made.
const MAX_KNOWN_CODE: i32 = 63;

/// Keeps a gauge one higher while it lives.
#[derive(Debug)]
pub(crate) struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The records a batch holds, from its header (0 if it has none).
fn record_count(batch: &[u8]) -> u32 {
    BatchHeader::parse(batch).map_or(0, |header| header.record_count)
}

/// The partitions' logs, Raft replicas and groups, read at each scrape.
#[derive(Debug)]
struct StateCollector {
    sources: Arc<OnceLock<Sources>>,
}

/// The topics and groups of a sidecar that has opened them.
#[derive(Debug)]
struct Sources {
    topics: Arc<Topics>,
    groups: Arc<Groups>,
    node_id: u64,
}

/// One partition's numbers at a scrape.
struct PartitionState {
    labels: PartitionLabels,
    size_bytes: u64,
    start_offset: u64,
    end_offset: u64,
    high_watermark: u64,
    /// Leader (1 or 0) and term, for a replica of a Raft group.
    raft: Option<(u64, u64)>,
    /// Entries each follower lacks, when this replica leads.
    follower_lag: Vec<(u64, u64)>,
    /// Whether this sidecar reports the partition's groups: alone, or leading it.
    reports_groups: bool,
}

/// A group's lag in a partition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabels {
    group: String,
    topic: String,
    partition: u32,
}

/// A follower of a partition's Raft group.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    topic: String,
    partition: u32,
    follower: u64,
}

impl Sources {
    fn partitions(&self) -> Vec<PartitionState> {
        let mut states = Vec::new();
        for topic in self.topics.all() {
            let name = &topic.spec().name;
            for partition in topic.partitions() {
                let labels = PartitionLabels {
                    topic: name.clone(),
                    partition: partition.number(),
                };
                let high_watermark = partition.high_watermark();
                let (log, raft, follower_lag, reports_groups) = match partition.kind() {
                    Kind::Local(log) => (Arc::clone(log), None, Vec::new(), true),
                    Kind::Replicated(replicated) => {
                        let replica = replicated.replica();
                        let metrics = replica.raft.metrics().borrow().clone();
                        let leads = metrics.current_leader == Some(self.node_id);
                        let last = metrics.last_log_index.unwrap_or(0);
                        let lag = metrics
                            .replication
                            .iter()
                            .flatten()
                            .filter(|(id, _)| **id != self.node_id)
                            .map(|(id, matched)| {
                                let matched = matched.map_or(0, |m| m.index + 1);
                                (*id, (last + 1).saturating_sub(matched))
                            })
                            .collect();
                        (
                            Arc::clone(&replica.log),
                            Some((u64::from(leads), metrics.current_term)),
                            lag,
                            leads,
                        )
                    }
                    Kind::Remote(_) => continue,
                };
                let state = log.state();
                states.push(PartitionState {
                    labels,
                    size_bytes: state.size_bytes,
                    start_offset: state.start_offset,
                    end_offset: state.next_offset,
                    high_watermark,
                    raft,
                    follower_lag,
                    reports_groups,
                });
            }
        }
        states
    }

    /// Every group's committed offset and lag in the partitions this sidecar reports.
    fn group_lag(&self, partitions: &[PartitionState]) -> Vec<(GroupLabels, u64, u64)> {
        let mut lags = Vec::new();
        for state in partitions.iter().filter(|s| s.reports_groups) {
            let topic = &state.labels.topic;
            let number = state.labels.partition;
            let committed: Vec<(String, u64)> = match self
                .topics
                .get(topic)
                .and_then(|t| t.partition(number).cloned())
                .as_deref()
                .map(crate::topics::Partition::kind)
            {
                Some(Kind::Replicated(replicated)) => {
                    let groups = replicated
                        .replica()
                        .groups
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    groups
                        .iter()
                        .filter_map(|(group, position)| Some((group.clone(), position.offset?)))
                        .collect()
                }
                Some(Kind::Local(_)) => self.groups.committed_in(topic, number),
                _ => Vec::new(),
            };
            for (group, offset) in committed {
                let labels = GroupLabels {
                    group,
                    topic: topic.clone(),
                    partition: number,
                };
                lags.push((labels, offset, state.high_watermark.saturating_sub(offset)));
            }
        }
        lags
    }
}

/// A gauge's name, help and unit.
type Descriptor = (&'static str, &'static str, Option<Unit>);

/// Writes gauge `descriptor` with one sample per labels and value.
fn gauges<'a, L: EncodeLabelSet + 'a>(
    encoder: &mut DescriptorEncoder<'_>,
    (name, help, unit): Descriptor,
    samples: impl IntoIterator<Item = (&'a L, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
            .encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

/// A per-partition gauge: its descriptor, and its value in a partition's state.
type PartitionGauge = (Descriptor, fn(&PartitionState) -> u64);

/// The gauges every partition has.
const PER_PARTITION: [PartitionGauge; 4] = [
    (
        (
            "log_size",
            "Bytes of a partition's log on this sidecar (every segment).",
            Some(Unit::Bytes),
        ),
        |s| s.size_bytes,
    ),
    (
        (
            "log_start_offset",
            "The first offset a partition's log here can serve.",
            None,
        ),
        |s| s.start_offset,
    ),
    (
        (
            "log_end_offset",
            "The offset the next batch appended to a partition's log here takes.",
            None,
        ),
        |s| s.end_offset,
    ),
    (
        (
            "high_watermark",
            "The offset after a partition's last committed event, as this sidecar knows it.",
            None,
        ),
        |s| s.high_watermark,
    ),
];

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(sources) = self.sources.get() else {
            return Ok(());
        };
        let partitions = sources.partitions();
        for (descriptor, value) in PER_PARTITION {
            let samples = partitions.iter().map(|s| (&s.labels, value(s)));
            gauges(&mut encoder, descriptor, samples)?;
        }
        let raft = || {
            partitions
                .iter()
                .filter_map(|s| s.raft.map(|raft| (&s.labels, raft)))
        };
        gauges(
            &mut encoder,
            (
                "raft_leader",
                "1 if this sidecar's replica leads the partition's Raft group, else 0.",
                None,
            ),
            raft().map(|(labels, (leads, _))| (labels, leads)),
        )?;
        gauges(
            &mut encoder,
            (
                "raft_term",
                "The Raft term this sidecar's replica of the partition is in.",
                None,
            ),
            raft().map(|(labels, (_, term))| (labels, term)),
        )?;
        let followers: Vec<(FollowerLabels, u64)> = partitions
            .iter()
            .flat_map(|state| {
                state.follower_lag.iter().map(|&(follower, entries)| {
                    let labels = FollowerLabels {
                        topic: state.labels.topic.clone(),
                        partition: state.labels.partition,
                        follower,
                    };
                    (labels, entries)
                })
            })
            .collect();
        gauges(
            &mut encoder,
            (
                "raft_follower_lag",
                "Raft entries a follower lacks, as the partition's leader (this sidecar) sees it.",
                None,
            ),
            followers.iter().map(|(labels, entries)| (labels, *entries)),
        )?;
        let groups = sources.group_lag(&partitions);
        gauges(
            &mut encoder,
            (
                "group_committed_offset",
                "A consumer group's committed offset in a partition (reported by the partition's leader, or the sidecar alone).",
                None,
            ),
            groups.iter().map(|(labels, offset, _)| (labels, *offset)),
        )?;
        gauges(
            &mut encoder,
            (
                "group_lag",
                "Events of a partition a consumer group has not committed yet: the high watermark less its committed offset.",
                None,
            ),
            groups.iter().map(|(labels, _, lag)| (labels, *lag)),
        )
    }
}
