//! The partition's snapshot: the state machine's small state, kept in one file beside the log.
//!
//! For a partition the log *is* the data, so a snapshot is metadata only (last applied log id,
//! last membership, high watermark, idempotent producers, groups' positions). The current
//! snapshot is the file `raft-snapshot` in the partition directory, JSON, replaced atomically
//! (write `raft-snapshot.tmp`, fsync, rename, fsync the directory); the log removes a stray
//! `.tmp` when it opens. A snapshot sent to a follower carries the log's batches as well
//! ([`super::bundle`]).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use openraft::{BasicNode, LogId, SnapshotMeta, StoredMembership};
use serde::{Deserialize, Serialize};
use sidestream_log::Offset;

use super::type_config::NodeId;
use crate::topics::producers::Producers;

/// The state of a partition's state machine, which is also the data of its snapshots (as
/// JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// The last entry applied.
    pub last_applied: Option<LogId<NodeId>>,
    /// The last membership applied, with its log id.
    pub last_membership: StoredMembership<NodeId, BasicNode>,
    /// The offset after the last applied data batch: consumers read only below it.
    pub high_watermark: Offset,
    /// The idempotent producers of the applied batches: each one's epoch, next sequence and
    /// last batches. Absent from snapshots written before it was kept (an empty table then).
    #[serde(default)]
    pub(crate) producers: Producers,
    /// Consumer groups' positions in the partition. Absent from snapshots written before they
    /// were kept here (an empty table then).
    #[serde(default)]
    pub(crate) groups: super::group_state::GroupTable,
}

/// Why the stored snapshot could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadSnapshotError {
    /// The snapshot file is not valid.
    #[error("{}: corrupt snapshot: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: serde_json::Error,
    },
    /// The snapshot file or its directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A snapshot received from the leader could not be installed in full.
    #[error(transparent)]
    Install(#[from] super::bundle::BundleError),
    /// The snapshot file is of a format version this sidecar does not read.
    #[error("{}: unknown snapshot format version {version}", path.display())]
    Version {
        /// The file.
        path: PathBuf,
        /// The version found.
        version: u32,
    },
}

/// Why a snapshot could not be saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum SaveSnapshotError {
    /// The snapshot could not be serialized.
    #[error("cannot serialize snapshot: {0}")]
    Encode(#[from] serde_json::Error),
    /// Writing, syncing or renaming failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// A snapshot as the file holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSnapshot {
    /// Format version of the file.
    version: u32,
    /// openraft's description of the snapshot.
    pub(crate) meta: SnapshotMeta<NodeId, BasicNode>,
    /// The state it holds.
    pub(crate) state: PartitionState,
}

/// The current snapshot of one partition, in memory and on disk.
///
/// Shared by the state machine and its snapshot builders, which may save concurrently; saves
/// are serialized and a snapshot never replaces a newer one.
#[derive(Debug)]
pub(crate) struct SnapshotStore {
    path: PathBuf,
    current: Mutex<Option<StoredSnapshot>>,
    saving: Mutex<()>,
}

impl StoredSnapshot {
    pub(crate) fn new(meta: SnapshotMeta<NodeId, BasicNode>, state: PartitionState) -> Self {
        Self {
            version: FORMAT_VERSION,
            meta,
            state,
        }
    }
}

impl SnapshotStore {
    /// Loads the current snapshot of the partition in `dir` (creating `dir` if needed).
    pub(crate) fn open(dir: &Path) -> Result<Self, LoadSnapshotError> {
        fs::create_dir_all(dir).map_err(|source| LoadSnapshotError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let current = match fs::read(&path) {
            Ok(bytes) => {
                let stored: StoredSnapshot = serde_json::from_slice(&bytes).map_err(|source| {
                    LoadSnapshotError::Corrupt {
                        path: path.clone(),
                        source,
                    }
                })?;
                if stored.version != FORMAT_VERSION {
                    return Err(LoadSnapshotError::Version {
                        path,
                        version: stored.version,
                    });
                }
                Some(stored)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => return Err(LoadSnapshotError::Io { path, source }),
        };
        Ok(Self {
            path,
            current: Mutex::new(current),
            saving: Mutex::new(()),
        })
    }

    /// The current snapshot, if any.
    pub(crate) fn current(&self) -> Option<StoredSnapshot> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes `snapshot` the current one, durably, unless the current one is newer. Returns
    /// whether it replaced it. Blocks on file IO.
    pub(crate) fn replace(&self, snapshot: StoredSnapshot) -> Result<bool, SaveSnapshotError> {
        let _saving = self.saving.lock().unwrap_or_else(PoisonError::into_inner);
        if self
            .current()
            .is_some_and(|current| current.meta.last_log_id > snapshot.meta.last_log_id)
        {
            return Ok(false);
        }
        self.write(&serde_json::to_vec(&snapshot)?)?;
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(snapshot);
        Ok(true)
    }

    fn write(&self, bytes: &[u8]) -> Result<(), SaveSnapshotError> {
        let tmp = self.path.with_extension("tmp");
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| SaveSnapshotError::Io { path, source }
        };
        let mut file = File::create(&tmp).map_err(io(&tmp))?;
        file.write_all(bytes).map_err(io(&tmp))?;
        file.sync_all().map_err(io(&tmp))?;
        drop(file);
        fs::rename(&tmp, &self.path).map_err(io(&self.path))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
    }
}

const FILE_NAME: &str = "raft-snapshot";
const FORMAT_VERSION: u32 = 1;
