//! Where a subscription stands in each partition: where its next batch starts, the records
//! registered for delivery but not yet acknowledged, and what to commit. A pure state machine
//! shared (behind a mutex) by the subscription, its deliveries' acks and the committer.
//!
//! Method families, in order:
//!
//! 1. assignments: [`assign`](Positions::assign) for each `Assignment` frame, in stream
//!    order;
//! 2. delivering: [`next_offset`](Positions::next_offset) to skip what was delivered
//!    already, then [`delivering`](Positions::delivering) for each batch about to be handed
//!    out;
//! 3. acking: [`ack`](Positions::ack);
//! 4. committing: [`commits_due`](Positions::commits_due), then
//!    [`committed`](Positions::committed) for each commit the sidecar accepted.
//!
//! The committable offset of a partition is the first registered record not yet acknowledged
//! (handed out or still held by the subscription), or, when every one is acknowledged, the end
//! of the last batch registered. So acks that arrive out of order commit only the contiguous
//! prefix, a record not handed out yet is never committed past, and offsets that carry no
//! delivery (records skipped, control batches, gaps left by compaction) never hold a commit
//! back.

use std::collections::{BTreeMap, VecDeque};

use sidestream_proto::v1::Assignment;

/// A commit to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) partition: u32,
    pub(crate) offset: u64,
    pub(crate) generation: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Positions {
    generation: u64,
    partitions: BTreeMap<u32, PartitionPosition>,
    revoked: Vec<Commit>,
    epochs: u64,
    /// A subscription without a group commits nothing, so it keeps no deliveries waiting for
    /// their ack (a lone subscriber that never acks must not grow without bound).
    no_commits: bool,
}

#[derive(Debug)]
struct PartitionPosition {
    /// Changes each time the partition is (re)assigned; acks of older deliveries are ignored.
    epoch: u64,
    /// Where the next batch to register starts: past every record registered (the
    /// subscription may still hold some of them, not handed out yet).
    next: u64,
    /// Registered record offsets in order, with whether each is acknowledged; the
    /// acknowledged prefix is removed eagerly.
    pending: VecDeque<(u64, bool)>,
    /// The last committed offset (initially where the assignment started).
    committed: u64,
    high_watermark: u64,
}

impl PartitionPosition {
    fn committable(&self) -> u64 {
        self.pending
            .front()
            .map_or(self.next, |&(offset, _)| offset)
    }
}

impl Positions {
    /// Positions of a subscription in a group (which commits acknowledged offsets) or not
    /// (deliveries are not kept for acks: nothing is ever committed).
    pub(crate) fn new(group: bool) -> Self {
        Self {
            no_commits: !group,
            ..Self::default()
        }
    }

    /// Applies an assignment. With `replace` (a group), it replaces the partition set:
    /// partitions missing from it are dropped and their committable offsets owed as commits
    /// with the new generation. Without, it adds to the set (a subscription of its own
    /// resubscribing partition by partition).
    ///
    /// A partition that stays keeps its position unless the assignment starts further on:
    /// what was delivered already is not delivered again.
    pub(crate) fn assign(&mut self, assignment: &Assignment, replace: bool) {
        self.generation = assignment.generation;
        if replace {
            let kept: Vec<u32> = assignment.partitions.iter().map(|p| p.partition).collect();
            let generation = self.generation;
            let revoked: Vec<u32> = self
                .partitions
                .keys()
                .copied()
                .filter(|p| !kept.contains(p))
                .collect();
            for partition in revoked {
                if let Some(position) = self.partitions.remove(&partition) {
                    let offset = position.committable();
                    if offset != position.committed {
                        self.revoked.push(Commit {
                            partition,
                            offset,
                            generation,
                        });
                    }
                }
            }
        }
        for assigned in &assignment.partitions {
            if let Some(position) = self.partitions.get_mut(&assigned.partition) {
                if assigned.offset > position.next {
                    position.next = assigned.offset;
                    position.pending.clear();
                }
            } else {
                self.epochs += 1;
                self.partitions.insert(
                    assigned.partition,
                    PartitionPosition {
                        epoch: self.epochs,
                        next: assigned.offset,
                        pending: VecDeque::new(),
                        committed: assigned.offset,
                        high_watermark: 0,
                    },
                );
            }
        }
    }

    /// Where the next batch of `partition` starts (records below it were registered already)
    /// and the partition's epoch; `None` if it is not assigned.
    pub(crate) fn next_offset(&self, partition: u32) -> Option<(u64, u64)> {
        self.partitions
            .get(&partition)
            .map(|position| (position.next, position.epoch))
    }

    /// Records that the records of a batch at `offsets` (ascending) are being handed out, and
    /// that everything below `end` (the batch's end) is dealt with once they are: records
    /// skipped, control batches, gaps. Offsets below the next offset to deliver are ignored.
    ///
    /// Registered at once, each record holds commits back until it is acknowledged, handed out
    /// or not: a commit never passes a record not handled. (Registered one by one as they were
    /// handed out, a commit across a gap left by compaction stopped at the gap's start; now it
    /// goes on to the next record, which skips nothing.) The start of the next batch moves to
    /// `end` at once; the subscription itself knows which records of the batch it still holds.
    pub(crate) fn delivering(
        &mut self,
        partition: u32,
        epoch: u64,
        offsets: impl IntoIterator<Item = u64>,
        end: u64,
    ) {
        let keep = !self.no_commits;
        let Some(position) = self.current(partition, epoch) else {
            return;
        };
        let next = position.next;
        let mut after_last = next;
        for offset in offsets {
            if offset < after_last {
                continue;
            }
            after_last = offset.saturating_add(1);
            if keep {
                position.pending.push_back((offset, false));
            }
        }
        // Past the last record even if `end` is not (a batch whose header understates its
        // last offset): what was registered is never registered again.
        position.next = after_last.max(end);
    }

    /// Marks the delivery at `offset` as handled.
    pub(crate) fn ack(&mut self, partition: u32, epoch: u64, offset: u64) {
        let Some(position) = self.current(partition, epoch) else {
            return;
        };
        if let Ok(i) = position
            .pending
            .binary_search_by_key(&offset, |&(pending, _)| pending)
            && let Some(entry) = position.pending.get_mut(i)
        {
            entry.1 = true;
        }
        drain_acked(position);
    }

    /// Records the high watermark a frame of `partition` reported.
    pub(crate) fn set_high_watermark(&mut self, partition: u32, high_watermark: u64) {
        if let Some(position) = self.partitions.get_mut(&partition) {
            position.high_watermark = position.high_watermark.max(high_watermark);
        }
    }

    /// The commits owed now: partitions taken away, and partitions whose committable offset
    /// moved since their last commit.
    pub(crate) fn commits_due(&mut self) -> Vec<Commit> {
        let mut due = std::mem::take(&mut self.revoked);
        due.extend(self.partitions.iter().filter_map(|(&partition, position)| {
            let offset = position.committable();
            (offset != position.committed).then_some(Commit {
                partition,
                offset,
                generation: self.generation,
            })
        }));
        due
    }

    /// Records a commit the sidecar accepted (or refused for good).
    pub(crate) fn committed(&mut self, commit: &Commit) {
        if commit.generation == self.generation
            && let Some(position) = self.partitions.get_mut(&commit.partition)
        {
            position.committed = position.committed.max(commit.offset);
        }
    }

    /// The group generation of the current assignment (0 without a group).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// The assigned partitions with their next offset to deliver and last known high
    /// watermark; `held` names a record the subscription holds but has not handed out yet
    /// (partition, epoch, offset), which is then the partition's next.
    pub(crate) fn snapshot(&self, held: Option<(u32, u64, u64)>) -> Vec<(u32, u64, u64)> {
        self.partitions
            .iter()
            .map(|(&partition, position)| {
                let next = match held {
                    Some((held, epoch, offset)) if held == partition && epoch == position.epoch => {
                        position.next.min(offset)
                    }
                    _ => position.next,
                };
                (partition, next, position.high_watermark)
            })
            .collect()
    }

    fn current(&mut self, partition: u32, epoch: u64) -> Option<&mut PartitionPosition> {
        self.partitions
            .get_mut(&partition)
            .filter(|position| position.epoch == epoch)
    }
}

fn drain_acked(position: &mut PartitionPosition) {
    while position.pending.front().is_some_and(|&(_, acked)| acked) {
        position.pending.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use sidestream_proto::v1::AssignedPartition;

    use super::*;

    fn assignment(generation: u64, partitions: &[(u32, u64)]) -> Assignment {
        Assignment {
            generation,
            partitions: partitions
                .iter()
                .map(|&(partition, offset)| AssignedPartition { partition, offset })
                .collect(),
        }
    }

    fn commit(partition: u32, offset: u64, generation: u64) -> Commit {
        Commit {
            partition,
            offset,
            generation,
        }
    }

    #[test]
    fn nothing_to_commit_until_something_is_acked() {
        let mut positions = Positions::default();
        positions.assign(&assignment(3, &[(0, 10), (1, 0)]), true);
        assert_eq!(positions.commits_due(), []);
        let (next, epoch) = positions.next_offset(0).unwrap();
        assert_eq!(next, 10);
        positions.delivering(0, epoch, [10, 11], 12);
        assert_eq!(positions.commits_due(), [], "delivered is not handled");
        positions.ack(0, epoch, 10);
        assert_eq!(positions.commits_due(), [commit(0, 11, 3)]);
        positions.committed(&commit(0, 11, 3));
        assert_eq!(positions.commits_due(), []);
        positions.ack(0, epoch, 11);
        assert_eq!(positions.commits_due(), [commit(0, 12, 3)]);
    }

    #[test]
    fn out_of_order_acks_commit_only_the_contiguous_prefix() {
        let mut positions = Positions::default();
        positions.assign(&assignment(1, &[(0, 0)]), true);
        let (_, epoch) = positions.next_offset(0).unwrap();
        positions.delivering(0, epoch, 0..4, 4);
        positions.ack(0, epoch, 2);
        positions.ack(0, epoch, 3);
        assert_eq!(positions.commits_due(), [], "offset 0 is not acked");
        positions.ack(0, epoch, 0);
        assert_eq!(positions.commits_due(), [commit(0, 1, 1)]);
        positions.ack(0, epoch, 1);
        assert_eq!(positions.commits_due(), [commit(0, 4, 1)]);
        positions.ack(0, epoch, 1);
        positions.ack(0, epoch, 99);
        assert_eq!(
            positions.commits_due(),
            [commit(0, 4, 1)],
            "repeated and unknown acks change nothing"
        );
    }

    #[test]
    fn gaps_skips_and_errors_do_not_hold_commits_back() {
        let mut positions = Positions::default();
        positions.assign(&assignment(1, &[(0, 0)]), true);
        let (_, epoch) = positions.next_offset(0).unwrap();
        // Compaction left a gap after 1; the batch (or the control batches after it) ends at 9.
        positions.delivering(0, epoch, [0, 1, 5], 9);
        positions.ack(0, epoch, 1); // a type mismatch, reported: handled when handed out
        assert_eq!(positions.commits_due(), [], "offset 0 is not acked");
        positions.ack(0, epoch, 0);
        assert_eq!(positions.commits_due(), [commit(0, 5, 1)]);
        positions.ack(0, epoch, 5);
        assert_eq!(positions.commits_due(), [commit(0, 9, 1)]);
        assert_eq!(positions.next_offset(0).unwrap().0, 9);
    }

    #[test]
    fn an_assignment_replaces_the_partitions_of_a_group() {
        let mut positions = Positions::default();
        positions.assign(&assignment(1, &[(0, 0), (1, 0)]), true);
        let (_, epoch0) = positions.next_offset(0).unwrap();
        let (_, epoch1) = positions.next_offset(1).unwrap();
        positions.delivering(0, epoch0, [0], 1);
        positions.ack(0, epoch0, 0);
        positions.delivering(1, epoch1, [0], 1);

        positions.assign(&assignment(2, &[(1, 0), (2, 7)]), true);
        assert_eq!(positions.generation(), 2);
        assert_eq!(positions.next_offset(0), None, "partition 0 is dropped");
        assert_eq!(
            positions.next_offset(1).unwrap().0,
            1,
            "partition 1 keeps its place"
        );
        assert_eq!(positions.next_offset(2).unwrap().0, 7);
        assert_eq!(
            positions.commits_due(),
            [commit(0, 1, 2)],
            "the revoked partition's offset is committed with the new generation"
        );
        positions.ack(0, epoch0, 0);
        positions.ack(1, epoch1, 0);
        assert_eq!(positions.commits_due(), [commit(1, 1, 2)]);

        positions.assign(&assignment(3, &[(0, 1), (1, 0), (2, 7)]), true);
        let (_, epoch0_again) = positions.next_offset(0).unwrap();
        assert_ne!(
            epoch0_again, epoch0,
            "a reassigned partition starts a new epoch"
        );
        positions.delivering(0, epoch0, [1, 2], 3);
        assert_eq!(
            positions.next_offset(0).unwrap().0,
            1,
            "stale deliveries are ignored"
        );
    }

    #[test]
    fn resubscribing_skips_what_was_delivered_and_jumps_ahead_if_told() {
        let mut positions = Positions::default();
        positions.assign(&assignment(0, &[(0, 0), (1, 0)]), false);
        let (_, epoch) = positions.next_offset(0).unwrap();
        positions.delivering(0, epoch, 0..5, 5);
        // The sidecar resumes at the last committed offset, below what was delivered.
        positions.assign(&assignment(0, &[(0, 2)]), false);
        assert_eq!(positions.next_offset(0), Some((5, epoch)));
        assert!(
            positions.next_offset(1).is_some(),
            "merging keeps other partitions"
        );
        // Another member moved the group on while this one was away.
        positions.assign(&assignment(0, &[(0, 20)]), false);
        assert_eq!(positions.next_offset(0), Some((20, epoch)));
        positions.ack(0, epoch, 3);
        assert_eq!(positions.commits_due(), [commit(0, 20, 0)]);
    }

    #[test]
    fn without_a_group_nothing_waits_for_an_ack() {
        let mut positions = Positions::new(false);
        positions.assign(&assignment(0, &[(0, 5)]), false);
        positions.delivering(0, 1, 5..1005, 1005);
        let position = &positions.partitions[&0];
        assert!(position.pending.is_empty());
        assert_eq!(position.next, 1005);
        positions.ack(0, 1, 7);
        assert_eq!(positions.snapshot(None), vec![(0, 1005, 0)]);
    }

    #[test]
    fn high_watermarks_are_kept_for_lag() {
        let mut positions = Positions::default();
        positions.assign(&assignment(0, &[(4, 3)]), false);
        positions.set_high_watermark(4, 10);
        positions.set_high_watermark(4, 8);
        positions.set_high_watermark(9, 8);
        assert_eq!(positions.snapshot(None), [(4, 3, 10)]);
    }

    #[test]
    fn a_batch_end_below_its_last_record_does_not_register_records_twice() {
        let mut positions = Positions::default();
        positions.assign(&assignment(1, &[(0, 0)]), true);
        let (_, epoch) = positions.next_offset(0).unwrap();
        positions.delivering(0, epoch, [0, 1, 2], 2);
        assert_eq!(positions.next_offset(0), Some((3, epoch)));
        positions.delivering(0, epoch, [2, 3], 4);
        for offset in 0..4 {
            positions.ack(0, epoch, offset);
        }
        assert_eq!(positions.commits_due(), [commit(0, 4, 1)]);
        assert!(positions.partitions[&0].pending.is_empty());
    }

    #[test]
    fn a_record_held_back_is_the_next_to_deliver_in_a_snapshot() {
        let mut positions = Positions::default();
        positions.assign(&assignment(0, &[(0, 0), (1, 0)]), false);
        let (_, epoch) = positions.next_offset(0).unwrap();
        positions.delivering(0, epoch, 0..10, 10);
        positions.set_high_watermark(0, 10);
        assert_eq!(positions.snapshot(None), [(0, 10, 10), (1, 0, 0)]);
        assert_eq!(
            positions.snapshot(Some((0, epoch, 4))),
            [(0, 4, 10), (1, 0, 0)],
            "records 4 to 9 are not handed out yet"
        );
        assert_eq!(
            positions.snapshot(Some((0, epoch + 1, 4))),
            [(0, 10, 10), (1, 0, 0)],
            "a record of an earlier assignment is not"
        );
    }

    #[test]
    fn a_batch_registered_ahead_holds_the_commit_at_its_first_unacked_record() {
        let mut positions = Positions::default();
        positions.assign(&assignment(1, &[(0, 3)]), true);
        let (next, epoch) = positions.next_offset(0).unwrap();
        // Records below the next offset (delivered before a resubscription) are not kept.
        positions.delivering(0, epoch, 0..8, 8);
        assert_eq!(next, 3);
        assert_eq!(positions.next_offset(0), Some((8, epoch)));
        positions.ack(0, epoch, 3);
        positions.ack(0, epoch, 4);
        assert_eq!(
            positions.commits_due(),
            [commit(0, 5, 1)],
            "5 is held (handed out or not), not acked"
        );
        // Revoked half way through: what was not acknowledged is owed to the next member.
        positions.assign(&assignment(2, &[]), true);
        assert_eq!(positions.commits_due(), [commit(0, 5, 2)]);
    }
}
