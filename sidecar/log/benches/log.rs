//! Micro benches of `sidestream-log`: the batch codec, CRC, sparse-index lookup, append under
//! each fsync policy, group commit and sequential reads.
//!
//! ```text
//! cargo bench -p sidestream-log --bench log                  # everything (~2 min)
//! cargo bench -p sidestream-log --bench log -- append/       # one group
//! cargo bench -p sidestream-log --bench log -- 'append/batch_1MiB/never'
//! SIDESTREAM_BENCH_READ_MB=256 cargo bench -p sidestream-log --bench log -- read_sequential
//! ```
//!
//! Every record has a 16-byte key and a 100-byte value. Logs live in temporary directories on
//! the real file system (`$TMPDIR`, default `/tmp`); append benches start a fresh log once one
//! has taken [`RECYCLE_BYTES`], outside the timed region, so a run writes a few GiB at most.

// A bench is not library code: it should stop at the first setup failure, and the workspace
// lints that forbid `unwrap`/`expect` are meant for code that handles untrusted input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench setup fails fast"
)]

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use sidestream_log::{FileStorage, FsyncPolicy, Log, LogConfig, RecordBatch, batch};
use tempfile::TempDir;

criterion_group!(
    benches,
    bench_batch,
    bench_crc32c,
    bench_index_lookup,
    bench_append,
    bench_group_commit,
    bench_read_sequential,
);
criterion_main!(benches);

/// `batch_encode`, `batch_decode` and `batch_validate` for batches of 1, 100 and 1000 records.
fn bench_batch(c: &mut Criterion) {
    let sizes = [1, 100, 1000];
    let mut group = c.benchmark_group("batch_encode");
    quick(&mut group);
    for n in sizes {
        let batch = batch_of(n);
        group.throughput(Throughput::Bytes(len_u64(&encoded(n))));
        group.bench_with_input(BenchmarkId::from_parameter(n), &batch, |b, batch| {
            b.iter(|| black_box(batch).encode().unwrap());
        });
    }
    group.finish();

    let mut group = c.benchmark_group("batch_decode");
    quick(&mut group);
    for n in sizes {
        let bytes = encoded(n);
        group.throughput(Throughput::Bytes(len_u64(&bytes)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| RecordBatch::decode(black_box(bytes)).unwrap());
        });
    }
    group.finish();

    let mut group = c.benchmark_group("batch_validate");
    quick(&mut group);
    for n in sizes {
        let bytes = encoded(n);
        group.throughput(Throughput::Bytes(len_u64(&bytes)));
        group.bench_with_input(BenchmarkId::from_parameter(n), &bytes, |b, bytes| {
            b.iter(|| batch::validate(black_box(bytes)).unwrap());
        });
    }
    group.finish();
}

/// `crc32c` over 4 KiB, 64 KiB and 1 MiB.
fn bench_crc32c(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    quick(&mut group);
    for (label, len) in [("4KiB", 4 << 10), ("64KiB", 64 << 10), ("1MiB", MIB)] {
        let data = random_bytes(len, 7);
        group.throughput(Throughput::Bytes(len_u64(&data)));
        group.bench_with_input(BenchmarkId::from_parameter(label), &data, |b, data| {
            b.iter(|| crc32c::crc32c(black_box(data)));
        });
    }
    group.finish();
}

/// `Log::read(random offset, 1)` in one segment of 100k single-record batches: a binary search
/// of the sparse offset index, then a positional read and a scan to the batch.
fn bench_index_lookup(c: &mut Criterion) {
    const BATCHES: u64 = 100_000;
    let mut group = c.benchmark_group("index_lookup");
    quick(&mut group);
    group.throughput(Throughput::Elements(1));
    // Built on first use, so that runs filtered to other groups skip it.
    let mut built: Option<(Log, TempDir)> = None;
    let mut rng = Prng(42);
    group.bench_function(BenchmarkId::from_parameter(BATCHES), |b| {
        let (log, _) = built.get_or_insert_with(|| {
            let dir = temp_dir();
            let log = open_log(&dir, FsyncPolicy::Never, LogConfig::default().segment_bytes);
            let one = encoded(1);
            for _ in 0..BATCHES {
                log.append(&one).unwrap();
            }
            log.sync().unwrap();
            assert_eq!(log.state().segment_count, 1);
            (log, dir)
        });
        let end = log.state().next_offset;
        b.iter(|| {
            let fetched = log.read(rng.below(end), 1).unwrap();
            assert_eq!(fetched.batches.len(), 1);
            fetched
        });
    });
    group.finish();
}

/// Append followed by `wait_durable`, under each fsync policy: (a) 1000 single-record batches in
/// a row per iteration, (b) one batch of just under 1 MiB per iteration.
fn bench_append(c: &mut Criterion) {
    let small = encoded(1);
    let big = encoded(records_per_mib());
    let mut group = c.benchmark_group("append");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for policy in POLICIES {
        const ROUNDS: u64 = 1000;
        let mut rig = Rig::new(policy);
        group.throughput(Throughput::Elements(ROUNDS));
        group.bench_function(BenchmarkId::new("single_record_x1000", policy), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let log = rig.log();
                    let start = Instant::now();
                    for _ in 0..ROUNDS {
                        let appended = log.append(&small).unwrap();
                        log.wait_durable(&appended).unwrap();
                    }
                    elapsed += start.elapsed();
                    rig.wrote(ROUNDS * len_u64(&small));
                }
                elapsed
            });
        });
    }
    for policy in POLICIES {
        let mut rig = Rig::new(policy);
        group.throughput(Throughput::Bytes(len_u64(&big)));
        group.bench_function(BenchmarkId::new("batch_1MiB", policy), |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                for _ in 0..iters {
                    let log = rig.log();
                    let start = Instant::now();
                    let appended = log.append(&big).unwrap();
                    log.wait_durable(&appended).unwrap();
                    elapsed += start.elapsed();
                    rig.wrote(len_u64(&big));
                }
                elapsed
            });
        });
    }
    group.finish();
}

/// `FsyncPolicy::Always` with concurrent appender threads, each appending a batch and waiting
/// for it to be durable; concurrent waiters share one `fdatasync` (group commit). Two shapes:
/// 100-record batches (throughput in records) with 1 and 8 appenders, and ~1 MiB batches
/// (throughput in bytes) with 1, 2 and 4 appenders.
fn bench_group_commit(c: &mut Criterion) {
    const RECORDS: usize = 100;
    let small = encoded(RECORDS);
    let big = encoded(records_per_mib());
    let mut group = c.benchmark_group("group_commit");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
    let cases = [
        ("100x100B", &small, 400, [1, 8].as_slice()),
        ("1MiB", &big, 32, [1, 2, 4].as_slice()),
    ];
    for (shape, batch, batches_per_iter, thread_counts) in cases {
        let per_iter = u64::try_from(batches_per_iter).unwrap();
        group.throughput(if shape == "1MiB" {
            Throughput::Bytes(per_iter * len_u64(batch))
        } else {
            Throughput::Elements(per_iter * u64::try_from(RECORDS).unwrap())
        });
        for &threads in thread_counts {
            let mut rig = Rig::new(FsyncPolicy::Always);
            let per_thread = batches_per_iter / threads;
            let id = BenchmarkId::new(format!("{shape}/appenders"), threads);
            group.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let log = rig.log();
                        let ready = Barrier::new(threads + 1);
                        let start = std::thread::scope(|scope| {
                            for _ in 0..threads {
                                scope.spawn(|| {
                                    ready.wait();
                                    for _ in 0..per_thread {
                                        let appended = log.append(batch).unwrap();
                                        log.wait_durable(&appended).unwrap();
                                    }
                                });
                            }
                            ready.wait();
                            Instant::now()
                        });
                        elapsed += start.elapsed();
                        rig.wrote(per_iter * len_u64(batch));
                    }
                    elapsed
                });
            });
        }
    }
    group.finish();
}

/// Reads a whole log (`SIDESTREAM_BENCH_READ_MB` MiB, default 1024, of ~1 MiB batches) from
/// offset 0 with `Log::read(offset, 1 MiB)`, following `next_offset`. The log is built and
/// synced first, so its pages are clean and in the page cache.
fn bench_read_sequential(c: &mut Criterion) {
    let mb: u64 = std::env::var("SIDESTREAM_BENCH_READ_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let big = encoded(records_per_mib());
    let total = mb * len_u64(&big);
    let mut group = c.benchmark_group("read_sequential");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(6));
    group.throughput(Throughput::Bytes(total));
    // Built on first use, so that runs filtered to other groups skip it.
    let mut built: Option<(Log, TempDir)> = None;
    group.bench_function(BenchmarkId::from_parameter(format!("{mb}MiB")), |b| {
        let (log, _) = built.get_or_insert_with(|| {
            let dir = temp_dir();
            let log = open_log(&dir, FsyncPolicy::Never, 2 << 30);
            for _ in 0..mb {
                log.append(&big).unwrap();
            }
            log.sync().unwrap();
            (log, dir)
        });
        let end = log.state().next_offset;
        b.iter(|| {
            let (mut offset, mut read) = (0, 0);
            while offset < end {
                let fetched = log.read(offset, MIB).unwrap();
                read += fetched.batches.iter().map(len_u64).sum::<u64>();
                offset = fetched.next_offset;
            }
            assert_eq!(read, total);
        });
    });
    group.finish();
}

/// An append target: a log in its own temporary directory, replaced by a fresh one (outside the
/// timed region) once it holds [`RECYCLE_BYTES`], so that the disk does not fill.
struct Rig {
    policy: FsyncPolicy,
    log: Option<(Log, TempDir)>,
    written: u64,
}

impl Rig {
    fn new(policy: FsyncPolicy) -> Self {
        Self {
            policy,
            log: None,
            written: 0,
        }
    }

    fn log(&mut self) -> &Log {
        if self.written >= RECYCLE_BYTES {
            self.log = None;
            self.written = 0;
        }
        let policy = self.policy;
        let (log, _) = self.log.get_or_insert_with(|| {
            let dir = temp_dir();
            (open_log(&dir, policy, SEGMENT_BYTES), dir)
        });
        log
    }

    fn wrote(&mut self, bytes: u64) {
        self.written += bytes;
    }
}

fn quick(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
}

fn open_log(dir: &TempDir, fsync: FsyncPolicy, segment_bytes: u64) -> Log {
    let config = LogConfig {
        fsync,
        segment_bytes,
        ..LogConfig::default()
    };
    Log::open(Arc::new(FileStorage), dir.path(), config).unwrap()
}

fn temp_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("sidestream-log-bench-")
        .tempdir()
        .unwrap()
}

/// A data batch of `n` records: 16-byte keys, 100-byte random values, timestamps 1 ms apart.
fn batch_of(n: usize) -> RecordBatch {
    let values = random_bytes(n * VALUE_LEN, 1);
    let first = 1_700_000_000_000_i64;
    RecordBatch::from_records((0..n).map(|i| {
        let key = format!("key-{i:012}");
        debug_assert_eq!(key.len(), KEY_LEN);
        let value = values.slice(i * VALUE_LEN..(i + 1) * VALUE_LEN);
        (
            Some(Bytes::from(key)),
            Some(value),
            first + i64::try_from(i).unwrap(),
        )
    }))
}

fn encoded(n: usize) -> Bytes {
    Bytes::from(batch_of(n).encode().unwrap())
}

/// The most records whose batch fits in 1 MiB (about 8,500).
fn records_per_mib() -> usize {
    let (mut lo, mut hi) = (1, MIB / VALUE_LEN);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if encoded(mid).len() <= MIB {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

fn random_bytes(len: usize, seed: u64) -> Bytes {
    let mut rng = Prng(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn len_u64(bytes: &Bytes) -> u64 {
    u64::try_from(bytes.len()).unwrap()
}

/// splitmix64: a seeded, good-enough generator for offsets and filler bytes.
struct Prng(u64);

impl Prng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`; the modulo bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const POLICIES: [FsyncPolicy; 3] = [
    FsyncPolicy::Always,
    FsyncPolicy::Interval(Duration::from_millis(100)),
    FsyncPolicy::Never,
];
const KEY_LEN: usize = 16;
const VALUE_LEN: usize = 100;
const MIB: usize = 1 << 20;
/// Segment size for the append benches: small enough that rolls are part of the figures.
const SEGMENT_BYTES: u64 = 64 << 20;
/// Bytes an append bench writes to one log before starting a fresh one.
const RECYCLE_BYTES: u64 = 256 << 20;
