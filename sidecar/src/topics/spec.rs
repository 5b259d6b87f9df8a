//! A topic's settings: what `CreateTopic` asks for, checked and completed with the sidecar's
//! defaults, and stored in the topic's `topic.json`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sidestream_log::FsyncPolicy;
use sidestream_proto::v1::{self, CleanupPolicy, FsyncMode};

/// Most partitions one topic may have on this sidecar.
pub const MAX_PARTITIONS: u32 = 4096;

/// A topic's settings, every one filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicSpec {
    /// The topic's name (already checked against the naming rules).
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Replicas of each partition.
    pub replication_factor: u32,
    /// Delete sealed segments older than this many milliseconds; -1 keeps them.
    pub retention_ms: i64,
    /// Delete the oldest sealed segments while the partition stays this large; -1 keeps them.
    pub retention_bytes: i64,
    /// What retention does with old records.
    pub cleanup: Cleanup,
    /// When appends are synced, as `always`, `interval:<ms>` or `never`.
    #[serde(with = "fsync_text")]
    pub fsync: FsyncPolicy,
}

/// What retention does with old records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cleanup {
    /// Delete whole segments by age and size.
    Delete,
}

/// The sidecar's defaults for what a `CreateTopic` leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDefaults {
    /// Partitions of a new topic.
    pub partitions: u32,
    /// Retention by age in milliseconds; -1 keeps segments forever.
    pub retention_ms: i64,
    /// Retention by size in bytes; -1 keeps segments forever.
    pub retention_bytes: i64,
    /// fsync policy of a new topic.
    pub fsync: FsyncPolicy,
}

impl Default for TopicDefaults {
    fn default() -> Self {
        Self {
            partitions: 1,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
            fsync: FsyncPolicy::Always,
        }
    }
}

/// A setting that cannot be accepted; answered with `INVALID_TOPIC_CONFIG`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidTopicConfig(pub String);

impl TopicSpec {
    /// Checks a `CreateTopic` for a cluster of `nodes` sidecars and fills in the defaults.
    pub fn from_request(
        name: String,
        request: &v1::CreateTopic,
        defaults: &TopicDefaults,
        nodes: u32,
    ) -> Result<Self, InvalidTopicConfig> {
        let invalid = |message: String| Err(InvalidTopicConfig(message));
        let partitions = match request.partitions {
            0 => defaults.partitions,
            n if n > MAX_PARTITIONS => {
                return invalid(format!(
                    "partitions is {n}; at most {MAX_PARTITIONS} are allowed"
                ));
            }
            n => n,
        };
        let replication_factor = match request.replication_factor {
            0 => 1,
            n if n > nodes => {
                return invalid(format!(
                    "replication factor {n} is larger than the cluster's {nodes} node{}",
                    if nodes == 1 { "" } else { "s" }
                ));
            }
            n => n,
        };
        let config = request.config.unwrap_or_default();
        let retention = |field: &str, value: Option<i64>, default: i64| match value {
            None => Ok(default),
            Some(v) if v == -1 || v > 0 => Ok(v),
            Some(v) => Err(InvalidTopicConfig(format!(
                "{field} is {v}; use a positive number, or -1 to keep data forever"
            ))),
        };
        let retention_ms = retention("retention_ms", config.retention_ms, defaults.retention_ms)?;
        let retention_bytes = retention(
            "retention_bytes",
            config.retention_bytes,
            defaults.retention_bytes,
        )?;
        let cleanup = match CleanupPolicy::try_from(config.cleanup_policy) {
            Ok(CleanupPolicy::Unspecified | CleanupPolicy::Delete) => Cleanup::Delete,
            Ok(CleanupPolicy::Compact) => {
                return invalid(
                    "cleanup policy compact is not supported by this sidecar yet; use delete"
                        .into(),
                );
            }
            Err(_) => {
                return invalid(format!(
                    "cleanup policy {} is unknown",
                    config.cleanup_policy
                ));
            }
        };
        let fsync = match config.fsync {
            None => defaults.fsync,
            Some(policy) => fsync_from_proto(&policy)?,
        };
        Ok(Self {
            name,
            partitions,
            replication_factor,
            retention_ms,
            retention_bytes,
            cleanup,
            fsync,
        })
    }

    /// The settings as the protocol describes them.
    pub fn to_proto(&self) -> v1::TopicConfig {
        let (mode, interval_ms) = match self.fsync {
            FsyncPolicy::Always => (FsyncMode::Always, 0),
            FsyncPolicy::Interval(every) => (
                FsyncMode::Interval,
                u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            ),
            FsyncPolicy::Never => (FsyncMode::Never, 0),
        };
        v1::TopicConfig {
            retention_ms: Some(self.retention_ms),
            retention_bytes: Some(self.retention_bytes),
            cleanup_policy: match self.cleanup {
                Cleanup::Delete => CleanupPolicy::Delete.into(),
            },
            fsync: Some(v1::FsyncPolicy {
                mode: mode.into(),
                interval_ms,
            }),
        }
    }
}

fn fsync_from_proto(policy: &v1::FsyncPolicy) -> Result<FsyncPolicy, InvalidTopicConfig> {
    let invalid = |message: String| Err(InvalidTopicConfig(message));
    match FsyncMode::try_from(policy.mode) {
        Ok(FsyncMode::Interval) if policy.interval_ms == 0 => {
            invalid("fsync interval_ms must be more than 0 for mode interval".into())
        }
        Ok(FsyncMode::Interval) => Ok(FsyncPolicy::Interval(Duration::from_millis(
            policy.interval_ms,
        ))),
        Ok(mode) if policy.interval_ms != 0 => invalid(format!(
            "fsync interval_ms is {} but must be 0 for mode {}",
            policy.interval_ms,
            mode.as_str_name()
        )),
        Ok(FsyncMode::Unspecified | FsyncMode::Always) => Ok(FsyncPolicy::Always),
        Ok(FsyncMode::Never) => Ok(FsyncPolicy::Never),
        Err(_) => invalid(format!("fsync mode {} is unknown", policy.mode)),
    }
}

pub(crate) mod fsync_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use sidestream_log::FsyncPolicy;

    pub(crate) fn serialize<S: Serializer>(
        policy: &FsyncPolicy,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_str(policy)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<FsyncPolicy, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(partitions: u32, rf: u32, config: v1::TopicConfig) -> v1::CreateTopic {
        v1::CreateTopic {
            name: "t".into(),
            partitions,
            replication_factor: rf,
            config: Some(config),
        }
    }

    #[test]
    fn defaults_fill_what_the_request_leaves_out() {
        let defaults = TopicDefaults::default();
        let spec = TopicSpec::from_request(
            "t".into(),
            &create(0, 0, v1::TopicConfig::default()),
            &defaults,
            1,
        )
        .unwrap();
        assert_eq!(spec.partitions, 1);
        assert_eq!(spec.replication_factor, 1);
        assert_eq!(spec.fsync, FsyncPolicy::Always);
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(serde_json::from_str::<TopicSpec>(&json).unwrap(), spec);
        let config = spec.to_proto();
        assert_eq!(config.fsync.unwrap().mode, FsyncMode::Always as i32);
    }

    #[test]
    fn bad_settings_are_named() {
        let defaults = TopicDefaults::default();
        let check = |request: v1::CreateTopic| {
            TopicSpec::from_request("t".into(), &request, &defaults, 1)
                .unwrap_err()
                .0
        };
        assert!(check(create(0, 3, v1::TopicConfig::default())).contains("replication factor 3"));
        assert!(check(create(5000, 1, v1::TopicConfig::default())).contains("partitions is 5000"));
        let config = v1::TopicConfig {
            retention_ms: Some(0),
            ..Default::default()
        };
        assert!(check(create(1, 1, config)).contains("retention_ms is 0"));
        let config = v1::TopicConfig {
            fsync: Some(v1::FsyncPolicy {
                mode: FsyncMode::Interval.into(),
                interval_ms: 0,
            }),
            ..Default::default()
        };
        assert!(check(create(1, 1, config)).contains("interval_ms must be more than 0"));
        let config = v1::TopicConfig {
            fsync: Some(v1::FsyncPolicy {
                mode: 9,
                interval_ms: 0,
            }),
            ..Default::default()
        };
        assert!(check(create(1, 1, config)).contains("fsync mode 9 is unknown"));
    }
}
