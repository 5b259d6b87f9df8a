//! The log against a simple in-memory model under random appends, reads, rolls, suffix
//! truncations, purges, retention and reopens.

use std::sync::Arc;

use proptest::prelude::*;

use super::{config, control_batch, data_batch, open};
use crate::batch::{self, BatchHeader, RaftLogId};
use crate::config::FsyncPolicy;
use crate::log::{Log, ReadError};
use crate::storage::fault::FaultStorage;

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: u32,
        size: usize,
        control: bool,
        new_term: bool,
    },
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    ReadEntries {
        from: prop::sample::Index,
        len: u64,
    },
    Roll,
    TruncateFrom(prop::sample::Index),
    PurgeThrough(prop::sample::Index),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u32..6, 0usize..300, prop::bool::weighted(0.15), prop::bool::weighted(0.1))
            .prop_map(|(records, size, control, new_term)| Op::Append { records, size, control, new_term }),
        4 => (any::<prop::sample::Index>(), 1usize..2_000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (any::<prop::sample::Index>(), 0u64..8).prop_map(|(from, len)| Op::ReadEntries { from, len }),
        1 => Just(Op::Roll),
        1 => any::<prop::sample::Index>().prop_map(Op::TruncateFrom),
        1 => any::<prop::sample::Index>().prop_map(Op::PurgeThrough),
        1 => Just(Op::Reopen),
    ]
}

/// What the model knows of one entry.
#[derive(Debug, Clone)]
struct Entry {
    raft: RaftLogId,
    base_offset: u64,
    next_offset: u64,
    control: bool,
    /// The batch as appended (before the log stamped it).
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    entries: Vec<Entry>,
    start_offset: u64,
    last_purged: Option<RaftLogId>,
    next_offset: u64,
    term: u64,
}

impl Model {
    fn last(&self) -> Option<RaftLogId> {
        self.entries.last().map(|e| e.raft)
    }

    fn check_state(&self, log: &Log) {
        let state = log.state();
        assert_eq!(state.start_offset, self.start_offset, "start offset");
        assert_eq!(state.next_offset, self.next_offset, "next offset");
        assert_eq!(state.last_purged, self.last_purged, "last purged");
        assert_eq!(state.last, self.last(), "last entry");
    }
}

/// The log's stamped bytes equal the appended ones apart from the stamped fields.
fn same_batch(stored: &[u8], entry: &Entry) {
    let header = batch::validate(stored).unwrap();
    assert_eq!(header.raft, entry.raft);
    assert_eq!(header.base_offset, entry.base_offset);
    let mut expected = entry.bytes.clone();
    BatchHeader::stamp(&mut expected, entry.base_offset, entry.raft);
    assert_eq!(stored, &expected[..]);
}

#[expect(
    clippy::too_many_lines,
    reason = "one arm per operation, each checked against the model"
)]
fn run(ops: Vec<Op>, segment_bytes: u64) {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Never, segment_bytes);
    let mut log = open(&storage, &cfg);
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Append {
                records,
                size,
                control,
                new_term,
            } => {
                if new_term {
                    model.term += 1;
                }
                let bytes = if control {
                    control_batch(7)
                } else {
                    data_batch(records, size, 1_000, 3)
                };
                let index = model
                    .last()
                    .or(model.last_purged)
                    .map_or(0, |l| l.index + 1);
                let raft = RaftLogId {
                    term: model.term.max(model.last().map_or(0, |l| l.term)),
                    index,
                };
                let appended = log.append_entry(&bytes, raft).unwrap();
                let next_offset = model.next_offset + if control { 0 } else { u64::from(records) };
                assert_eq!(appended.base_offset, model.next_offset);
                assert_eq!(appended.next_offset, next_offset);
                model.entries.push(Entry {
                    raft,
                    base_offset: model.next_offset,
                    next_offset,
                    control,
                    bytes,
                });
                model.next_offset = next_offset;
            }
            Op::Read { at, max_bytes } => {
                let span = model.next_offset - model.start_offset + 1;
                let offset = model.start_offset + at.index(usize::try_from(span).unwrap()) as u64;
                let fetched = log.read(offset, max_bytes).unwrap();
                let expected: Vec<&Entry> = model
                    .entries
                    .iter()
                    .filter(|e| {
                        !e.control && e.next_offset > offset && e.base_offset >= model.start_offset
                    })
                    .collect();
                assert!(fetched.batches.len() <= expected.len());
                if !expected.is_empty() {
                    assert!(
                        !fetched.batches.is_empty(),
                        "read at {offset} returned nothing"
                    );
                }
                let mut total = 0;
                for (i, (stored, entry)) in fetched.batches.iter().zip(&expected).enumerate() {
                    same_batch(stored, entry);
                    total += stored.len();
                    assert!(i == 0 || total <= max_bytes);
                }
                if let Some(next) = expected.get(fetched.batches.len()) {
                    assert!(total + next.bytes.len() > max_bytes, "read stopped early");
                }
                // Below the start and past the end are errors.
                if model.start_offset > 0 {
                    assert!(matches!(
                        log.read(model.start_offset - 1, 10),
                        Err(ReadError::OffsetOutOfRange { .. })
                    ));
                }
                assert!(log.read(model.next_offset + 1, 10).is_err());
            }
            Op::ReadEntries { from, len } => {
                let Some(last) = model.last() else { continue };
                let lo = model
                    .last_purged
                    .map_or(0, |p| p.index + 1)
                    .saturating_sub(2);
                let start = lo + from.index(usize::try_from(last.index - lo + 3).unwrap()) as u64;
                let got = log.read_entries(start..start + len).unwrap();
                let expected: Vec<&Entry> = model
                    .entries
                    .iter()
                    .filter(|e| (start..start + len).contains(&e.raft.index))
                    .collect();
                assert_eq!(got.len(), expected.len());
                for (stored, entry) in got.iter().zip(expected) {
                    same_batch(stored, entry);
                }
            }
            Op::Roll => log.roll().unwrap(),
            Op::TruncateFrom(at) => {
                if model.entries.is_empty() {
                    continue;
                }
                let i = at.index(model.entries.len());
                let raft_index = model.entries[i].raft.index;
                log.truncate_from(raft_index).unwrap();
                model.next_offset = model.entries[i].base_offset;
                model.entries.truncate(i);
            }
            Op::PurgeThrough(at) => {
                if model.entries.is_empty() {
                    continue;
                }
                // Mostly within the log, sometimes past its end.
                let i = at.index(model.entries.len() + 1);
                let through = if let Some(e) = model.entries.get(i) {
                    e.raft
                } else {
                    let last = model.last().unwrap_or_default();
                    RaftLogId {
                        term: last.term,
                        index: last.index + 2,
                    }
                };
                log.purge_through(through).unwrap();
                let keep = model
                    .entries
                    .iter()
                    .position(|e| e.raft.index > through.index);
                model.start_offset = match keep {
                    Some(k) => model.entries[k].base_offset,
                    None => model.next_offset,
                };
                model.entries.drain(..keep.unwrap_or(model.entries.len()));
                model.last_purged = Some(through);
            }
            Op::Reopen => {
                log.close().unwrap();
                log = open(&storage, &cfg);
            }
        }
        model.check_state(&log);
    }
}

proptest! {

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..120), small in any::<bool>()) {
        run(ops, if small { 600 } else { 4_000 });
    }
}
