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

/// `sample()`'s header, claiming `count` records from `first_timestamp`.
fn claiming(count: u32, first_timestamp: i64) -> BatchHeader {
    BatchHeader {
        record_count: count,
        first_timestamp,
        ..BatchHeader::parse(&sample().encode().unwrap()).unwrap()
    }
}

#[test]
fn a_quick_scan_of_no_records_finds_none() {
    assert_eq!(record::scan(&claiming(0, 5), &[]), Some((0, i64::MIN)));
    assert_eq!(
        record::scan(&claiming(0, 5), &[0]),
        None,
        "a byte after the last record"
    );
    assert_eq!(record::scan(&claiming(1, 5), &[]), None, "a record missing");
}

/// `pieces` as headers of one piece each.
fn whole<'a>(pieces: &'a [&'a [u8]]) -> HeaderPieces<'a> {
    const ONES: [usize; 64] = [1; 64];
    HeaderPieces {
        pieces,
        per_header: &ONES[..pieces.len()],
    }
}

/// `records` built into a batch whose records share a header, which every other one
/// overrides, and every third replaces.
fn sharing_copy(records: &[Record]) -> Vec<u8> {
    let (x, y) = (wire("s", b"x"), wire("s", b"y"));
    let per_header = &[1];
    let mut builder = BatchBuilder::with_shared_headers(
        0,
        HeaderPieces {
            pieces: &[&x],
            per_header,
        },
    )
    .unwrap();
    for (i, r) in records.iter().enumerate() {
        let own: Vec<Vec<u8>> = r.headers.iter().map(|h| wire(&h.key, &h.value)).collect();
        let own: Vec<&[u8]> = own.iter().map(Vec::as_slice).collect();
        let shareable = HeaderPieces {
            pieces: if i % 2 == 0 { &[&x[..]] } else { &[&y[..]] },
            per_header,
        };
        // Every third record starts a section of its own.
        let push = if i % 3 == 2 {
            BatchBuilder::push_resharing
        } else {
            BatchBuilder::push_sharing
        };
        push(
            &mut builder,
            r.timestamp,
            r.key.as_deref(),
            r.value.as_deref(),
            whole(&own),
            shareable,
        )
        .unwrap();
    }
    builder.finish().unwrap()
}

/// One header in wire form.
fn wire(name: &str, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_header(&mut out, name, value);
    out
}

#[test]
fn records_have_the_shared_headers_they_do_not_override() {
    let (type_a, source, trace_1) = (
        wire("type", b"shop.OrderPlaced.v1"),
        wire("source", b"order-service"),
        wire("traceparent", b"trace-1"),
    );
    let (type_b, trace_2) = (
        wire("type", b"shop.OrderPaid.v1"),
        wire("traceparent", b"trace-2"),
    );
    let per_header = &[1, 1, 1];
    let shared = HeaderPieces {
        pieces: &[&type_a, &source, &trace_1],
        per_header,
    };
    let mut builder = BatchBuilder::with_shared_headers(0, shared).unwrap();
    let ids: Vec<Vec<u8>> = (0..3u8).map(|i| wire("id", &[i])).collect();
    // All shared; another trace; another type and trace.
    builder
        .push_sharing(10, None, Some(b"a"), whole(&[&ids[0]]), shared)
        .unwrap();
    let other_trace = HeaderPieces {
        pieces: &[&type_a, &source, &trace_2],
        per_header,
    };
    builder
        .push_sharing(11, Some(b"k"), Some(b"b"), whole(&[&ids[1]]), other_trace)
        .unwrap();
    // The type in two pieces: its prefix and its value.
    let (prefix, value) = type_b.split_at(6);
    let other_type = HeaderPieces {
        pieces: &[prefix, value, &source, &trace_2],
        per_header: &[2, 1, 1],
    };
    builder
        .push_sharing(12, None, Some(b"c"), whole(&[&ids[2]]), other_type)
        .unwrap();
    assert_eq!(
        builder.push_sharing(
            13,
            None,
            None,
            whole(&[]),
            HeaderPieces {
                pieces: &[&source],
                per_header: &[1]
            }
        ),
        Err(EncodeError::SharedHeaders(1)),
        "one header to share for each the batch shares"
    );
    let bytes = Bytes::from(builder.finish().unwrap());
    let header = validate(&bytes).unwrap();
    assert!(header.shared_headers);
    assert_eq!(bytes[33] & 0x20, 0x20, "attribute bit 5");

    let headers = |i: usize| -> Vec<(String, Vec<u8>)> {
        let BatchBody::Records(records) = RecordBatch::decode(&bytes).unwrap().body else {
            panic!("a data batch");
        };
        records[i]
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.to_vec()))
            .collect()
    };
    let h = |name: &str, value: &[u8]| (name.to_owned(), value.to_vec());
    assert_eq!(
        headers(0),
        [
            h("id", &[0]),
            h("type", b"shop.OrderPlaced.v1"),
            h("source", b"order-service"),
            h("traceparent", b"trace-1"),
        ]
    );
    assert_eq!(
        headers(1),
        [
            h("id", &[1]),
            h("traceparent", b"trace-2"),
            h("type", b"shop.OrderPlaced.v1"),
            h("source", b"order-service"),
        ]
    );
    assert_eq!(
        headers(2),
        [
            h("id", &[2]),
            h("type", b"shop.OrderPaid.v1"),
            h("traceparent", b"trace-2"),
            h("source", b"order-service"),
        ]
    );
    // The quick pass sees the same records.
    let body = &bytes[HEADER_LEN..];
    let mut walked = Vec::new();
    assert!(walk(&header, body, |r| walked.push(r.headers().count())));
    assert_eq!(walked, [4, 4, 4]);
}

#[test]
fn a_record_may_start_new_shared_headers() {
    let (type_a, source) = (wire("type", b"A"), wire("source", b"S"));
    let trace_1 = wire("traceparent", b"T1");
    let offer = |trace: &'static [u8]| {
        [
            wire("type", b"A"),
            wire("source", b"S"),
            wire("traceparent", trace),
        ]
    };
    let per_header = &[1, 1, 1];
    let first = [&type_a[..], &source, &trace_1];
    let shared = HeaderPieces {
        pieces: &first,
        per_header,
    };
    let mut builder = BatchBuilder::with_shared_headers(0, shared).unwrap();
    let ids: Vec<Vec<u8>> = (0..4u8).map(|i| wire("id", &[i])).collect();
    let (t1, t2) = (offer(b"T1"), offer(b"T2"));
    let (t1, t2): ([&[u8]; 3], [&[u8]; 3]) = ([&t1[0], &t1[1], &t1[2]], [&t2[0], &t2[1], &t2[2]]);
    let with = |pieces| HeaderPieces { pieces, per_header };
    builder
        .push_sharing(0, None, Some(b"a"), whole(&[&ids[0]]), with(&t1))
        .unwrap();
    // Another trace, for this record and the next ones: a new section, at most 2 bytes more
    // than the record with all its headers.
    let before = builder.size();
    builder
        .push_resharing(1, None, Some(b"b"), whole(&[&ids[1]]), with(&t2))
        .unwrap();
    let all: [(&str, &[u8]); 4] = [
        ("id", &[1]),
        ("type", b"A"),
        ("source", b"S"),
        ("traceparent", b"T2"),
    ];
    assert!(builder.size() - before <= BatchBuilder::record_size_bound(None, Some(b"b"), &all) + 2);
    let before = builder.size();
    builder
        .push_sharing(2, None, Some(b"c"), whole(&[&ids[2]]), with(&t2))
        .unwrap();
    let id_only = builder.size() - before;
    // The first trace again, as its own.
    builder
        .push_sharing(3, None, Some(b"d"), whole(&[&ids[3]]), with(&t1))
        .unwrap();
    // Resharing what is shared already starts nothing.
    let before = builder.size();
    builder
        .push_resharing(4, None, Some(b"c"), whole(&[&ids[2]]), with(&t2))
        .unwrap();
    assert_eq!(builder.size() - before, id_only);
    let bytes = Bytes::from(builder.finish().unwrap());
    let header = validate(&bytes).unwrap();

    let BatchBody::Records(records) = RecordBatch::decode(&bytes).unwrap().body else {
        panic!("a data batch");
    };
    let values = |i: usize| -> Vec<Vec<u8>> {
        records[i]
            .headers
            .iter()
            .map(|h| h.value.to_vec())
            .collect()
    };
    let v = |s: &[u8]| s.to_vec();
    assert_eq!(values(0), [v(&[0]), v(b"A"), v(b"S"), v(b"T1")]);
    assert_eq!(values(1), [v(&[1]), v(b"A"), v(b"S"), v(b"T2")]);
    assert_eq!(values(2), [v(&[2]), v(b"A"), v(b"S"), v(b"T2")]);
    assert_eq!(values(3), [v(&[3]), v(b"T1"), v(b"A"), v(b"S")]);
    assert_eq!(values(4), [v(&[2]), v(b"A"), v(b"S"), v(b"T2")]);
    let body = &bytes[HEADER_LEN..];
    let mut walked = Vec::new();
    assert!(walk(&header, body, |r| walked
        .push(r.headers().last().map(|(_, value)| value.to_vec()))));
    assert_eq!(
        walked,
        [
            Some(v(b"T1")),
            Some(v(b"T2")),
            Some(v(b"T2")),
            Some(v(b"S")),
            Some(v(b"T2"))
        ]
    );

    // A section's mark where a record's length would be, in a batch without shared headers, is
    // a record of length 0: malformed.
    let mut plain = BatchBuilder::new();
    plain.push(1, None, Some(b"v"), &[]).unwrap();
    let mut plain = plain.finish().unwrap();
    plain.insert(HEADER_LEN, 0);
    plain.insert(HEADER_LEN + 1, 0);
    let length = u32::try_from(plain.len()).unwrap();
    plain[8..12].copy_from_slice(&length.to_le_bytes());
    let crc = crc32c::crc32c(&plain[CRC_START..]);
    plain[29..33].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        validate(&plain),
        Err(DecodeError::BadRecord { .. })
    ));
}

#[test]
fn shared_headers_lie_as_storage_md_says() {
    let (x, y, id) = (wire("s", b"x"), wire("s", b"y"), wire("i", b"1"));
    let (x, y) = ([&x[..]], [&y[..]]);
    let mut builder = BatchBuilder::with_shared_headers(0, whole(&x)).unwrap();
    builder
        .push_sharing(5, None, Some(b"a"), whole(&[&id]), whole(&x))
        .unwrap();
    builder
        .push_resharing(5, None, Some(b"b"), whole(&[&id]), whole(&y))
        .unwrap();
    let bytes = builder.finish().unwrap();
    assert_eq!(bytes[33..35], [0x20, 0], "attribute bit 5");
    #[rustfmt::skip]
    let body: &[u8] = &[
        // A section of 1 header: s = x.
        1, 1, b's', 1, b'x',
        // A record of 11 bytes: attributes, timestamp and offset deltas 0, no key (-1), a
        // value of 1 byte, 1 header: i = 1.
        11, 0, 0, 0, 1, 2, b'a', 1, 1, b'i', 1, b'1',
        // A new section: s = y.
        0, 1, 1, b's', 1, b'y',
        // The next record, at offset delta 1.
        11, 0, 0, 1, 1, 2, b'b', 1, 1, b'i', 1, b'1',
    ];
    assert_eq!(&bytes[HEADER_LEN..], body);
}

#[test]
fn shared_headers_take_less_room() {
    let (source, trace) = (
        wire("source", b"order-service"),
        wire("traceparent", &[7; 26]),
    );
    let ids: Vec<Vec<u8>> = (0..10u8).map(|i| wire("id", &[i; 16])).collect();
    let shared = HeaderPieces {
        pieces: &[&source, &trace],
        per_header: &[1, 1],
    };
    let mut sharing = BatchBuilder::with_shared_headers(0, shared).unwrap();
    let mut plain = BatchBuilder::new();
    for (timestamp, id) in (10..).zip(&ids) {
        sharing
            .push_sharing(timestamp, None, Some(b"v"), whole(&[id]), shared)
            .unwrap();
        plain
            .push_wire(timestamp, None, Some(b"v"), 3, &[id, &source, &trace])
            .unwrap();
    }
    let (sharing, plain) = (sharing.finish().unwrap(), plain.finish().unwrap());
    // The two headers once, not ten times.
    assert_eq!(
        plain.len() - sharing.len(),
        9 * (source.len() + trace.len()) - 1
    );
    let decoded = |bytes: Vec<u8>| match RecordBatch::decode(&Bytes::from(bytes)).unwrap().body {
        BatchBody::Records(records) => records,
        BatchBody::Control(_) => panic!("a data batch"),
    };
    assert_eq!(decoded(sharing), decoded(plain));
}

#[test]
fn malformed_shared_headers_are_named() {
    let source = wire("source", b"s");
    let shared = HeaderPieces {
        pieces: &[&source],
        per_header: &[1],
    };
    let mut builder = BatchBuilder::with_shared_headers(0, shared).unwrap();
    builder
        .push_sharing(1, None, Some(b"v"), whole(&[]), shared)
        .unwrap();
    let good = builder.finish().unwrap();
    let header = validate(&good).unwrap();
    let body = &good[HEADER_LEN..];
    assert_eq!(split_body(&header, body).unwrap().0.count(), 1);

    // The section claims two headers: the second runs into the record.
    let mut bad = good.clone();
    bad[HEADER_LEN] = 2;
    let crc = crc32c::crc32c(&bad[CRC_START..]);
    bad[29..33].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        validate(&bad),
        Err(DecodeError::BadSharedHeaders(_) | DecodeError::BadRecord { .. })
    ));
    // A name that is not UTF-8.
    let mut bad = good.clone();
    bad[HEADER_LEN + 2] = 0xff;
    let crc = crc32c::crc32c(&bad[CRC_START..]);
    bad[29..33].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(
        validate(&bad),
        Err(DecodeError::BadSharedHeaders("header name is not UTF-8"))
    );
    assert!(matches!(
        RecordIter::new(&BatchHeader::parse(&bad).unwrap(), &bad[HEADER_LEN..]).next(),
        Some(Err(DecodeError::BadSharedHeaders(_)))
    ));
    // A control batch shares nothing.
    let mut control = RecordBatch::control(ControlKind::Blank, 5, Bytes::new())
        .encode()
        .unwrap();
    control[33] |= 0x20;
    assert!(matches!(
        BatchHeader::parse(&control),
        Err(DecodeError::BadControl(_))
    ));
    // No more than 64 shared headers.
    let many = vec![&source[..]; 65];
    assert!(matches!(
        BatchBuilder::with_shared_headers(
            0,
            HeaderPieces {
                pieces: &many,
                per_header: &[1; 65]
            }
        ),
        Err(EncodeError::SharedHeaders(65))
    ));
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
            share in any::<bool>(),
        ) {
            let mut bytes = match (&batch.body, share) {
                (BatchBody::Records(records), true) => sharing_copy(records),
                _ => batch.encode().unwrap(),
            };
            for (at, value) in flips {
                let i = HEADER_LEN + at.index(bytes.len() - HEADER_LEN);
                bytes[i] = value;
            }
            let parsed = BatchHeader::parse(&bytes).unwrap();
            let body = &bytes[HEADER_LEN..];
            // The count the header claims may be wrong too (each pass takes it as given).
            let count = u32::try_from(
                (i64::from(parsed.record_count) + count_change).max(0),
            ).unwrap();
            let header = BatchHeader { record_count: count, first_timestamp, ..parsed };
            let mut iter = RecordIter::new(&header, body);
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
            prop_assert_eq!(record::scan(&header, body), full);
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
