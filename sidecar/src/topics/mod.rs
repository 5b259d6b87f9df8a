//! The topics this sidecar holds: their settings, their partitions' logs, and the files that
//! make both survive a restart.
//!
//! Layout under the data directory:
//!
//! ```text
//! topics/<name>-<id>/topic.json   the TopicSpec, written last when a topic is created
//! topics/<name>-<id>/<partition>/ the partition's log (segments and indexes)
//! trash/                          deleted topics on their way out
//! ```
//!
//! Each topic instance has a directory of its own (`<id>` is a UUID v7 in 32 hex digits), so
//! a topic deleted and created again under the same name never shares files with its
//! predecessor, whose logs may still be held by requests in progress. `topic.json` names the
//! topic. A topic exists once its `topic.json` does: a directory without one is what a crash
//! during creation leaves, and opening removes it. Deleting renames the topic's directory into
//! `trash/` first, so a crash never leaves half a topic behind.

mod partition;
pub(crate) mod producers;
mod replicated;
mod spec;

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use sidestream_log::{FileStorage, Log, LogConfig, OpenError, Storage, SyncObserver};
use tokio::sync::watch;

use crate::atomic_file::{sync_dir, write_atomically};
pub(crate) use partition::{Kind, Partition, PublishError, PublishOutcome};
pub(crate) use replicated::{Ack, Led, Replicated, Routed, Stranded};
pub(crate) use spec::fsync_text;
pub use spec::{Cleanup, InvalidTopicConfig, MAX_PARTITIONS, TopicDefaults, TopicSpec};

const SPEC_FILE: &str = "topic.json";

/// One topic: its settings and partitions.
#[derive(Debug)]
pub(crate) struct Topic {
    dir: PathBuf,
    /// The instance id of a replicated topic (`None` for a topic of a sidecar run alone).
    id: Option<String>,
    spec: TopicSpec,
    partitions: Vec<Arc<Partition>>,
    deleted: Arc<watch::Sender<bool>>,
}

impl Topic {
    /// A replicated topic as this sidecar holds it: its partitions (replicas here or not) and
    /// the directory of its replicas' logs.
    pub(crate) fn replicated(
        dir: PathBuf,
        id: String,
        spec: TopicSpec,
        partitions: Vec<Arc<Partition>>,
    ) -> Self {
        Self {
            dir,
            id: Some(id),
            spec,
            partitions,
            deleted: Arc::new(watch::Sender::new(false)),
        }
    }

    /// The same topic instance with other partitions (replicas moved); it shares the deleted
    /// flag, so subscriptions of either end when the topic is deleted.
    pub(crate) fn with_partitions(&self, partitions: Vec<Arc<Partition>>) -> Self {
        Self {
            dir: self.dir.clone(),
            id: self.id.clone(),
            spec: self.spec.clone(),
            partitions,
            deleted: Arc::clone(&self.deleted),
        }
    }

    /// The instance id of a replicated topic.
    pub(crate) fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The directory of the topic's files.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn spec(&self) -> &TopicSpec {
        &self.spec
    }

    pub(crate) fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub(crate) fn partition(&self, number: u32) -> Option<&Arc<Partition>> {
        self.partitions.get(usize::try_from(number).ok()?)
    }

    /// Becomes `true` when the topic is deleted.
    pub(crate) fn watch_deleted(&self) -> watch::Receiver<bool> {
        self.deleted.subscribe()
    }
}

/// Why the topics could not be opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum TopicsError {
    /// A file or directory operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A topic's `topic.json` cannot be read.
    #[error("topic settings {path} are not valid: {reason}")]
    BadSpec {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A partition's log cannot be opened.
    #[error("partition log of topic {topic:?} partition {partition}: {source}")]
    Log {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The error.
        source: OpenError,
    },
    /// A topic of that name exists.
    #[error("topic {0:?} already exists")]
    AlreadyExists(String),
    /// No topic of that name exists.
    #[error("topic {0:?} does not exist")]
    Unknown(String),
}

/// The sidecar-wide settings every partition log gets.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// Roll segments at this size.
    pub segment_bytes: u64,
    /// Largest batch a partition accepts.
    pub max_batch_bytes: usize,
    /// Told of every partition log's group-commit sync (the fsync latency metric).
    pub sync_observer: Option<Arc<dyn SyncObserver>>,
}

impl Default for LogSettings {
    fn default() -> Self {
        let log = LogConfig::default();
        Self {
            segment_bytes: log.segment_bytes,
            max_batch_bytes: log.max_batch_bytes,
            sync_observer: None,
        }
    }
}

/// Every topic of this sidecar.
#[derive(Debug)]
pub(crate) struct Topics {
    root: PathBuf,
    trash: PathBuf,
    settings: LogSettings,
    storage: Arc<dyn Storage>,
    by_name: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Serializes creations and deletions (lookups never wait for it).
    changing: tokio::sync::Mutex<()>,
    /// Counts changes of `by_name`, for those waiting for a topic to appear or go.
    version: watch::Sender<u64>,
    /// A cluster member's: the metadata offset its replicated topics are in step with.
    reconciled: std::sync::atomic::AtomicU64,
    /// A cluster member's: serializes the changes of its replicated topics' partitions (the
    /// metadata's, and a replica's restart), each made from the topic as installed.
    reshaping: tokio::sync::Mutex<()>,
}

impl Topics {
    /// Opens every topic under `data_dir`, recovering each partition's log.
    pub(crate) fn open(data_dir: &Path, settings: LogSettings) -> Result<Self, TopicsError> {
        let root = data_dir.join("topics");
        let trash = data_dir.join("trash");
        for dir in [&root, &trash] {
            fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        }
        empty_trash(&trash);
        let storage: Arc<dyn Storage> = Arc::new(FileStorage);
        let mut by_name = BTreeMap::new();
        for entry in fs::read_dir(&root).map_err(io_error("list", &root))? {
            let entry = entry.map_err(io_error("list", &root))?;
            let dir = entry.path();
            let spec_path = dir.join(SPEC_FILE);
            if !spec_path.exists() {
                tracing::warn!(dir = %dir.display(), "removing a topic directory without topic.json (an interrupted create)");
                fs::remove_dir_all(&dir).map_err(io_error("remove", &dir))?;
                continue;
            }
            let text = fs::read(&spec_path).map_err(io_error("read", &spec_path))?;
            let spec: TopicSpec =
                serde_json::from_slice(&text).map_err(|e| TopicsError::BadSpec {
                    path: spec_path.clone(),
                    reason: e.to_string(),
                })?;
            let topic = open_topic(&dir, spec, &settings, &storage)?;
            if let Some(other) = by_name.get(&topic.spec.name) {
                let other: &Arc<Topic> = other;
                return Err(TopicsError::BadSpec {
                    path: spec_path,
                    reason: format!(
                        "{} also holds topic {:?}; remove the stale one",
                        other.dir.display(),
                        topic.spec.name
                    ),
                });
            }
            by_name.insert(topic.spec.name.clone(), Arc::new(topic));
        }
        Ok(Self {
            root,
            trash,
            settings,
            storage,
            by_name: RwLock::new(by_name),
            changing: tokio::sync::Mutex::new(()),
            reshaping: tokio::sync::Mutex::new(()),
            version: watch::Sender::new(0),
            reconciled: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Notes that the replicated topics are in step with the metadata through `offset`.
    pub(crate) fn set_reconciled(&self, offset: u64) {
        self.reconciled
            .store(offset, std::sync::atomic::Ordering::Release);
    }

    /// The metadata offset the replicated topics are in step with.
    pub(crate) fn reconciled(&self) -> u64 {
        self.reconciled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Adds a replicated topic (replacing an older instance of its name, which is marked
    /// deleted).
    pub(crate) fn install(&self, topic: Arc<Topic>) {
        let old = self
            .by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.spec.name.clone(), topic);
        if let Some(old) = old {
            old.deleted.send_replace(true);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Held while a cluster member changes its replicated topics' partitions: each change
    /// starts from the topics as installed and installs its result before the next starts.
    pub(crate) async fn reshaping(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.reshaping.lock().await
    }

    /// Replaces a replicated topic by the same instance with other partitions (its replicas
    /// moved); subscriptions of the old one go on.
    pub(crate) fn replace(&self, topic: Arc<Topic>) {
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.spec.name.clone(), topic);
        self.version.send_modify(|v| *v += 1);
    }

    /// Takes a replicated topic out (if `name` is still instance `id`) and marks it deleted;
    /// returns it.
    pub(crate) fn uninstall(&self, name: &str, id: &str) -> Option<Arc<Topic>> {
        let removed = {
            let mut by_name = self.by_name.write().unwrap_or_else(PoisonError::into_inner);
            if by_name.get(name).is_some_and(|t| t.id() == Some(id)) {
                by_name.remove(name)
            } else {
                None
            }
        };
        if let Some(topic) = &removed {
            topic.deleted.send_replace(true);
            self.version.send_modify(|v| *v += 1);
        }
        removed
    }

    /// Waits until `ready` holds for the topic named `name` (or its absence), up to
    /// `deadline`; whether it did.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
        ready: impl Fn(Option<&Topic>) -> bool,
    ) -> bool {
        let mut version = self.version.subscribe();
        loop {
            version.borrow_and_update();
            if ready(self.get(name).as_deref()) {
                return true;
            }
            match tokio::time::timeout_at(deadline, version.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) | Err(_) => return false,
            }
        }
    }

    pub(crate) fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// Every topic, sorted by name.
    pub(crate) fn all(&self) -> Vec<Arc<Topic>> {
        self.by_name
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Creates a topic: its partition logs, then its `topic.json`.
    pub(crate) async fn create(
        self: &Arc<Self>,
        spec: TopicSpec,
    ) -> Result<Arc<Topic>, TopicsError> {
        let _changing = self.changing.lock().await;
        if self.get(&spec.name).is_some() {
            return Err(TopicsError::AlreadyExists(spec.name));
        }
        let this = Arc::clone(self);
        let topic = tokio::task::spawn_blocking(move || this.create_blocking(spec))
            .await
            .map_err(|e| TopicsError::Io {
                action: "create",
                path: self.root.clone(),
                source: io::Error::other(e),
            })??;
        let topic = Arc::new(topic);
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(topic.spec.name.clone(), Arc::clone(&topic));
        self.version.send_modify(|v| *v += 1);
        Ok(topic)
    }

    fn create_blocking(&self, spec: TopicSpec) -> Result<Topic, TopicsError> {
        let dir = self
            .root
            .join(format!("{}-{}", spec.name, uuid::Uuid::now_v7().simple()));
        fs::create_dir(&dir).map_err(io_error("create", &dir))?;
        let topic = open_topic(&dir, spec, &self.settings, &self.storage)?;
        let spec_path = dir.join(SPEC_FILE);
        let json = serde_json::to_vec_pretty(&topic.spec).map_err(|e| TopicsError::BadSpec {
            path: spec_path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&spec_path, &json, 0o644).map_err(io_error("write", &spec_path))?;
        sync_dir(&self.root).map_err(io_error("sync", &self.root))?;
        Ok(topic)
    }

    /// Deletes a topic: it disappears at once, its files soon after.
    pub(crate) async fn delete(&self, name: &str) -> Result<(), TopicsError> {
        let _changing = self.changing.lock().await;
        let topic = self
            .get(name)
            .ok_or_else(|| TopicsError::Unknown(name.to_owned()))?;
        let dir = &topic.dir;
        let doomed = self
            .trash
            .join(dir.file_name().unwrap_or(std::ffi::OsStr::new(name)));
        fs::rename(dir, &doomed).map_err(io_error("move to trash", dir))?;
        sync_dir(&self.root).map_err(io_error("sync", &self.root))?;
        self.by_name
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        self.version.send_modify(|v| *v += 1);
        topic.deleted.send_replace(true);
        drop(topic);
        let trash = self.trash.clone();
        tokio::task::spawn_blocking(move || empty_trash(&trash));
        Ok(())
    }

    /// The sidecar-wide log settings.
    pub(crate) fn settings(&self) -> &LogSettings {
        &self.settings
    }

    /// Removes the directory `dir` (a deleted replicated topic's, or a moved replica's): at
    /// once from its place (one rename into the trash), its files soon after.
    pub(crate) fn discard(&self, dir: &Path) {
        // A topic's directory name is unique; a partition's number is not: name it after both.
        let name = match (dir.parent().and_then(Path::file_name), dir.file_name()) {
            (Some(parent), Some(own)) if own.to_string_lossy().parse::<u32>().is_ok() => {
                format!("{}-{}", parent.to_string_lossy(), own.to_string_lossy())
            }
            (_, Some(own)) => own.to_string_lossy().into_owned(),
            _ => "topic".to_owned(),
        };
        let doomed = self.trash.join(name);
        if let Err(error) = fs::rename(dir, &doomed) {
            tracing::warn!(dir = %dir.display(), %error, "cannot move a deleted topic's files to the trash");
            return;
        }
        empty_trash(&self.trash);
    }

    /// Syncs every partition log (on shutdown).
    pub(crate) fn sync_all(&self) {
        for topic in self.all() {
            for partition in topic.partitions() {
                let Some(log) = partition.log() else { continue };
                if let Err(error) = log.sync() {
                    tracing::error!(topic = %topic.spec.name, partition = partition.number(), %error, "final sync failed");
                }
            }
        }
    }

    /// Applies retention to every partition; returns the segments deleted.
    pub(crate) fn apply_retention(&self) -> usize {
        let mut deleted = 0;
        for topic in self.all() {
            for partition in topic.partitions() {
                // A replicated partition's log is its Raft log: retention goes through
                // openraft's purge (`Replicated::apply_retention`).
                let Kind::Local(log) = partition.kind() else {
                    continue;
                };
                match log.apply_retention(partition.high_watermark()) {
                    Ok(report) => deleted += report.segments,
                    Err(error) => {
                        tracing::error!(topic = %topic.spec.name, partition = partition.number(), %error, "retention failed");
                    }
                }
            }
        }
        deleted
    }
}

/// The log settings of each partition of a topic of `spec`.
pub(crate) fn log_config(spec: &TopicSpec, settings: &LogSettings) -> LogConfig {
    LogConfig {
        segment_bytes: settings.segment_bytes,
        max_batch_bytes: settings.max_batch_bytes,
        fsync: spec.fsync,
        retention_ms: (spec.retention_ms > 0).then_some(spec.retention_ms),
        retention_bytes: u64::try_from(spec.retention_bytes).ok().filter(|b| *b > 0),
        sync_observer: settings.sync_observer.clone(),
        ..LogConfig::default()
    }
}

fn open_topic(
    dir: &Path,
    spec: TopicSpec,
    settings: &LogSettings,
    storage: &Arc<dyn Storage>,
) -> Result<Topic, TopicsError> {
    let config = log_config(&spec, settings);
    let partitions = (0..spec.partitions)
        .map(|number| {
            let log = Log::open(
                Arc::clone(storage),
                dir.join(number.to_string()),
                config.clone(),
            )
            .map_err(|source| TopicsError::Log {
                topic: spec.name.clone(),
                partition: number,
                source,
            })?;
            Ok(Arc::new(Partition::new(number, log)))
        })
        .collect::<Result<_, TopicsError>>()?;
    Ok(Topic {
        dir: dir.to_path_buf(),
        id: None,
        spec,
        partitions,
        deleted: Arc::new(watch::Sender::new(false)),
    })
}

fn empty_trash(trash: &Path) {
    let Ok(entries) = fs::read_dir(trash) else {
        return;
    };
    for entry in entries.flatten() {
        if let Err(error) = fs::remove_dir_all(entry.path()) {
            tracing::warn!(path = %entry.path().display(), %error, "cannot remove a deleted topic's files");
        }
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> TopicsError {
    let path = path.to_path_buf();
    move |source| TopicsError::Io {
        action,
        path,
        source,
    }
}
