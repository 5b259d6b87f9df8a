//! Consumer groups' positions in a replicated partition, kept in the partition's own Raft
//! state: a group's committed offset is replicated like the data it points into, needs no
//! other Raft group, and goes when the partition goes.
//!
//! A group command is a control batch of kind `Group` (JSON payload, STORAGE.md) proposed
//! through the partition's leader like a data batch; it takes a Raft index but no offset.
//! Every replica applies the same commands in the same order, so every replica decides alike
//! whether a command counts:
//!
//! ```text
//!   Claim  { group, generation, claimant }  generation > the group's, or the same one by the
//!                                           same claimant (a retry)  ─▶ it becomes the group's;
//!                                                                       answer: committed offset
//!                                           otherwise               ─▶ Stale { current }
//!   Commit { group, generation, offset }    generation = the group's ─▶ offset stored, unless
//!                                                                       lower than the stored one
//!                                                                       (a late copy of an
//!                                                                       earlier commit)
//!                                           otherwise               ─▶ Stale { current }
//!   Commit { group, offset } (no generation)                        ─▶ offset stored (an
//!                                                                       operator's reset)
//! ```
//!
//! A member claims each partition it is given before it reads from it, and starts at the
//! offset its claim answers: an older member's commit ordered after the claim is refused, one
//! ordered before it is in the answer, so the committed offset never goes back because a
//! member was replaced. Generations come from each sidecar's own counter, so two sidecars may
//! give the same number: the claimant (the sidecar's node id) tells them apart, and the second
//! is refused and claims again above it.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sidestream_log::{ControlKind, RecordBatch};

/// A group's command to one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum GroupCommand {
    /// A member of `group` in `generation` takes the partition over.
    Claim {
        /// The group.
        group: String,
        /// The member's generation.
        generation: u64,
        /// The node id of the sidecar that gave the generation.
        #[serde(default)]
        claimant: u64,
    },
    /// A member of `group` (in `generation`, if given) commits `offset`.
    Commit {
        /// The group.
        group: String,
        /// The member's generation; `None` commits whatever member holds the partition.
        generation: Option<u64>,
        /// The offset of the next record to process.
        offset: u64,
    },
}

/// Where a group stands in a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupPosition {
    /// The latest generation that claimed the partition.
    pub(crate) generation: u64,
    /// The node id of the sidecar that gave that generation.
    #[serde(default)]
    pub(crate) claimant: u64,
    /// The committed offset, if any.
    pub(crate) offset: Option<u64>,
}

/// Every group's position in a partition, by group name.
pub(crate) type GroupTable = BTreeMap<String, GroupPosition>;

/// What applying a group command did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupApplied {
    /// It counted; the group's committed offset after it.
    Done {
        /// The committed offset, if any.
        offset: Option<u64>,
    },
    /// Another generation holds the partition: it was refused.
    Stale {
        /// That generation.
        current: u64,
    },
    /// The command could not be read (every replica finds the same): nothing changed.
    Unreadable,
    /// Not proposed: a commit past the leader's high watermark (which it waited for a moment).
    PastHighWatermark {
        /// The leader's high watermark.
        high_watermark: u64,
    },
}

impl GroupCommand {
    /// The group the command is for.
    pub(crate) fn group(&self) -> &str {
        match self {
            Self::Claim { group, .. } | Self::Commit { group, .. } => group,
        }
    }

    /// The control batch that carries the command, created at `now_ms`.
    pub(crate) fn to_batch(&self, now_ms: i64) -> Result<Bytes, String> {
        let payload = serde_json::to_vec(self)
            .map_err(|e| format!("cannot serialize the group command: {e}"))?;
        let batch = RecordBatch::control(ControlKind::Group, now_ms, Bytes::from(payload));
        let encoded = batch
            .encode()
            .map_err(|e| format!("cannot encode the group command: {e}"))?;
        Ok(Bytes::from(encoded))
    }

    /// The command a group control batch's payload holds.
    pub(crate) fn from_payload(payload: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(payload)
    }

    /// Applies the command to `table`.
    pub(crate) fn apply(&self, table: &mut GroupTable) -> GroupApplied {
        let position = table.entry(self.group().to_owned()).or_default();
        let stale = GroupApplied::Stale {
            current: position.generation,
        };
        match *self {
            Self::Claim {
                generation,
                claimant,
                ..
            } => {
                let retry = generation == position.generation && claimant == position.claimant;
                if generation <= position.generation && !retry {
                    return stale;
                }
                position.generation = generation;
                position.claimant = claimant;
            }
            Self::Commit {
                generation: Some(generation),
                offset,
                ..
            } => {
                if generation != position.generation {
                    return stale;
                }
                if position.offset.is_none_or(|stored| offset >= stored) {
                    position.offset = Some(offset);
                }
            }
            Self::Commit {
                generation: None,
                offset,
                ..
            } => position.offset = Some(offset),
        }
        GroupApplied::Done {
            offset: position.offset,
        }
    }
}

#[cfg(test)]
mod tests {
    use sidestream_log::{BatchBody, BatchHeader};

    use super::*;

    fn claim(generation: u64) -> GroupCommand {
        claim_by(generation, 1)
    }

    fn claim_by(generation: u64, claimant: u64) -> GroupCommand {
        GroupCommand::Claim {
            group: "payments".to_owned(),
            generation,
            claimant,
        }
    }

    fn commit(generation: Option<u64>, offset: u64) -> GroupCommand {
        GroupCommand::Commit {
            group: "payments".to_owned(),
            generation,
            offset,
        }
    }

    #[test]
    fn a_claim_refuses_the_older_members_later_commits() {
        let mut table = GroupTable::new();
        assert_eq!(
            claim(10).apply(&mut table),
            GroupApplied::Done { offset: None }
        );
        assert_eq!(
            commit(Some(10), 40).apply(&mut table),
            GroupApplied::Done { offset: Some(40) }
        );
        // A new member claims: it starts at 40; the old member's next commit is refused.
        assert_eq!(
            claim(11).apply(&mut table),
            GroupApplied::Done { offset: Some(40) }
        );
        assert_eq!(
            commit(Some(10), 55).apply(&mut table),
            GroupApplied::Stale { current: 11 }
        );
        assert_eq!(
            claim(9).apply(&mut table),
            GroupApplied::Stale { current: 11 }
        );
        // The same member claiming again (a retried claim) still counts.
        assert_eq!(
            claim(11).apply(&mut table),
            GroupApplied::Done { offset: Some(40) }
        );
        assert_eq!(
            commit(None, 42).apply(&mut table),
            GroupApplied::Done { offset: Some(42) }
        );
        assert_eq!(
            table.get("payments"),
            Some(&GroupPosition {
                generation: 11,
                claimant: 1,
                offset: Some(42)
            })
        );
    }

    #[test]
    fn the_same_generation_from_another_sidecar_is_refused() {
        let mut table = GroupTable::new();
        assert_eq!(
            claim_by(7, 1).apply(&mut table),
            GroupApplied::Done { offset: None }
        );
        assert_eq!(
            claim_by(7, 2).apply(&mut table),
            GroupApplied::Stale { current: 7 }
        );
        assert_eq!(
            claim_by(8, 2).apply(&mut table),
            GroupApplied::Done { offset: None }
        );
        // A commit of a generation that never claimed the partition is refused too.
        assert_eq!(
            commit(Some(9), 5).apply(&mut table),
            GroupApplied::Stale { current: 8 }
        );
        assert_eq!(
            commit(Some(u64::MAX), 5).apply(&mut table),
            GroupApplied::Stale { current: 8 }
        );
    }

    #[test]
    fn a_late_copy_of_an_earlier_commit_does_not_move_the_offset_back() {
        let mut table = GroupTable::new();
        claim(3).apply(&mut table);
        commit(Some(3), 20).apply(&mut table);
        assert_eq!(
            commit(Some(3), 12).apply(&mut table),
            GroupApplied::Done { offset: Some(20) }
        );
        // An operator's reset (no generation) may move it back.
        assert_eq!(
            commit(None, 0).apply(&mut table),
            GroupApplied::Done { offset: Some(0) }
        );
    }

    #[test]
    fn a_command_travels_as_a_group_control_batch() {
        let command = commit(Some(3), 7);
        let batch = command.to_batch(1_000).unwrap();
        assert!(BatchHeader::parse(&batch).unwrap().control);
        let BatchBody::Control(control) = RecordBatch::decode(&batch).unwrap().body else {
            panic!("expected a control batch");
        };
        assert_eq!(control.kind, ControlKind::Group);
        assert_eq!(
            GroupCommand::from_payload(&control.payload).unwrap(),
            command
        );
        assert!(GroupCommand::from_payload(b"{\"op\":\"forget\"}").is_err());
    }
}
