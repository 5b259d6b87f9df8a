//! Small files beside the segments, each replaced atomically: write `<name>.tmp`, sync it,
//! rename it over `<name>`, sync the directory.
//!
//! Each file is `crc32c (u32 LE) | payload length (u32 LE) | payload`, the CRC covering the
//! length and the payload.

use std::io;
use std::path::Path;

use crate::Offset;
use crate::batch::RaftLogId;
use crate::offset_index::{u32_at, u64_at};
use crate::storage::{Storage, read_exact_at};

/// A Raft vote as the log persists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftVote {
    /// The term voted in.
    pub term: u64,
    /// The candidate voted for, if any.
    pub node_id: Option<u64>,
    /// Whether the vote was granted by a quorum (the node is a leader's follower).
    pub committed: bool,
}

/// Where the log starts: its first offset and the last Raft entry removed before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct LogStart {
    pub(crate) start_offset: Offset,
    pub(crate) last_purged: Option<RaftLogId>,
}

pub(crate) const VOTE_FILE: &str = "raft-vote";
pub(crate) const COMMITTED_FILE: &str = "raft-committed";
pub(crate) const LOG_START_FILE: &str = "log-start";

/// Why a meta file could not be read.
#[derive(Debug)]
pub(crate) enum MetaError {
    Io(io::Error),
    Corrupt(&'static str),
}

impl From<io::Error> for MetaError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

pub(crate) fn write(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    payload: &[u8],
) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + payload.len());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(
        &u32::try_from(payload.len())
            .map_err(io::Error::other)?
            .to_le_bytes(),
    );
    bytes.extend_from_slice(payload);
    let crc = crc32c::crc32c(&bytes[4..]);
    bytes[..4].copy_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{name}.tmp"));
    let file = storage.open(&tmp, true)?;
    file.set_len(0)?;
    file.write_at(&bytes, 0)?;
    file.sync_data()?;
    storage.rename(&tmp, &dir.join(name))?;
    storage.sync_dir(dir)
}

pub(crate) fn read(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>, MetaError> {
    let file = match storage.open(&dir.join(name), false) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let len = usize::try_from(file.len()?).map_err(|_| MetaError::Corrupt("too large"))?;
    if !(8..=4096).contains(&len) {
        return Err(MetaError::Corrupt("bad size"));
    }
    let mut bytes = vec![0; len];
    read_exact_at(file.as_ref(), &mut bytes, 0)?;
    if u32_at(&bytes, 0) != crc32c::crc32c(&bytes[4..]) {
        return Err(MetaError::Corrupt("bad crc"));
    }
    if u32_at(&bytes, 4) as usize != len - 8 {
        return Err(MetaError::Corrupt("bad length"));
    }
    Ok(Some(bytes.split_off(8)))
}

impl RaftVote {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18);
        out.extend_from_slice(&self.term.to_le_bytes());
        out.push(u8::from(self.node_id.is_some()));
        out.extend_from_slice(&self.node_id.unwrap_or(0).to_le_bytes());
        out.push(u8::from(self.committed));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 18 || bytes[8] > 1 || bytes[17] > 1 {
            return None;
        }
        Some(Self {
            term: u64_at(bytes, 0),
            node_id: (bytes[8] == 1).then(|| u64_at(bytes, 9)),
            committed: bytes[17] == 1,
        })
    }
}

pub(crate) fn encode_raft_id(id: Option<RaftLogId>) -> Vec<u8> {
    let mut out = Vec::with_capacity(17);
    out.push(u8::from(id.is_some()));
    let id = id.unwrap_or_default();
    out.extend_from_slice(&id.term.to_le_bytes());
    out.extend_from_slice(&id.index.to_le_bytes());
    out
}

#[expect(
    clippy::option_option,
    reason = "outer: the bytes are well formed; inner: whether an id is recorded"
)]
pub(crate) fn decode_raft_id(bytes: &[u8]) -> Option<Option<RaftLogId>> {
    if bytes.len() != 17 || bytes[0] > 1 {
        return None;
    }
    Some((bytes[0] == 1).then(|| RaftLogId {
        term: u64_at(bytes, 1),
        index: u64_at(bytes, 9),
    }))
}

impl LogStart {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = self.start_offset.to_le_bytes().to_vec();
        out.extend_from_slice(&encode_raft_id(self.last_purged));
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != 25 {
            return None;
        }
        Some(Self {
            start_offset: u64_at(bytes, 0),
            last_purged: decode_raft_id(&bytes[8..])?,
        })
    }
}
