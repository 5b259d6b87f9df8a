//! Arbitrary bytes as the files of a partition directory: opening the log, reading it to the
//! end and appending must never panic, and what is served must be valid, dense batches.
//!
//! Input: one flags byte (bit 0: fsync `never`; bit 1: two segments, the first with an index),
//! then for two segments the lengths of the first segment and of its index (u16 LE each),
//! then the files' bytes.
#![no_main]

use std::sync::Arc;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sidestream_log::batch::validate;
use sidestream_log::{FileStorage, FsyncPolicy, Log, LogConfig, RecordBatch};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let name = |base: u64, ext: &str| dir.path().join(format!("{base:020}.{ext}"));
    if flags & 2 == 0 {
        std::fs::write(name(0, "log"), rest).expect("write segment");
    } else {
        let (Some(lens), Some(files)) = (rest.get(..4), rest.get(4..)) else {
            return;
        };
        let first = usize::from(u16::from_le_bytes([lens[0], lens[1]])).min(files.len());
        let index = usize::from(u16::from_le_bytes([lens[2], lens[3]])).min(files.len() - first);
        let (log0, files) = files.split_at(first);
        let (index0, log1) = files.split_at(index);
        // The second segment's base offset: what the first would lead to if it were whole.
        let base1 = first_next_offset(log0);
        std::fs::write(name(0, "log"), log0).expect("write segment");
        std::fs::write(name(0, "index"), index0).expect("write index");
        if base1 > 0 {
            std::fs::write(name(base1, "log"), log1).expect("write segment");
        }
    }
    let config = LogConfig {
        fsync: if flags & 1 == 0 {
            FsyncPolicy::Always
        } else {
            FsyncPolicy::Never
        },
        ..LogConfig::default()
    };
    let Ok(log) = Log::open(Arc::new(FileStorage), dir.path(), config) else {
        return;
    };
    let state = log.state();
    let mut at = state.start_offset;
    while let Ok(fetched) = log.read(at, 1 << 16) {
        if fetched.batches.is_empty() {
            break;
        }
        for batch in &fetched.batches {
            let header = validate(batch).expect("served batches are valid");
            assert!(
                header.next_offset() > at,
                "served a batch below the read offset"
            );
        }
        at = fetched.next_offset;
    }
    let batch = RecordBatch::from_records([(None, Some(Bytes::from_static(b"x")), 0)]);
    if let Ok(appended) = log.append(&batch.encode().expect("encode")) {
        assert_eq!(appended.base_offset, state.next_offset);
    }
});

/// The offset after the valid batches at the start of `log`.
fn first_next_offset(mut log: &[u8]) -> u64 {
    let mut next = 0;
    while let Ok(header) = sidestream_log::BatchHeader::parse(log) {
        let Some(rest) = log.get(header.length as usize..) else {
            break;
        };
        next = header.next_offset();
        log = rest;
    }
    next
}
