//! How a partition log is configured.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// When appended batches are made durable with `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every append is reported durable only after an `fdatasync` that covers it. Appends that
    /// arrive while a sync runs share the next one (group commit).
    #[default]
    Always,
    /// A background thread syncs at this interval; appends are reported at once.
    Interval(Duration),
    /// Never sync (trust replication); the OS writes pages back when it likes.
    Never,
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Always => f.write_str("always"),
            Self::Interval(every) => write!(f, "interval:{}", every.as_millis()),
            Self::Never => f.write_str("never"),
        }
    }
}

/// Why a string is not an fsync policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fsync policy {0:?}: expected always, never or interval:<ms> (ms > 0)")]
pub struct ParseFsyncPolicyError(String);

impl FromStr for FsyncPolicy {
    type Err = ParseFsyncPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => s
                .strip_prefix("interval:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(|ms| Self::Interval(Duration::from_millis(ms)))
                .ok_or_else(|| ParseFsyncPolicyError(s.to_owned())),
        }
    }
}

/// Where the log reads the time (ms since the Unix epoch), so tests can move it.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// Told of every group-commit `fdatasync` a log runs (for metrics): how long it took and how
/// many appends it made durable. Called on the syncing thread, outside the log's locks.
pub trait SyncObserver: Send + Sync + fmt::Debug {
    /// One sync that made `appends` appends durable took `took`.
    fn synced(&self, took: Duration, appends: u64);
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// Configuration of one partition log.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Roll to a new segment before one would grow past this many bytes (default 1 GiB).
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one is this old (default 7 days).
    pub segment_ms: i64,
    /// Bytes of batches between two offset-index entries (default 4 KiB).
    pub index_interval_bytes: u64,
    /// Largest batch accepted (default 8 MiB).
    pub max_batch_bytes: usize,
    /// When appends are made durable.
    pub fsync: FsyncPolicy,
    /// Delete sealed segments whose newest record is older than this (default: keep).
    pub retention_ms: Option<i64>,
    /// Delete the oldest sealed segments while the log would stay at least this large
    /// (default: keep).
    pub retention_bytes: Option<u64>,
    /// The clock used for segment age and retention.
    pub clock: Arc<dyn Clock>,
    /// Told of every group-commit sync (default: nobody).
    pub sync_observer: Option<Arc<dyn SyncObserver>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            index_interval_bytes: 4096,
            max_batch_bytes: 8 << 20,
            fsync: FsyncPolicy::Always,
            retention_ms: None,
            retention_bytes: None,
            clock: Arc::new(SystemClock),
            sync_observer: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_round_trips_through_strings() {
        for policy in [
            FsyncPolicy::Always,
            FsyncPolicy::Never,
            FsyncPolicy::Interval(Duration::from_millis(250)),
        ] {
            assert_eq!(policy.to_string().parse::<FsyncPolicy>(), Ok(policy));
        }
        let err = "sometimes".parse::<FsyncPolicy>().unwrap_err();
        assert!(err.to_string().contains("\"sometimes\""));
        assert!("interval:0".parse::<FsyncPolicy>().is_err());
    }
}
