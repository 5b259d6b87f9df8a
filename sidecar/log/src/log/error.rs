//! The errors of the log's operations, one enum per operation boundary.

use std::io;
use std::path::PathBuf;

use crate::Offset;
use crate::batch::{DecodeError, RaftLogId};
use crate::segment::{Damage, DamageReason};

/// What is wrong with bytes found in a segment.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Corruption {
    /// The bytes are not a valid batch (bad CRC, torn, malformed).
    #[error(transparent)]
    Batch(DecodeError),
    /// A valid batch whose offset, Raft index or term does not follow the one before it.
    #[error("{0} out of sequence")]
    OutOfSequence(&'static str),
}

/// Why a log could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A file could not be read, written or listed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A sealed segment (one covered by an intact index) holds a bad batch. Recovery truncates
    /// only the unsealed tail of the log; a sealed segment is never cut silently.
    #[error("segment {}: corrupt batch at byte {position}: {source}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad batch in the segment.
        position: u64,
        /// What is wrong.
        #[source]
        source: Corruption,
    },
    /// Consecutive segments do not fit together (a missing or misplaced segment file).
    #[error("segment {}: {what}: expected {expected}, found {found}", segment.display())]
    Gap {
        /// The segment that does not follow on.
        segment: PathBuf,
        /// What does not follow on: "base offset" or "raft index".
        what: &'static str,
        /// The value the previous segment leads to.
        expected: u64,
        /// The value found.
        found: u64,
    },
    /// The configuration cannot work.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(&'static str),
    /// A vote, commit or log-start file is damaged.
    #[error("{}: {reason}", path.display())]
    BadMetaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a batch was not appended. The log is unchanged unless the error is `Io`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The batch is not well formed.
    #[error("invalid batch: {0}")]
    Invalid(#[from] DecodeError),
    /// The batch is larger than the log accepts.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Batch size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The Raft index does not follow the log's last entry.
    #[error("raft index {got} does not follow the log (expected {expected})")]
    RaftIndex {
        /// The index the log expects next.
        expected: u64,
        /// The index given.
        got: u64,
    },
    /// The Raft term is lower than the last entry's.
    #[error("raft term {got} is below the last entry's term {last}")]
    RaftTerm {
        /// Term of the last entry.
        last: u64,
        /// Term given.
        got: u64,
    },
    /// An earlier write or fsync failed; the log refuses writes until it is reopened.
    #[error("log refuses writes after an earlier write or fsync failure; reopen it")]
    Poisoned,
    /// Writing failed; the log is now poisoned.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The offset is below the log's start or past its end.
    #[error("offset {offset} is out of range [{start}, {end}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        offset: Offset,
        /// First offset held.
        start: Offset,
        /// Next offset to be written.
        end: Offset,
    },
    /// A batch on the way is corrupt; nothing from it or past it was returned.
    #[error("segment {}: corrupt batch at byte {position}: {source}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What is wrong.
        #[source]
        source: Corruption,
    },
    /// Reading failed.
    #[error("{}: {source}", segment.display())]
    Io {
        /// The segment file.
        segment: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The log holds no Raft entry with this index.
    #[error("raft entry {0} is not in the log")]
    MissingEntry(u64),
}

/// Why a sync (or waiting for one) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// An fsync failed, now or earlier; the log refuses writes until reopened.
    #[error("fsync failed; the log refuses writes until it is reopened")]
    Poisoned,
}

/// Why a truncation, purge, reset, roll, retention pass or vote write failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// An earlier failure poisoned the log.
    #[error("log refuses writes after an earlier write or fsync failure; reopen it")]
    Poisoned,
    /// The operation needs an entry the log does not hold.
    #[error("raft entry {0} is not in the log")]
    MissingEntry(RaftLogId),
    /// A file operation failed; the log is now poisoned.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A batch needed for the operation is corrupt.
    #[error("segment {}: corrupt batch at byte {position}: {source}", segment.display())]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What is wrong.
        #[source]
        source: Corruption,
    },
}

impl Damage {
    fn split(self) -> Result<(u64, Corruption), io::Error> {
        match self.reason {
            DamageReason::Io(source) => Err(source),
            DamageReason::Decode(e) => Ok((self.position, Corruption::Batch(e))),
            DamageReason::OutOfSequence(what) => {
                Ok((self.position, Corruption::OutOfSequence(what)))
            }
        }
    }

    pub(crate) fn into_read_error(self, segment: PathBuf) -> ReadError {
        match self.split() {
            Err(source) => ReadError::Io { segment, source },
            Ok((position, source)) => ReadError::Corrupt {
                segment,
                position,
                source,
            },
        }
    }

    pub(crate) fn into_write_error(self, segment: PathBuf) -> WriteError {
        match self.split() {
            Err(source) => WriteError::Io {
                path: segment,
                source,
            },
            Ok((position, source)) => WriteError::Corrupt {
                segment,
                position,
                source,
            },
        }
    }

    pub(crate) fn into_open_error(self, segment: PathBuf) -> OpenError {
        match self.split() {
            Err(source) => OpenError::Io {
                path: segment,
                source,
            },
            Ok((position, source)) => OpenError::Corrupt {
                segment,
                position,
                source,
            },
        }
    }
}
