//! Idempotent producers: which batch of each producer a partition expects next.
//!
//! A producer sets producer id, epoch and base sequence in its batches' headers. The partition
//! keeps, per producer, the epoch, the next sequence it expects and the offsets of the last
//! few batches it appended, so that a batch that arrives early waits for its predecessor
//! and a batch that arrives twice is answered with the offsets of its first append.
//!
//! A sidecar run alone keeps the table in memory: after a restart a producer is new again, and
//! its first batch is taken whatever its sequence (the SDK resends unacknowledged batches one at
//! a time after a reconnect, so the first one it sends is the oldest). A replicated partition's
//! state machine keeps it as part of its state (and snapshots), built by applying the committed
//! batches in order, so every replica holds the same table.

use std::collections::{HashMap, VecDeque};

use sidestream_log::batch::ProducerState;

/// Batches remembered per producer for duplicate answers (Kafka keeps five).
const REMEMBERED: usize = 8;

/// Producers remembered per partition; past it the one idle longest is forgotten (it is new
/// again if it comes back, as after a restart).
const MAX_PRODUCERS: usize = 10_000;

/// What the table says about a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sequence {
    /// Not idempotent (producer id -1) or the expected batch: append it.
    Append,
    /// Appended before, at these offsets.
    Duplicate((u64, u64)),
    /// Before the next expected sequence but not one of the batches remembered: too old to
    /// tell, or a producer that reused its sequences.
    Stale { expected: i32 },
    /// A batch before it has not arrived yet.
    Early { expected: i32 },
    /// An older epoch of a producer that has a newer one.
    Fenced { current: i16 },
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Producer {
    /// When it last appended, in appends of this partition.
    last_used: u64,
    epoch: i16,
    next_sequence: i32,
    /// (base sequence, record count, base offset, next offset) of recent batches.
    recent: VecDeque<(i32, u32, u64, u64)>,
}

/// Per-partition state of idempotent producers.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Producers {
    by_id: HashMap<i64, Producer>,
    appends: u64,
}

impl Producers {
    /// Where a batch from `producer` with `count` records stands.
    pub(crate) fn check(&self, producer: ProducerState) -> Sequence {
        if producer.producer_id < 0 {
            return Sequence::Append;
        }
        let Some(known) = self.by_id.get(&producer.producer_id) else {
            return Sequence::Append;
        };
        if producer.producer_epoch < known.epoch {
            return Sequence::Fenced {
                current: known.epoch,
            };
        }
        if producer.producer_epoch > known.epoch || producer.base_sequence == known.next_sequence {
            return Sequence::Append;
        }
        if is_before(producer.base_sequence, known.next_sequence) {
            return known
                .recent
                .iter()
                .find(|(base, ..)| *base == producer.base_sequence)
                .map_or(
                    Sequence::Stale {
                        expected: known.next_sequence,
                    },
                    |&(_, _, base, next)| Sequence::Duplicate((base, next)),
                );
        }
        Sequence::Early {
            expected: known.next_sequence,
        }
    }

    /// As [`check`](Self::check), for a table that survives restarts (a replicated
    /// partition's): a producer it does not know, or a new epoch of one, starts at sequence 0,
    /// so a later batch that overtook the first one waits for it.
    pub(crate) fn check_from_start(&self, producer: ProducerState) -> Sequence {
        if producer.producer_id < 0 || producer.base_sequence == 0 {
            return self.check(producer);
        }
        let new = self
            .by_id
            .get(&producer.producer_id)
            .is_none_or(|known| producer.producer_epoch > known.epoch);
        if new {
            return Sequence::Early { expected: 0 };
        }
        self.check(producer)
    }

    /// Records that a batch checked as [`Sequence::Append`] was appended.
    pub(crate) fn appended(&mut self, producer: ProducerState, count: u32, offsets: (u64, u64)) {
        if producer.producer_id < 0 {
            return;
        }
        self.appends += 1;
        if self.by_id.len() >= MAX_PRODUCERS && !self.by_id.contains_key(&producer.producer_id) {
            let idlest = self
                .by_id
                .iter()
                .min_by_key(|(_, p)| p.last_used)
                .map(|(id, _)| *id);
            if let Some(id) = idlest {
                self.by_id.remove(&id);
            }
        }
        let now = self.appends;
        let entry = self
            .by_id
            .entry(producer.producer_id)
            .or_insert_with(|| Producer {
                last_used: now,
                epoch: producer.producer_epoch,
                next_sequence: producer.base_sequence,
                recent: VecDeque::new(),
            });
        entry.last_used = now;
        if producer.producer_epoch != entry.epoch {
            entry.epoch = producer.producer_epoch;
            entry.recent.clear();
        }
        #[expect(
            clippy::cast_possible_wrap,
            reason = "sequences wrap around at i32::MAX, as Kafka's do"
        )]
        let next = producer.base_sequence.wrapping_add(count as i32);
        entry.next_sequence = next & i32::MAX;
        if entry.recent.len() == REMEMBERED {
            entry.recent.pop_front();
        }
        entry
            .recent
            .push_back((producer.base_sequence, count, offsets.0, offsets.1));
    }
}

/// Whether sequence `a` comes before `b`, with wrap-around at `i32::MAX` (the distance is
/// taken the short way round).
fn is_before(a: i32, b: i32) -> bool {
    let distance = b.wrapping_sub(a) & i32::MAX;
    distance != 0 && distance < (1 << 30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn producer(id: i64, epoch: i16, seq: i32) -> ProducerState {
        ProducerState {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn sequences_must_follow_on() {
        let mut table = Producers::default();
        assert_eq!(table.check(producer(-1, -1, -1)), Sequence::Append);
        assert_eq!(table.check(producer(7, 0, 5)), Sequence::Append);
        table.appended(producer(7, 0, 5), 3, (0, 3));
        assert_eq!(table.check(producer(7, 0, 8)), Sequence::Append);
        assert_eq!(
            table.check(producer(7, 0, 9)),
            Sequence::Early { expected: 8 }
        );
        assert_eq!(table.check(producer(7, 0, 5)), Sequence::Duplicate((0, 3)));
        assert_eq!(
            table.check(producer(7, 0, 2)),
            Sequence::Stale { expected: 8 }
        );
        table.appended(producer(7, 1, 0), 1, (3, 4));
        assert_eq!(
            table.check(producer(7, 0, 1)),
            Sequence::Fenced { current: 1 }
        );
        assert_eq!(table.check(producer(7, 1, 1)), Sequence::Append);
    }

    #[test]
    fn a_durable_table_makes_a_new_producer_start_at_sequence_zero() {
        let mut table = Producers::default();
        assert_eq!(
            table.check_from_start(producer(7, 0, 3)),
            Sequence::Early { expected: 0 }
        );
        assert_eq!(table.check_from_start(producer(7, 0, 0)), Sequence::Append);
        table.appended(producer(7, 0, 0), 3, (0, 3));
        assert_eq!(table.check_from_start(producer(7, 0, 3)), Sequence::Append);
        assert_eq!(
            table.check_from_start(producer(7, 1, 5)),
            Sequence::Early { expected: 0 }
        );
        assert_eq!(
            table.check_from_start(producer(-1, -1, -1)),
            Sequence::Append
        );
    }

    #[test]
    fn the_idlest_producer_is_forgotten_past_the_limit() {
        let mut table = Producers::default();
        for id in 0..i64::try_from(MAX_PRODUCERS).unwrap() {
            table.appended(producer(id, 0, 0), 1, (0, 1));
        }
        table.appended(producer(0, 0, 1), 1, (1, 2));
        table.appended(producer(-5, 0, 0), 1, (2, 3));
        table.appended(producer(99_999, 0, 0), 1, (3, 4));
        assert_eq!(table.by_id.len(), MAX_PRODUCERS);
        assert!(!table.by_id.contains_key(&1), "producer 1 was idle longest");
        assert!(table.by_id.contains_key(&0) && table.by_id.contains_key(&99_999));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut table = Producers::default();
        table.appended(producer(1, 0, i32::MAX - 1), 3, (0, 3));
        assert_eq!(table.check(producer(1, 0, 1)), Sequence::Append);
        assert_eq!(
            table.check(producer(1, 0, i32::MAX - 1)),
            Sequence::Duplicate((0, 3))
        );
    }
}
