//! Choosing an event's partition: Kafka's default partitioner, fixed forever.
//!
//! A keyed event goes to `(murmur2(key) & 0x7fffffff) % partitions`, where `murmur2` is
//! Kafka's `Utils.murmur2` (`MurmurHash2`, 32 bits, seed `0x9747b28c`). The result is the same as
//! Kafka's default partitioner for the same key bytes, in every SDK version and in the CLI, so
//! events with the same key always land in the same partition of a topic whose partition count
//! does not change.
//!
//! An event without a key goes to the topic's *sticky* partition: the publisher keeps filling
//! one partition's batch until that batch is sent, then moves to the next partition in
//! round-robin order. Unkeyed events so form large batches spread over
//! all partitions.

/// Kafka's `Utils.murmur2`: `MurmurHash2` of `data`, 32 bits, seed `0x9747b28c`.
///
/// ```
/// assert_eq!(sidestream::partitioner::murmur2(b"foobar"), -790_332_482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Kafka XORs the seed with the length as a Java int; lengths past 2^32 cannot occur for
    // keys (the batch limit is far below), and truncating matches Java's behaviour anyway.
    #[allow(clippy::cast_possible_truncation, reason = "Java int semantics")]
    let mut h = SEED ^ (data.len() as u32);
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate().rev() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h.cast_signed()
}

/// The partition of a keyed event: `(murmur2(key) & 0x7fffffff) % partitions`, exactly as
/// Kafka's default partitioner. Returns 0 when `partitions` is 0.
///
/// ```
/// use sidestream::partitioner::partition_for_key;
///
/// assert_eq!(partition_for_key(b"order-17", 1), 0);
/// assert!(partition_for_key(b"order-17", 12) < 12);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    partition_for_hash(murmur2(key), partitions)
}

/// The partition for a [`murmur2`] hash already computed.
pub(crate) fn partition_for_hash(hash: i32, partitions: u32) -> u32 {
    if partitions == 0 {
        return 0;
    }
    (hash.cast_unsigned() & 0x7fff_ffff) % partitions
}

/// The sticky partition of a topic for events without a key.
///
/// Stays on one partition until [`batch_sent`](Self::batch_sent) reports that partition's
/// batch as sent, then moves to the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StickyPartition {
    current: u32,
}

impl StickyPartition {
    /// Starts at `start % partitions`, so that many publishers do not all begin on
    /// partition 0.
    pub(crate) fn new(start: u32, partitions: u32) -> Self {
        Self {
            current: start.checked_rem(partitions).unwrap_or(0),
        }
    }

    /// The partition unkeyed events go to now.
    pub(crate) fn current(self) -> u32 {
        self.current
    }

    /// A batch of `partition` was sealed for sending: if it was the sticky one, move on.
    pub(crate) fn batch_sent(&mut self, partition: u32, partitions: u32) {
        if partition == self.current {
            self.current = (self.current + 1).checked_rem(partitions).unwrap_or(0);
        }
    }

    /// The topic's partition count changed.
    pub(crate) fn resize(&mut self, partitions: u32) {
        self.current = self.current.checked_rem(partitions).unwrap_or(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kafka's `UtilsTest.testMurmur2` vectors, and the ones Akka's port checks against Kafka's
    /// implementation.
    #[test]
    fn murmur2_matches_kafka() {
        let cases: [(&[u8], i32); 11] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (data, expected) in cases {
            assert_eq!(
                murmur2(data),
                expected,
                "murmur2({:?})",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn partition_is_positive_hash_modulo_count() {
        // -790332482 & 0x7fffffff = 1357151166
        assert_eq!(partition_for_key(b"foobar", 10), 1_357_151_166 % 10);
        assert_eq!(partition_for_key(b"foobar", 1), 0);
        assert_eq!(partition_for_key(b"foobar", 0), 0);
        assert_eq!(partition_for_hash(i32::MIN, 7), 0);
        assert_eq!(partition_for_hash(-1, 7), (0x7fff_ffff_u32) % 7);
    }

    #[test]
    fn empty_key_hashes_like_kafka() {
        // An empty key is a key (not "no key"): it has a fixed partition.
        let h = murmur2(b"");
        assert_eq!(h, murmur2(&[]));
        assert_eq!(partition_for_key(b"", 5), partition_for_hash(h, 5));
    }

    #[test]
    fn sticky_moves_round_robin_only_when_its_batch_is_sent() {
        let mut sticky = StickyPartition::new(7, 3);
        assert_eq!(sticky.current(), 1);
        sticky.batch_sent(0, 3);
        assert_eq!(
            sticky.current(),
            1,
            "another partition's batch does not move it"
        );
        sticky.batch_sent(1, 3);
        assert_eq!(sticky.current(), 2);
        sticky.batch_sent(2, 3);
        assert_eq!(sticky.current(), 0);
        sticky.resize(1);
        assert_eq!(sticky.current(), 0);
        let mut none = StickyPartition::new(5, 0);
        none.batch_sent(0, 0);
        assert_eq!(none.current(), 0);
    }
}
