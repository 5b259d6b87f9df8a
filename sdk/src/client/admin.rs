//! Topic and cluster administration: create, delete, list and describe topics, read a
//! group's committed offsets, describe the cluster.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use sidestream_proto::TopicName;
use sidestream_proto::v1::{
    self, CommittedOffset, CreateTopic, DeleteTopic, DescribeTopic, FetchCommittedOffsets,
    ListTopics, Metadata, MetadataResult, TopicConfig, TopicDescription, TopicSummary, request,
    response,
};

use super::Client;
use super::link::{Link, RetryPolicy};
use crate::Error;
use crate::publish::sender_body_name;

/// Settings of a new topic; `None` (the default) takes the sidecar's default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TopicSettings {
    /// Number of partitions.
    pub partitions: Option<u32>,
    /// Replicas of each partition, at most the number of nodes.
    pub replication_factor: Option<u32>,
    /// Delete sealed segments whose newest record is older than this many milliseconds; -1
    /// keeps them forever.
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while the partition stays at least this many bytes;
    /// -1 keeps them forever.
    pub retention_bytes: Option<i64>,
    /// What retention does with old records.
    pub cleanup: Option<Cleanup>,
    /// When appended batches are synced to disk.
    pub fsync: Option<Fsync>,
}

impl TopicSettings {
    /// The sidecar's defaults for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same settings with `partitions` partitions.
    #[must_use]
    pub fn partitions(mut self, partitions: u32) -> Self {
        self.partitions = Some(partitions);
        self
    }

    /// The same settings with `replication_factor` replicas per partition.
    #[must_use]
    pub fn replication_factor(mut self, replication_factor: u32) -> Self {
        self.replication_factor = Some(replication_factor);
        self
    }

    /// The same settings with time retention (`-1`: forever).
    #[must_use]
    pub fn retention_ms(mut self, retention_ms: i64) -> Self {
        self.retention_ms = Some(retention_ms);
        self
    }

    /// The same settings with size retention (`-1`: unbounded).
    #[must_use]
    pub fn retention_bytes(mut self, retention_bytes: i64) -> Self {
        self.retention_bytes = Some(retention_bytes);
        self
    }

    /// The same settings with this cleanup policy.
    #[must_use]
    pub fn cleanup(mut self, cleanup: Cleanup) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// The same settings with this fsync policy.
    #[must_use]
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = Some(fsync);
        self
    }

    fn request(&self, name: String) -> CreateTopic {
        let (fsync_mode, interval_ms) = match self.fsync {
            None => (v1::FsyncMode::Unspecified, 0),
            Some(Fsync::Always) => (v1::FsyncMode::Always, 0),
            Some(Fsync::Never) => (v1::FsyncMode::Never, 0),
            Some(Fsync::Interval(every)) => (
                v1::FsyncMode::Interval,
                u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            ),
        };
        CreateTopic {
            name,
            partitions: self.partitions.unwrap_or(0),
            replication_factor: self.replication_factor.unwrap_or(0),
            config: Some(TopicConfig {
                retention_ms: self.retention_ms,
                retention_bytes: self.retention_bytes,
                cleanup_policy: match self.cleanup {
                    None => v1::CleanupPolicy::Unspecified,
                    Some(Cleanup::Delete) => v1::CleanupPolicy::Delete,
                    Some(Cleanup::Compact) => v1::CleanupPolicy::Compact,
                }
                .into(),
                fsync: self.fsync.map(|_| v1::FsyncPolicy {
                    mode: fsync_mode.into(),
                    interval_ms,
                }),
            }),
        }
    }
}

/// What retention does with old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cleanup {
    /// Keep the latest record of each key.
    Compact,
    /// Delete whole segments by age and size.
    Delete,
}

impl FromStr for Cleanup {
    type Err = ParseSettingError;

    /// `delete` or `compact`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "delete" => Ok(Self::Delete),
            "compact" => Ok(Self::Compact),
            _ => Err(ParseSettingError::new("cleanup", text, "delete, compact")),
        }
    }
}

impl fmt::Display for Cleanup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Compact => "compact",
            Self::Delete => "delete",
        })
    }
}

/// When a partition's appended batches are synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fsync {
    /// An append is acknowledged only after a sync covers it.
    Always,
    /// A background sync at this interval (more than 0).
    Interval(Duration),
    /// Never: replication is the durability.
    Never,
}

impl FromStr for Fsync {
    type Err = ParseSettingError;

    /// `always`, `never`, `interval` (every second) or `interval:<milliseconds>`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid =
            || ParseSettingError::new("fsync", text, "always, interval, interval:<ms>, never");
        match text {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            "interval" => Ok(Self::Interval(Duration::from_secs(1))),
            _ => {
                let ms = text.strip_prefix("interval:").ok_or_else(invalid)?;
                let ms: u64 = ms.parse().map_err(|_| invalid())?;
                if ms == 0 {
                    return Err(invalid());
                }
                Ok(Self::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl fmt::Display for Fsync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Never => f.write_str("never"),
            Self::Interval(every) => write!(f, "interval:{}", every.as_millis()),
        }
    }
}

/// A setting's text is not one of its values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting} {text:?} is not one of {allowed}")]
pub struct ParseSettingError {
    setting: &'static str,
    text: String,
    allowed: &'static str,
}

impl ParseSettingError {
    fn new(setting: &'static str, text: &str, allowed: &'static str) -> Self {
        Self {
            setting,
            text: text.to_owned(),
            allowed,
        }
    }
}

impl Client {
    /// Creates a topic and returns it as created, every setting filled in.
    ///
    /// Not retried after a failure that may have created it (a timeout, a lost connection):
    /// then the error is returned and a second attempt may find the topic there already.
    pub async fn create_topic(
        &self,
        name: &str,
        settings: TopicSettings,
    ) -> Result<TopicDescription, Error> {
        let name = valid_name(name)?;
        let body = request::Body::CreateTopic(settings.request(name.clone()));
        match self
            .request(body, Some(&name), RetryPolicy::NotApplied)
            .await?
        {
            Some(response::Body::CreateTopic(result)) => {
                result.topic.ok_or_else(|| missing("create_topic", "topic"))
            }
            other => Err(unexpected("create_topic", other.as_ref())),
        }
    }

    /// Deletes a topic and all its data. Open subscriptions to it end with
    /// [`Error::UnknownTopic`].
    pub async fn delete_topic(&self, name: &str) -> Result<(), Error> {
        let name = valid_name(name)?;
        let body = request::Body::DeleteTopic(DeleteTopic { name: name.clone() });
        match self
            .request(body, Some(&name), RetryPolicy::NotApplied)
            .await?
        {
            Some(response::Body::DeleteTopic(_)) => Ok(()),
            other => Err(unexpected("delete_topic", other.as_ref())),
        }
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicSummary>, Error> {
        let body = request::Body::ListTopics(ListTopics {});
        match self.request(body, None, RetryPolicy::Idempotent).await? {
            Some(response::Body::ListTopics(result)) => Ok(result.topics),
            other => Err(unexpected("list_topics", other.as_ref())),
        }
    }

    /// One topic: its settings and the state of each partition.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, Error> {
        let deadline = Instant::now() + self.request_timeout();
        describe_topic(self.link(), name, deadline).await
    }

    /// A group's committed offsets in a topic: one entry per partition that has one, sorted
    /// by partition. The offset is the next one the group will read.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<Vec<CommittedOffset>, Error> {
        let topic = valid_name(topic)?;
        let body = request::Body::FetchCommittedOffsets(FetchCommittedOffsets {
            group: group.to_owned(),
            topic: topic.clone(),
            partition: None,
        });
        match self
            .request(body, Some(&topic), RetryPolicy::Idempotent)
            .await?
        {
            Some(response::Body::FetchCommittedOffsets(result)) => Ok(result.offsets),
            other => Err(unexpected("fetch_committed_offsets", other.as_ref())),
        }
    }

    /// The cluster as the sidecar sees it: its node id, every node and every topic.
    pub async fn metadata(&self) -> Result<MetadataResult, Error> {
        let body = request::Body::Metadata(Metadata {});
        match self.request(body, None, RetryPolicy::Idempotent).await? {
            Some(response::Body::Metadata(result)) => Ok(result),
            other => Err(unexpected("metadata", other.as_ref())),
        }
    }

    /// Takes node `node_id` out of the cluster: out of the metadata group (a learner, if there is
    /// one, takes its vote) and the node registry. Returns the metadata group's voters after.
    pub async fn decommission_node(&self, node_id: u64) -> Result<Vec<u64>, Error> {
        let body = request::Body::DecommissionNode(v1::DecommissionNode { node_id });
        // Not idempotent: a retry after a lost answer would find the node gone.
        match self.request(body, None, RetryPolicy::NotApplied).await? {
            Some(response::Body::DecommissionNode(result)) => Ok(result.voters),
            other => Err(unexpected("decommission_node", other.as_ref())),
        }
    }

    async fn request(
        &self,
        body: request::Body,
        topic: Option<&str>,
        policy: RetryPolicy,
    ) -> Result<Option<response::Body>, Error> {
        let deadline = Instant::now() + self.request_timeout();
        self.link()
            .call_retrying(body, deadline, policy)
            .await
            .map_err(|error| error.into_error(topic, None))
    }
}

/// Describes `name` (retrying until `deadline`); shared by [`Client::describe_topic`] and the
/// publisher's partition lookup.
pub(crate) async fn describe_topic(
    link: &Link,
    name: &str,
    deadline: Instant,
) -> Result<TopicDescription, Error> {
    let name = valid_name(name)?;
    let body = request::Body::DescribeTopic(DescribeTopic { name: name.clone() });
    match link
        .call_retrying(body, deadline, RetryPolicy::Idempotent)
        .await
        .map_err(|error| error.into_error(Some(&name), None))?
    {
        Some(response::Body::DescribeTopic(result)) => result
            .topic
            .ok_or_else(|| missing("describe_topic", "topic")),
        other => Err(unexpected("describe_topic", other.as_ref())),
    }
}

/// `name` checked against the topic naming rules.
pub(crate) fn valid_name(name: &str) -> Result<String, Error> {
    name.parse::<TopicName>()
        .map(TopicName::into_string)
        .map_err(|error| Error::InvalidTopicName {
            topic: name.to_owned(),
            reason: error.to_string(),
        })
}

fn unexpected(request: &str, body: Option<&response::Body>) -> Error {
    Error::Protocol {
        message: format!("{request} answered with {}", sender_body_name(body)),
    }
}

fn missing(request: &str, field: &str) -> Error {
    Error::Protocol {
        message: format!("{request} answer has no {field}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_the_request() {
        let settings = TopicSettings::new()
            .partitions(6)
            .replication_factor(3)
            .retention_ms(-1)
            .cleanup(Cleanup::Compact)
            .fsync(Fsync::Interval(Duration::from_millis(250)));
        let request = settings.request("orders".into());
        assert_eq!(request.name, "orders");
        assert_eq!((request.partitions, request.replication_factor), (6, 3));
        let config = request.config.unwrap();
        assert_eq!(config.retention_ms, Some(-1));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.cleanup_policy(), v1::CleanupPolicy::Compact);
        let fsync = config.fsync.unwrap();
        assert_eq!(
            (fsync.mode(), fsync.interval_ms),
            (v1::FsyncMode::Interval, 250)
        );
    }

    #[test]
    fn defaults_leave_everything_to_the_sidecar() {
        let request = TopicSettings::default().request("t".into());
        assert_eq!((request.partitions, request.replication_factor), (0, 0));
        let config = request.config.unwrap();
        assert_eq!(config, TopicConfig::default());
    }

    #[test]
    fn policies_parse_from_cli_text() {
        assert_eq!("compact".parse(), Ok(Cleanup::Compact));
        assert_eq!("delete".parse(), Ok(Cleanup::Delete));
        assert!("keep".parse::<Cleanup>().is_err());
        assert_eq!("always".parse(), Ok(Fsync::Always));
        assert_eq!("never".parse(), Ok(Fsync::Never));
        assert_eq!(
            "interval".parse(),
            Ok(Fsync::Interval(Duration::from_secs(1)))
        );
        assert_eq!(
            "interval:50".parse(),
            Ok(Fsync::Interval(Duration::from_millis(50)))
        );
        let err = "interval:0".parse::<Fsync>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "fsync \"interval:0\" is not one of always, interval, interval:<ms>, never"
        );
        assert_eq!(
            Fsync::Interval(Duration::from_millis(50)).to_string(),
            "interval:50"
        );
    }

    #[test]
    fn invalid_names_fail_before_any_request() {
        let err = valid_name("orders/eu").unwrap_err();
        assert!(matches!(err, Error::InvalidTopicName { ref topic, .. } if topic == "orders/eu"));
        assert!(err.to_string().contains("'/'"), "{err}");
        assert_eq!(valid_name("orders").unwrap(), "orders");
    }
}
