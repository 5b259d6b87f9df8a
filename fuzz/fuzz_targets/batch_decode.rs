//! Arbitrary bytes through the batch decoder: never a panic, and a batch that validates
//! decodes and re-encodes to exactly its bytes.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sidestream_log::RecordBatch;
use sidestream_log::batch::validate;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let valid = validate(&bytes).is_ok();
    match RecordBatch::decode(&bytes) {
        Ok(batch) => {
            assert!(valid, "decode accepted what validate refused");
            let encoded = batch.encode().expect("a decoded batch encodes");
            assert_eq!(encoded, data, "re-encoding changed the bytes");
        }
        Err(_) => assert!(!valid, "validate accepted what decode refused"),
    }
});
