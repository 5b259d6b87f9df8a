//! Crash consistency: run a workload on a fault-injecting file layer that fails after N
//! operations, "crash" (keep what was synced, plus a torn tail), reopen, and check that every
//! append reported durable is there, in order, and that nothing corrupt is served.

use std::path::Path;
use std::sync::Arc;

use proptest::prelude::*;

use super::{config, data_batch, open};
use crate::batch::{self, BatchHeader};
use crate::config::FsyncPolicy;
use crate::log::Log;
use crate::storage::fault::{FaultStorage, Tail};

/// Every batch the log serves, from its start to its end, CRC-checked.
fn all_batches(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = log.state().start_offset;
    loop {
        let fetched = log
            .read(at, 1 << 20)
            .expect("a recovered log serves nothing corrupt");
        if fetched.batches.is_empty() {
            return out;
        }
        for b in &fetched.batches {
            batch::validate(b).expect("served batches are valid");
            out.push(b.to_vec());
        }
        at = fetched.next_offset;
    }
}

/// The batches appended (stamped as the log stamps them) and how many were reported durable.
struct Workload {
    appended: Vec<Vec<u8>>,
    durable: usize,
}

fn run_workload(
    storage: &Arc<FaultStorage>,
    fsync: FsyncPolicy,
    fail_after: u64,
    seed: u64,
    segment_bytes: u64,
) -> Workload {
    let cfg = config(fsync, segment_bytes);
    let Ok(log) = Log::open(storage.clone(), Path::new("/p/orders-0"), cfg) else {
        return Workload {
            appended: Vec::new(),
            durable: 0,
        };
    };
    storage.fail_after(fail_after);
    let mut rng = seed;
    let mut appended = Vec::new();
    let mut durable = 0;
    for i in 0..40u8 {
        rng = rng
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let records = 1 + u32::try_from((rng >> 33) % 4).unwrap();
        let size = usize::try_from((rng >> 40) % 200).unwrap();
        let mut bytes = data_batch(records, size, 1_000, i);
        let Ok(a) = log.append(&bytes) else { break };
        BatchHeader::stamp(&mut bytes, a.base_offset, a.raft);
        appended.push(bytes);
        if !(rng >> 20).is_multiple_of(3) {
            if log.wait_durable(&a).is_err() {
                break;
            }
            if fsync == FsyncPolicy::Always {
                durable = appended.len();
            }
        }
        if (rng >> 25).is_multiple_of(11) && log.roll().is_err() {
            break;
        }
    }
    Workload { appended, durable }
}

fn check_recovered(
    storage: &Arc<FaultStorage>,
    fsync: FsyncPolicy,
    work: &Workload,
    live_entries: bool,
    tail: Tail,
) {
    let crashed = Arc::new(storage.crash_with_entries(live_entries, |_| tail));
    let cfg = config(fsync, 1_000);
    let log = open(&crashed, &cfg);
    let served = all_batches(&log);
    assert!(
        served.len() >= work.durable,
        "lost durable batches: {} served, {} durable",
        served.len(),
        work.durable
    );
    assert!(served.len() <= work.appended.len());
    for (i, (got, want)) in served.iter().zip(&work.appended).enumerate() {
        assert_eq!(got, want, "batch {i} differs");
    }
    // The recovered log accepts appends at the right offset.
    let next = served
        .last()
        .map_or(0, |b| batch::validate(b).unwrap().next_offset());
    let appended = log.append(&data_batch(1, 1, 0, 99)).unwrap();
    assert_eq!(appended.base_offset, next);
}

proptest! {

    #[test]
    fn every_durable_append_survives_any_crash(
        fail_after in 0u64..400,
        seed in any::<u64>(),
        kept in 0usize..600,
        zeroed in any::<bool>(),
        small in any::<bool>(),
        never in prop::bool::weighted(0.25),
        live_entries in any::<bool>(),
    ) {
        // Under `always` every append reported durable must survive; under `never` nothing is
        // promised, but what is served must still be a prefix of what was appended.
        let fsync = if never { FsyncPolicy::Never } else { FsyncPolicy::Always };
        let storage = Arc::new(FaultStorage::new());
        let work = run_workload(&storage, fsync, fail_after, seed, if small { 700 } else { 5_000 });
        let tail = if zeroed { Tail::Zeroed(kept) } else { Tail::Kept(kept) };
        check_recovered(&storage, fsync, &work, live_entries, tail);
        check_recovered(&storage, fsync, &work, live_entries, Tail::Lost);
    }
}

#[test]
fn a_torn_last_batch_is_cut_at_every_byte() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1 << 20);
    let log = open(&storage, &cfg);
    let mut durable = Vec::new();
    for i in 0..5 {
        let mut bytes = data_batch(3, 40, 0, i);
        let a = log.append(&bytes).unwrap();
        log.wait_durable(&a).unwrap();
        BatchHeader::stamp(&mut bytes, a.base_offset, a.raft);
        durable.push(bytes);
    }
    let mut last = data_batch(4, 60, 0, 9);
    let a = log.append(&last).unwrap();
    BatchHeader::stamp(&mut last, a.base_offset, a.raft);
    let active = Path::new("/p/orders-0").join(format!("{:020}.log", 0));
    assert_eq!(storage.unsynced_len(&active), last.len());
    for kept in 0..=last.len() {
        for tail in [Tail::Kept(kept), Tail::Zeroed(kept)] {
            let crashed = Arc::new(storage.crash(|_| tail));
            let log = open(&crashed, &cfg);
            let served = all_batches(&log);
            let whole = matches!(tail, Tail::Kept(n) if n == last.len());
            let mut expected = durable.clone();
            if whole {
                expected.push(last.clone());
            }
            assert_eq!(served, expected, "tail {tail:?}");
            let size: usize = expected.iter().map(Vec::len).sum();
            assert_eq!(log.state().size_bytes, size as u64, "tail {tail:?}");
        }
    }
}

#[test]
fn a_corrupt_byte_in_the_unsynced_tail_is_cut_not_served() {
    let storage = Arc::new(FaultStorage::new());
    let cfg = config(FsyncPolicy::Always, 1 << 20);
    let log = open(&storage, &cfg);
    let a = log.append(&data_batch(2, 40, 0, 1)).unwrap();
    log.wait_durable(&a).unwrap();
    let first_len = data_batch(2, 40, 0, 1).len();
    log.append(&data_batch(2, 40, 0, 2)).unwrap();
    log.append(&data_batch(2, 40, 0, 3)).unwrap();
    let active = Path::new("/p/orders-0").join(format!("{:020}.log", 0));
    // Damage the second batch; the third, intact, must not be served past it.
    storage.corrupt(&active, first_len + 90);
    let crashed = Arc::new(storage.crash(|_| Tail::Kept(usize::MAX)));
    let log = open(&crashed, &cfg);
    assert_eq!(all_batches(&log).len(), 1);
    assert_eq!(log.state().next_offset, 2);
}
