//! Derived events hash the bytes the wire contract names (see `Event`'s "Keys").

use prost::Message;
use prost::bytes::Bytes;
use sidestream::{Event, EventKey};

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "orders", key = "order_id", type_name = "shop.OrderPlaced.v1")]
struct ByText {
    #[prost(string, tag = "1")]
    order_id: String,
    #[prost(uint64, tag = "2")]
    amount_cents: u64,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(
    topic = "orders",
    key = "order_id",
    type_name = "shop.OrderNumbered.v1"
)]
struct ByNumber {
    #[prost(uint64, tag = "1")]
    order_id: u64,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "ledger", key = "delta", type_name = "bank.Delta.v3")]
struct BySignedNumber {
    #[prost(sint64, tag = "1")]
    delta: i64,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "blobs", key = "digest", type_name = "store.BlobAdded.v1")]
struct ByBytes {
    #[prost(bytes = "vec", tag = "1")]
    digest: Vec<u8>,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "blobs", key = "digest", type_name = "store.BlobShared.v1")]
struct BySharedBytes {
    #[prost(bytes = "bytes", tag = "1")]
    digest: Bytes,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "users", key = "tenant", type_name = "iam.UserSeen.v1")]
struct ByOptionalText {
    #[prost(string, optional, tag = "1")]
    tenant: Option<String>,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "users", key = "shard", type_name = "iam.UserMoved.v1")]
struct ByOptionalNumber {
    #[prost(fixed32, optional, tag = "1")]
    shard: Option<u32>,
}

#[derive(Clone, PartialEq, Message, sidestream::Event)]
#[event(topic = "metrics", type_name = "ops.Tick.v1")]
struct Unkeyed {
    #[prost(int32, tag = "1")]
    value: i32,
}

fn key_bytes<E: Event>(event: &E) -> Option<Vec<u8>> {
    event.key().map(|key| key.as_bytes().to_vec())
}

#[test]
fn names_come_from_the_attribute() {
    assert_eq!(ByText::TOPIC, "orders");
    assert_eq!(ByText::TYPE_NAME, "shop.OrderPlaced.v1");
    assert_eq!(BySignedNumber::TOPIC, "ledger");
    assert_eq!(BySignedNumber::TYPE_NAME, "bank.Delta.v3");
}

#[test]
fn a_string_key_is_its_utf8_bytes() {
    let event = ByText {
        order_id: "o-17".into(),
        amount_cents: 99,
    };
    assert_eq!(key_bytes(&event), Some(b"o-17".to_vec()));
    assert_eq!(key_bytes(&ByText::default()), Some(Vec::new()));
}

#[test]
fn an_integer_key_is_its_decimal_text() {
    assert_eq!(key_bytes(&ByNumber { order_id: 42 }), Some(b"42".to_vec()));
    assert_eq!(
        key_bytes(&BySignedNumber { delta: -7 }),
        Some(b"-7".to_vec())
    );
    assert_eq!(
        ByNumber { order_id: 42 }.key(),
        Some(EventKey::from("42")),
        "`sidestream produce --key 42` lands where order_id: 42 does"
    );
}

#[test]
fn a_bytes_key_is_the_bytes() {
    let digest = vec![0x00, 0xff, 0x10];
    assert_eq!(
        key_bytes(&ByBytes {
            digest: digest.clone()
        }),
        Some(digest.clone())
    );
    assert_eq!(
        key_bytes(&BySharedBytes {
            digest: Bytes::from(digest.clone())
        }),
        Some(digest)
    );
}

#[test]
fn an_absent_optional_key_is_no_key() {
    assert_eq!(key_bytes(&ByOptionalText::default()), None);
    assert_eq!(key_bytes(&ByOptionalNumber::default()), None);
    let present = ByOptionalText {
        tenant: Some("acme".into()),
    };
    assert_eq!(key_bytes(&present), Some(b"acme".to_vec()));
    assert_eq!(
        key_bytes(&ByOptionalNumber { shard: Some(3) }),
        Some(b"3".to_vec())
    );
}

#[test]
fn an_event_without_a_key_field_has_no_key() {
    assert_eq!(key_bytes(&Unkeyed { value: 5 }), None);
}

#[test]
fn the_key_survives_a_round_trip() {
    let event = ByOptionalText {
        tenant: Some("acme".into()),
    };
    let decoded = ByOptionalText::decode(event.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded.key(), event.key());
}
