//! A partition snapshot as it travels to a follower: the state machine's state and the log's
//! batches from its start through the snapshot's last entry (DESIGN "Retention and
//! snapshots": a follower that falls behind the leader's log start must not be left with a
//! hole between its log start and the snapshot point).
//!
//! ```text
//!  0          8            12                    12 + n
//!  +----------+------------+---------------------+------------------------------------------+
//!  | SSBUNDL1 | n (u32 LE) | header, JSON        | batches, exactly as the leader's segments |
//!  |          |            | {state, log}        | hold them (log.len bytes)                 |
//!  +----------+------------+---------------------+------------------------------------------+
//! ```
//!
//! `log` is `{start_offset, prev, len}`: the offset of the first batch, the Raft entry before
//! it (the leader's last purged, if any) and the batches' length; `null` when the sender's
//! log does not hold the snapshot's entries (only openraft's storage suite, whose state
//! machines apply entries no log holds, makes such a snapshot).
//!
//! The sender reads the batches straight from its segment files ([`RaftPrefix`]); openraft
//! sends the bundle in chunks. The receiver writes the chunks to `snapshot.incoming` in the
//! partition directory and installs from that file (see [`super::state_machine`]).

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use sidestream_log::batch::{HEADER_LEN, ValidBatch};
use sidestream_log::{
    AppendError, BatchHeader, Log, RaftLogId, RaftPrefix, ReadError, SyncError, WriteError,
};
use tokio::io::{AsyncRead, AsyncSeek, AsyncSeekExt, AsyncWrite, ReadBuf};

use super::snapshot::PartitionState;

/// The file a follower receives a bundle into, in the partition directory.
pub(crate) const INCOMING_FILE: &str = "snapshot.incoming";

const MAGIC: &[u8; 8] = b"SSBUNDL1";

/// The largest header read back (a state with many producers and groups is far smaller).
const MAX_HEADER: u32 = 64 << 20;

/// What precedes a bundle's batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BundleHeader {
    /// The state machine's state at the snapshot.
    pub(crate) state: PartitionState,
    /// Where the batches belong, if the bundle carries the log.
    pub(crate) log: Option<LogPart>,
}

/// Where a bundle's batches belong in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogPart {
    /// The offset of the first batch (the sender's log start).
    pub(crate) start_offset: u64,
    /// The Raft entry before the first batch, as `[term, index]`.
    pub(crate) prev: Option<[u64; 2]>,
    /// The batches' length in bytes.
    pub(crate) len: u64,
}

impl LogPart {
    pub(crate) fn prev(&self) -> Option<RaftLogId> {
        self.prev.map(|[term, index]| RaftLogId { term, index })
    }
}

/// Why a staged bundle cannot be installed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not a whole bundle.
    #[error("{}: not a whole snapshot bundle: {reason}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The sender's log could not be read.
    #[error("cannot read the log for a snapshot: {0}")]
    Log(#[from] ReadError),
    /// A batch could not be written to the receiver's log.
    #[error("cannot restore the log from a snapshot: {0}")]
    Append(#[from] AppendError),
    /// The receiver's log could not be emptied or synced.
    #[error("cannot restore the log from a snapshot: {0}")]
    Write(#[from] WriteError),
    /// The receiver's log could not be synced.
    #[error("cannot restore the log from a snapshot: {0}")]
    Sync(#[from] SyncError),
}

/// openraft's snapshot data for a partition: a bundle being sent (read from the header and
/// the log's segment files) or being received (written to a file).
#[derive(Debug)]
pub struct SnapshotData(Data);

#[derive(Debug)]
enum Data {
    Outgoing {
        head: Vec<u8>,
        log: Option<RaftPrefix>,
        pos: u64,
    },
    Incoming {
        file: tokio::fs::File,
        path: PathBuf,
    },
}

impl SnapshotData {
    /// The bundle of `state` and, if it holds them, `log`'s batches through the state's last
    /// applied entry.
    pub(crate) fn outgoing(state: &PartitionState, log: &Log) -> Result<Self, BundleError> {
        let prefix = match state.last_applied {
            None => None,
            Some(last) => match log.raft_prefix(last.index) {
                Ok(prefix) => Some(prefix),
                Err(ReadError::MissingEntry(index)) => {
                    tracing::warn!(
                        %last,
                        index,
                        "the log does not hold the snapshot's entries: sending the state alone"
                    );
                    None
                }
                Err(e) => return Err(e.into()),
            },
        };
        let header = BundleHeader {
            state: state.clone(),
            log: prefix.as_ref().map(|p| LogPart {
                start_offset: p.start_offset,
                prev: p.prev.map(|p| [p.term, p.index]),
                len: p.len(),
            }),
        };
        let json = serde_json::to_vec(&header).map_err(|e| BundleError::Malformed {
            path: PathBuf::from(INCOMING_FILE),
            reason: e.to_string(),
        })?;
        let n = u32::try_from(json.len()).map_err(|_| BundleError::Malformed {
            path: PathBuf::from(INCOMING_FILE),
            reason: "header too large".into(),
        })?;
        let mut head = Vec::with_capacity(12 + json.len());
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(&n.to_le_bytes());
        head.extend_from_slice(&json);
        Ok(Self(Data::Outgoing {
            head,
            log: prefix,
            pos: 0,
        }))
    }

    /// An empty bundle to receive into `dir`'s [`INCOMING_FILE`] (replacing what it held).
    pub(crate) async fn incoming(dir: &Path) -> io::Result<Self> {
        let path = dir.join(INCOMING_FILE);
        let file = tokio::fs::File::create(&path).await?;
        Ok(Self(Data::Incoming { file, path }))
    }

    /// Makes the bundle a durable file in `dir` and returns its path: a received one is
    /// synced where it is; one built here (openraft's storage suite installs a snapshot
    /// object directly) is written out first.
    pub(crate) async fn stage(self, dir: &Path) -> Result<PathBuf, BundleError> {
        match self.0 {
            Data::Incoming { mut file, path } => {
                let io = |source| BundleError::Io {
                    path: path.clone(),
                    source,
                };
                // A transfer that started over wrote from the start again: whatever lies past
                // its last chunk is left from before.
                let end = file.stream_position().await.map_err(io)?;
                file.set_len(end).await.map_err(io)?;
                file.sync_all().await.map_err(io)?;
                Ok(path)
            }
            Data::Outgoing { head, log, .. } => {
                let path = dir.join(INCOMING_FILE);
                let target = path.clone();
                tokio::task::spawn_blocking(move || write_out(&target, &head, log.as_ref()))
                    .await
                    .map_err(|e| BundleError::Io {
                        path: path.clone(),
                        source: io::Error::other(e),
                    })??;
                Ok(path)
            }
        }
    }

    fn len(head: &[u8], log: Option<&RaftPrefix>) -> u64 {
        head.len() as u64 + log.map_or(0, RaftPrefix::len)
    }
}

fn write_out(path: &Path, head: &[u8], log: Option<&RaftPrefix>) -> Result<(), BundleError> {
    use std::io::Write;
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::create(path).map_err(io)?;
    file.write_all(head).map_err(io)?;
    if let Some(log) = log {
        let mut buf = vec![0; 1 << 20];
        let mut pos = 0;
        loop {
            let n = log.read_at(&mut buf, pos).map_err(io)?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).map_err(io)?;
            pos += n as u64;
        }
    }
    file.sync_all().map_err(io)
}

/// Reads the header of the bundle staged at `path`; returns it and where its batches start.
/// Fails unless the file holds the whole bundle.
pub(crate) fn read_header(path: &Path) -> Result<(BundleHeader, u64), BundleError> {
    use std::io::Read;
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let malformed = |reason: String| BundleError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut start = [0; 12];
    file.read_exact(&mut start)
        .map_err(|e| malformed(format!("no header: {e}")))?;
    if &start[..8] != MAGIC {
        return Err(malformed("wrong magic".into()));
    }
    let n = u32::from_le_bytes([start[8], start[9], start[10], start[11]]);
    if n > MAX_HEADER {
        return Err(malformed(format!("header of {n} bytes")));
    }
    let mut json = vec![0; n as usize];
    file.read_exact(&mut json)
        .map_err(|e| malformed(format!("header cut short: {e}")))?;
    let header: BundleHeader =
        serde_json::from_slice(&json).map_err(|e| malformed(format!("header: {e}")))?;
    let body = 12 + u64::from(n);
    let expected = body.checked_add(header.log.map_or(0, |l| l.len));
    if expected != Some(file_len) {
        return Err(malformed(format!(
            "{file_len} bytes where the header says {expected:?}"
        )));
    }
    Ok((header, body))
}

/// Checks every batch of the bundle staged at `path` (whose header and batch start
/// `read_header` gave) before anything is changed: whole, within `max_batch_bytes`, its CRC,
/// its Raft index following on from the one before (from `prev`) with no lower term, its
/// offset following on (from `start_offset`), and the last one being `through`, the
/// snapshot's last entry.
pub(crate) fn check(
    path: &Path,
    part: &LogPart,
    body: u64,
    through: RaftLogId,
    max_batch_bytes: usize,
) -> Result<(), BundleError> {
    let malformed = |reason: String| BundleError::Malformed {
        path: path.to_path_buf(),
        reason,
    };
    let mut last = part.prev();
    let mut next_offset = part.start_offset;
    for_each_batch(path, part, body, |at, batch| {
        if batch.len() > max_batch_bytes {
            return Err(malformed(format!(
                "batch at byte {at} is {} bytes, over {max_batch_bytes}",
                batch.len()
            )));
        }
        let valid =
            ValidBatch::new(batch).map_err(|e| malformed(format!("batch at byte {at}: {e}")))?;
        let header = valid.header();
        let follows = last.is_none_or(|l| {
            l.index.checked_add(1) == Some(header.raft.index) && header.raft.term >= l.term
        });
        if !follows || header.base_offset != next_offset {
            return Err(malformed(format!(
                "batch at byte {at} (entry {}, offset {}) does not follow entry {:?} and offset \
                 {next_offset}",
                header.raft, header.base_offset, last
            )));
        }
        last = Some(header.raft);
        next_offset = header.next_offset();
        Ok(())
    })?;
    if last != Some(through) {
        return Err(malformed(format!(
            "it ends with entry {last:?}, not the snapshot's last, {through}"
        )));
    }
    Ok(())
}

/// Makes `log` hold exactly the batches of the bundle staged at `path`, which [`check`]
/// accepted: the log is emptied and restarted at the bundle's start, each batch appended as
/// the entry it was on the sender, and the log synced. Run again after a crash, it does the
/// same again.
pub(crate) fn restore_log(
    log: &Log,
    path: &Path,
    part: &LogPart,
    body: u64,
) -> Result<(), BundleError> {
    log.reset(part.start_offset, part.prev())?;
    for_each_batch(path, part, body, |at, batch| {
        let valid = ValidBatch::checked_before(batch).map_err(|e| BundleError::Malformed {
            path: path.to_path_buf(),
            reason: format!("batch at byte {at}: {e}"),
        })?;
        log.append_entry_valid(&valid, valid.header().raft)?;
        Ok(())
    })?;
    log.sync()?;
    Ok(())
}

/// Removes a received bundle that is no longer needed.
pub(crate) fn remove_staged(path: &Path) {
    if let Err(error) = std::fs::remove_file(path)
        && error.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), %error, "cannot remove a received snapshot");
    }
}

/// Calls `f` with each batch of the bundle staged at `path` and its byte position.
fn for_each_batch(
    path: &Path,
    part: &LogPart,
    body: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    use std::io::{BufReader, Read, Seek};
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let cut = |at: u64, e: io::Error| BundleError::Malformed {
        path: path.to_path_buf(),
        reason: format!("batch at byte {at}: {e}"),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    file.seek(SeekFrom::Start(body)).map_err(io)?;
    let mut reader = BufReader::with_capacity(1 << 20, file).take(part.len);
    let mut batch = Vec::new();
    let mut at = 0;
    while at < part.len {
        batch.resize(HEADER_LEN, 0);
        reader.read_exact(&mut batch).map_err(|e| cut(at, e))?;
        let header = BatchHeader::parse(&batch).map_err(|e| BundleError::Malformed {
            path: path.to_path_buf(),
            reason: format!("batch at byte {at}: {e}"),
        })?;
        let length = u64::from(header.length);
        if length < HEADER_LEN as u64 || length > part.len - at {
            return Err(BundleError::Malformed {
                path: path.to_path_buf(),
                reason: format!("batch at byte {at} claims {length} bytes"),
            });
        }
        batch.resize(header.length as usize, 0);
        reader
            .read_exact(&mut batch[HEADER_LEN..])
            .map_err(|e| cut(at, e))?;
        f(at, &batch)?;
        at += u64::from(header.length);
    }
    Ok(())
}

impl AsyncRead for SnapshotData {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).poll_read(cx, buf),
            Data::Outgoing { head, log, pos } => {
                let at = *pos;
                let n = if let Some(from_head) = usize::try_from(at)
                    .ok()
                    .and_then(|at| head.get(at..))
                    .filter(|rest| !rest.is_empty())
                {
                    let n = from_head.len().min(buf.remaining());
                    buf.put_slice(&from_head[..n]);
                    n
                } else if let Some(log) = log {
                    // A positional read of the page cache (or disk), at most one chunk of
                    // openraft's snapshot transfer; not worth a trip to the blocking pool.
                    let n = log.read_at(buf.initialize_unfilled(), at - head.len() as u64)?;
                    buf.advance(n);
                    n
                } else {
                    0
                };
                *pos += n as u64;
                Poll::Ready(Ok(()))
            }
        }
    }
}

impl AsyncSeek for SnapshotData {
    fn start_seek(self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).start_seek(position),
            Data::Outgoing { head, log, pos } => {
                let end = SnapshotData::len(head, log.as_ref());
                let target = match position {
                    SeekFrom::Start(at) => Some(at),
                    SeekFrom::End(delta) => end.checked_add_signed(delta),
                    SeekFrom::Current(delta) => pos.checked_add_signed(delta),
                };
                *pos = target.filter(|&t| t <= end).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "seek outside the snapshot")
                })?;
                Ok(())
            }
        }
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).poll_complete(cx),
            Data::Outgoing { pos, .. } => Poll::Ready(Ok(*pos)),
        }
    }
}

impl AsyncWrite for SnapshotData {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).poll_write(cx, buf),
            Data::Outgoing { .. } => Poll::Ready(Err(read_only())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).poll_flush(cx),
            Data::Outgoing { .. } => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().0 {
            Data::Incoming { file, .. } => Pin::new(file).poll_shutdown(cx),
            Data::Outgoing { .. } => Poll::Ready(Ok(())),
        }
    }
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        "a snapshot being sent cannot be written to",
    )
}
