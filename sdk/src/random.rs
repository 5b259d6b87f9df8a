//! Fast random numbers for ids that must be unique, not secret: event ids, trace ids and
//! producer ids.
//!
//! Each thread runs a `SplitMix64` generator seeded once from the operating system (through
//! `uuid`'s v4 generator, which uses `getrandom`), so the hot publish path makes no system call
//! per event. Two threads' streams are independent 64-bit seeds apart; collisions between the
//! 74 random bits of a UUID v7 within one millisecond are as unlikely as with OS randomness.

use std::cell::Cell;

/// A random 64-bit number.
pub(crate) fn random_u64() -> u64 {
    STATE.with(|state| {
        let next = state.get().wrapping_add(GOLDEN_GAMMA);
        state.set(next);
        mix(next)
    })
}

/// Fills `out` with random bytes (one thread-local access, however long `out` is).
pub(crate) fn fill(out: &mut [u8]) {
    STATE.with(|state| {
        let mut next = state.get();
        // Whole words first: fixed-size copies, no call to `memcpy` per word.
        let mut words = out.chunks_exact_mut(8);
        for word in &mut words {
            next = next.wrapping_add(GOLDEN_GAMMA);
            word.copy_from_slice(&mix(next).to_le_bytes());
        }
        let rest = words.into_remainder();
        if !rest.is_empty() {
            next = next.wrapping_add(GOLDEN_GAMMA);
            rest.copy_from_slice(&mix(next).to_le_bytes()[..rest.len()]);
        }
        state.set(next);
    });
}

/// `SplitMix64`'s output function.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A random producer id: positive (never 0 or negative, which mean "none" on the wire).
pub(crate) fn producer_id() -> i64 {
    // Fresh OS randomness rather than the thread's stream: two clients started on the same
    // thread must not share ids.
    let (high, _) = uuid::Uuid::new_v4().as_u64_pair();
    (high >> 1).cast_signed().max(1)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

thread_local! {
    static STATE: Cell<u64> = Cell::new(uuid::Uuid::new_v4().as_u64_pair().0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_differ() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
    }

    #[test]
    fn fill_covers_odd_lengths() {
        // Whole words and the tail alike: no byte stays zero in every one of many fills.
        let mut seen = [0u8; 13];
        for _ in 0..64 {
            let mut out = [0u8; 13];
            fill(&mut out);
            for (seen, byte) in seen.iter_mut().zip(out) {
                *seen |= byte;
            }
        }
        assert!(seen.iter().all(|&bits| bits != 0), "{seen:?}");
    }

    #[test]
    fn producer_ids_are_positive_and_distinct() {
        let ids: Vec<i64> = (0..100).map(|_| producer_id()).collect();
        assert!(ids.iter().all(|&id| id > 0));
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
    }
}
