use bytes::Bytes;
use proptest::prelude::*;

use super::*;

fn sample() -> RecordBatch {
    let mut batch = RecordBatch::from_records([
        (
            Some(Bytes::from_static(b"k1")),
            Some(Bytes::from_static(b"hello")),
            1_000,
        ),
        (None, None, 999),
        (Some(Bytes::new()), Some(Bytes::from_static(b"")), 1_500),
    ]);
    if let BatchBody::Records(records) = &mut batch.body {
        records[0].headers.push(RecordHeader {
            key: "type".into(),
            value: Bytes::from_static(b"shop.OrderPlaced.v1"),
        });
    }
    batch
}

#[test]
fn encodes_header_fields_little_endian() {
    let bytes = sample().encode().unwrap();
    let header = BatchHeader::parse(&bytes).unwrap();
    assert_eq!(header.length as usize, bytes.len());
    assert_eq!(header.record_count, 3);
    assert_eq!(header.last_offset_delta, 2);
    assert_eq!(header.first_timestamp, 1_000);
    assert_eq!(header.max_timestamp, 1_500);
    assert_eq!(bytes[28], MAGIC);
    assert_eq!(
        &bytes[8..12],
        &u32::try_from(bytes.len()).unwrap().to_le_bytes()
    );
    assert_eq!(
        &bytes[29..33],
        &crc32c::crc32c(&bytes[CRC_START..]).to_le_bytes()
    );
}

#[test]
fn stamping_keeps_the_crc_valid() {
    let mut bytes = sample().encode().unwrap();
    let raft = RaftLogId { term: 7, index: 42 };
    BatchHeader::stamp(&mut bytes, 1_234, raft);
    let decoded = RecordBatch::decode(&Bytes::from(bytes)).unwrap();
    assert_eq!(decoded.base_offset, 1_234);
    assert_eq!(decoded.raft, raft);
}

#[test]
fn every_flipped_bit_after_the_crc_is_detected() {
    let bytes = sample().encode().unwrap();
    for i in CRC_START..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x01;
        assert!(validate(&bad).is_err(), "flip at byte {i} not detected");
    }
}

#[test]
fn the_crc_check_alone_takes_records_it_does_not_read() {
    let bytes = sample().encode().unwrap();
    assert_eq!(validate_crc(&bytes), validate(&bytes));
    // Records that are not records, under a CRC that matches them: only the full check sees it.
    let mut garbage = bytes.clone();
    for byte in &mut garbage[HEADER_LEN..] {
        *byte = 0xff;
    }
    let crc = crc32c::crc32c(&garbage[CRC_START..]);
    garbage[29..33].copy_from_slice(&crc.to_le_bytes());
    assert!(validate(&garbage).is_err());
    assert!(validate_crc(&garbage).is_ok());
    // A flipped bit is seen by both.
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    assert!(matches!(
        validate_crc(&flipped),
        Err(DecodeError::BadCrc { .. })
    ));
}

#[test]
fn a_batch_checked_before_is_only_measured() {
    let bytes = sample().encode().unwrap();
    let valid = ValidBatch::checked_before(&bytes).unwrap();
    assert_eq!(valid.bytes().len(), bytes.len());
    assert_eq!(*valid.header(), validate(&bytes).unwrap());
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        ValidBatch::checked_before(&longer),
        Err(DecodeError::Truncated { .. })
    ));
    assert!(matches!(
        ValidBatch::checked_before(&bytes[..HEADER_LEN - 1]),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn control_batches_take_no_offsets() {
    let batch = RecordBatch::control(ControlKind::Membership, 5, Bytes::from_static(b"{}"));
    let bytes = Bytes::from(batch.encode().unwrap());
    let header = validate(&bytes).unwrap();
    assert!(header.control);
    assert_eq!(header.offset_count(), 0);
    assert_eq!(RecordBatch::decode(&bytes).unwrap(), batch);
}

#[test]
fn rejects_what_cannot_encode() {
    assert_eq!(
        RecordBatch::from_records([]).encode(),
        Err(EncodeError::Empty)
    );
    let mut batch = sample();
    if let BatchBody::Records(records) = &mut batch.body {
        records[1].offset_delta = 0;
    }
    assert_eq!(batch.encode(), Err(EncodeError::OffsetDeltas(1)));
}

#[test]
fn a_quick_scan_of_no_records_finds_none() {
    assert_eq!(record::scan(&[], 0, 5), Some((0, i64::MIN)));
    assert_eq!(
        record::scan(&[0], 0, 5),
        None,
        "a byte after the last record"
    );
    assert_eq!(record::scan(&[], 1, 5), None, "a record missing");
}

#[test]
fn names_what_is_wrong() {
    let bytes = sample().encode().unwrap();
    assert!(matches!(
        validate(&bytes[..10]),
        Err(DecodeError::Truncated {
            needed: HEADER_LEN,
            available: 10
        })
    ));
    let mut bad = bytes.clone();
    bad[28] = 9;
    assert_eq!(validate(&bad), Err(DecodeError::UnknownMagic(9)));
    let mut bad = bytes.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    assert!(matches!(validate(&bad), Err(DecodeError::BadCrc { .. })));
}

#[test]
fn the_builder_sizes_length_prefixes_of_every_width() {
    // Bodies of 1, 2, 3 and 4 varint bytes of length, around each boundary.
    for value_len in [0, 100, 120, 130, 16_370, 16_400, 2_097_140, 2_097_200] {
        let value = vec![b'v'; value_len];
        let headers: [(&str, &[u8]); 1] = [("id", &[7; 16])];
        let mut builder = BatchBuilder::new();
        builder.push(5, Some(b"k"), Some(&value), &headers).unwrap();
        builder.push(9, None, None, &[]).unwrap();
        let records = vec![
            Record {
                offset_delta: 0,
                timestamp: 5,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from(value.clone())),
                headers: vec![RecordHeader {
                    key: "id".into(),
                    value: Bytes::from_static(&[7; 16]),
                }],
            },
            Record {
                offset_delta: 1,
                timestamp: 9,
                key: None,
                value: None,
                headers: Vec::new(),
            },
        ];
        let batch = RecordBatch {
            base_offset: 0,
            raft: RaftLogId::default(),
            compression: Compression::None,
            producer: ProducerState::NONE,
            body: BatchBody::Records(records),
        };
        assert_eq!(
            builder.finish().unwrap(),
            batch.encode().unwrap(),
            "value of {value_len} bytes"
        );
    }
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

fn arb_record() -> impl Strategy<Value = (u32, Record)> {
    (
        1u32..1_000,
        any::<i64>(),
        proptest::option::of(arb_bytes(40)),
        proptest::option::of(arb_bytes(200)),
        // Short names and values take put_header's one-byte-length path, names of 128 bytes
        // or more and long values its varint path; non-ASCII names check_header's UTF-8 one.
        proptest::collection::vec(("[a-zé]{0,8}|[a-z]{126,130}", arb_bytes(200)), 0..4),
    )
        .prop_map(|(gap, timestamp, key, value, headers)| {
            (
                gap,
                Record {
                    offset_delta: 0,
                    timestamp,
                    key,
                    value,
                    headers: headers
                        .into_iter()
                        .map(|(key, value)| RecordHeader { key, value })
                        .collect(),
                },
            )
        })
}

fn arb_batch() -> impl Strategy<Value = RecordBatch> {
    let records = proptest::collection::vec(arb_record(), 1..20).prop_map(|records| {
        let mut delta = 0u32;
        let records = records
            .into_iter()
            .enumerate()
            .map(|(i, (gap, mut r))| {
                if i > 0 {
                    delta += gap;
                }
                r.offset_delta = delta;
                r
            })
            .collect();
        BatchBody::Records(records)
    });
    let control = (0..3u8, any::<i64>(), arb_bytes(100)).prop_map(|(kind, timestamp, payload)| {
        BatchBody::Control(ControlRecord {
            kind: match kind {
                0 => ControlKind::Blank,
                1 => ControlKind::Membership,
                _ => ControlKind::Group,
            },
            timestamp,
            payload,
        })
    });
    (
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<(i64, i16, i32)>(),
        prop_oneof![4 => records, 1 => control],
    )
        .prop_map(
            |(base_offset, term, index, (id, epoch, seq), body)| RecordBatch {
                base_offset,
                raft: RaftLogId { term, index },
                compression: Compression::None,
                producer: ProducerState {
                    producer_id: id,
                    producer_epoch: epoch,
                    base_sequence: seq,
                },
                body,
            },
        )
}

mod proptests {
    use super::*;

    proptest! {
        #[test]
        fn builder_writes_what_encode_writes(
            records in proptest::collection::vec(arb_record(), 1..20),
            (id, epoch, seq) in any::<(i64, i16, i32)>(),
        ) {
            let producer = ProducerState { producer_id: id, producer_epoch: epoch, base_sequence: seq };
            let mut builder = BatchBuilder::with_capacity(64);
            let mut expected = Vec::new();
            for (delta, (_, mut record)) in (0u32..).zip(records) {
                let headers: Vec<(&str, &[u8])> =
                    record.headers.iter().map(|h| (h.key.as_str(), &h.value[..])).collect();
                let before = builder.size();
                if delta % 2 == 0 {
                    builder
                        .push(record.timestamp, record.key.as_deref(), record.value.as_deref(), &headers)
                        .unwrap();
                } else {
                    // Every other record with its headers given encoded, one piece each.
                    let wire: Vec<Vec<u8>> = headers
                        .iter()
                        .map(|(name, value)| {
                            let mut piece = Vec::new();
                            put_header(&mut piece, name, value);
                            piece
                        })
                        .collect();
                    let pieces: Vec<&[u8]> = wire.iter().map(Vec::as_slice).collect();
                    builder
                        .push_wire(
                            record.timestamp,
                            record.key.as_deref(),
                            record.value.as_deref(),
                            headers.len() as u64,
                            &pieces,
                        )
                        .unwrap();
                }
                let bound = BatchBuilder::record_size_bound(
                    record.key.as_deref(), record.value.as_deref(), &headers);
                prop_assert!(builder.size() - before <= bound);
                record.offset_delta = delta;
                expected.push(record);
            }
            builder.set_producer(producer);
            let batch = RecordBatch {
                base_offset: 0,
                raft: RaftLogId::default(),
                compression: Compression::None,
                producer,
                body: BatchBody::Records(expected),
            };
            prop_assert_eq!(builder.finish().unwrap(), batch.encode().unwrap());
        }

        #[test]
        fn decode_inverts_encode(batch in arb_batch()) {
            let bytes = Bytes::from(batch.encode().unwrap());
            prop_assert!(validate(&bytes).is_ok());
            prop_assert_eq!(RecordBatch::decode(&bytes).unwrap(), batch);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in arb_bytes(400)) {
            let _ = validate(&bytes);
            let _ = RecordBatch::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_batches_never_panics(
            batch in arb_batch(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = batch.encode().unwrap();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            let keep = cut.index(bytes.len() + 1);
            let bytes = Bytes::from(bytes).slice(..keep.max(1));
            let _ = validate(&bytes);
            let _ = RecordBatch::decode(&bytes);
        }

        #[test]
        fn parsing_mutated_records_behind_a_valid_crc_never_panics(
            batch in arb_batch(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = batch.encode().unwrap();
            for (at, value) in flips {
                let i = CRC_START + at.index(bytes.len() - CRC_START);
                bytes[i] = value;
            }
            let crc = crc32c::crc32c(&bytes[CRC_START..]);
            bytes[29..33].copy_from_slice(&crc.to_le_bytes());
            let bytes = Bytes::from(bytes);
            if let Ok(header) = validate(&bytes) {
                prop_assert_eq!(header.length as usize, bytes.len());
                prop_assert!(RecordBatch::decode(&bytes).is_ok());
            }
        }

        #[test]
        fn the_quick_record_scan_agrees_with_the_record_iterator(
            batch in arb_batch(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            first_timestamp in any::<i64>(),
            count_change in -2i64..=2,
        ) {
            let mut bytes = batch.encode().unwrap();
            for (at, value) in flips {
                let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
                bytes[i] = value;
            }
            let header = BatchHeader::parse(&bytes).unwrap();
            let body = &bytes[HEADER_LEN..];
            // The count the header claims may be wrong too (each pass takes it as given).
            let count = u32::try_from(
                (i64::from(header.record_count) + count_change).max(0),
            ).unwrap();
            let mut iter = RecordIter::new(body, count);
            let mut full = Some((0, i64::MIN));
            for r in iter.by_ref() {
                match r {
                    Ok(r) => {
                        let (_, max) = full.unwrap();
                        full = Some((
                            r.offset_delta,
                            max.max(first_timestamp.wrapping_add(r.timestamp_delta)),
                        ));
                    }
                    Err(_) => full = None,
                }
            }
            if !iter.at_end() {
                full = None;
            }
            prop_assert_eq!(record::scan(body, count, first_timestamp), full);
        }

        #[test]
        fn valid_after_mutation_means_crc_was_recomputed_or_untouched(
            batch in arb_batch(),
            at in any::<prop::sample::Index>(),
        ) {
            let mut bytes = batch.encode().unwrap();
            let i = CRC_START + at.index(bytes.len() - CRC_START);
            bytes[i] ^= 0x80;
            prop_assert!(validate(&bytes).is_err());
        }
    }
}
