//! The partitioning key of an event and the field types that can hold it.

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;

/// The bytes an event is partitioned by.
///
/// Derived events build it from their key field (see [Keys](crate::Event#keys)); the
/// conversions below follow the same rules, so a key typed on the command line as `42`
/// equals the key of `order_id: 42u64`:
///
/// ```
/// use sidestream::EventKey;
///
/// assert_eq!(EventKey::from(42u64), EventKey::from("42"));
/// assert_eq!(EventKey::from(-7i32).as_bytes(), b"-7");
/// assert_eq!(EventKey::from(&b"\x00\xff"[..]).as_bytes(), [0x00, 0xff]);
/// ```
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventKey<'a>(Cow<'a, [u8]>);

impl<'a> EventKey<'a> {
    /// A key of exactly these bytes.
    pub fn new(bytes: impl Into<Cow<'a, [u8]>>) -> Self {
        Self(bytes.into())
    }

    /// The key bytes, as the partitioner hashes them and the record batch carries them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The key bytes, borrowed or owned as they were given.
    pub fn into_bytes(self) -> Cow<'a, [u8]> {
        self.0
    }

    /// The same key, owning its bytes.
    pub fn into_owned(self) -> EventKey<'static> {
        EventKey(Cow::Owned(self.0.into_owned()))
    }
}

impl AsRef<[u8]> for EventKey<'_> {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for EventKey<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(text) => f.debug_tuple("EventKey").field(&text).finish(),
            Err(_) => f.debug_tuple("EventKey").field(&&*self.0).finish(),
        }
    }
}

impl<'a> From<&'a str> for EventKey<'a> {
    /// The UTF-8 bytes of the text.
    fn from(text: &'a str) -> Self {
        Self(Cow::Borrowed(text.as_bytes()))
    }
}

impl From<String> for EventKey<'static> {
    /// The UTF-8 bytes of the text.
    fn from(text: String) -> Self {
        Self(Cow::Owned(text.into_bytes()))
    }
}

impl<'a> From<&'a [u8]> for EventKey<'a> {
    fn from(bytes: &'a [u8]) -> Self {
        Self(Cow::Borrowed(bytes))
    }
}

impl From<Vec<u8>> for EventKey<'static> {
    fn from(bytes: Vec<u8>) -> Self {
        Self(Cow::Owned(bytes))
    }
}

macro_rules! decimal_keys {
    ($($int:ty),*) => {$(
        impl From<$int> for EventKey<'static> {
            /// The decimal text of the number (`-` first if negative), as the CLI's `--key`
            /// would give it.
            fn from(number: $int) -> Self {
                Self(Cow::Owned(number.to_string().into_bytes()))
            }
        }
    )*};
}

decimal_keys!(u32, u64, i32, i64);

/// A type that a key field of a derived [`Event`](crate::Event) may have.
///
/// Implemented for exactly the types listed under [Keys](crate::Event#keys); the derive
/// calls it on the key field. Not part of the public API.
#[doc(hidden)]
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be an event key",
    note = "key fields are `String`, `Vec<u8>`, `bytes::Bytes`, `u32`, `u64`, `i32`, `i64`, or `Option` of one of these"
)]
pub trait KeyField {
    /// The key this field value stands for.
    fn event_key(&self) -> Option<EventKey<'_>>;
}

impl KeyField for String {
    fn event_key(&self) -> Option<EventKey<'_>> {
        Some(EventKey::from(self.as_str()))
    }
}

impl KeyField for Vec<u8> {
    fn event_key(&self) -> Option<EventKey<'_>> {
        Some(EventKey::from(self.as_slice()))
    }
}

impl KeyField for Bytes {
    fn event_key(&self) -> Option<EventKey<'_>> {
        Some(EventKey::from(&self[..]))
    }
}

macro_rules! decimal_key_fields {
    ($($int:ty),*) => {$(
        impl KeyField for $int {
            fn event_key(&self) -> Option<EventKey<'_>> {
                Some(EventKey::from(*self))
            }
        }
    )*};
}

decimal_key_fields!(u32, u64, i32, i64);

impl<T: KeyField> KeyField for Option<T> {
    fn event_key(&self) -> Option<EventKey<'_>> {
        self.as_ref().and_then(KeyField::event_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(field: &impl KeyField) -> Option<Vec<u8>> {
        field.event_key().map(|key| key.as_bytes().to_vec())
    }

    #[test]
    fn text_keys_are_utf8_bytes() {
        assert_eq!(key_of(&String::from("order-7")), Some(b"order-7".to_vec()));
        assert_eq!(
            key_of(&String::from("größe")),
            Some("größe".as_bytes().to_vec())
        );
        assert_eq!(
            key_of(&String::new()),
            Some(Vec::new()),
            "empty is a key, not none"
        );
    }

    #[test]
    fn byte_keys_are_the_bytes() {
        assert_eq!(key_of(&vec![0u8, 255, 7]), Some(vec![0, 255, 7]));
        assert_eq!(key_of(&Bytes::from_static(b"\x01\x02")), Some(vec![1, 2]));
    }

    #[test]
    fn integer_keys_are_decimal_text() {
        assert_eq!(key_of(&42u64), Some(b"42".to_vec()));
        assert_eq!(key_of(&0u32), Some(b"0".to_vec()));
        assert_eq!(key_of(&-7i32), Some(b"-7".to_vec()));
        assert_eq!(key_of(&u64::MAX), Some(b"18446744073709551615".to_vec()));
        assert_eq!(key_of(&i64::MIN), Some(b"-9223372036854775808".to_vec()));
    }

    #[test]
    fn absent_optional_keys_are_none() {
        assert_eq!(key_of(&None::<String>), None);
        assert_eq!(key_of(&None::<u64>), None);
        assert_eq!(key_of(&Some(String::from("a"))), Some(b"a".to_vec()));
        assert_eq!(key_of(&Some(42i64)), Some(b"42".to_vec()));
    }

    #[test]
    fn a_typed_number_equals_its_text() {
        assert_eq!(EventKey::from(42u64), EventKey::from("42"));
        assert_eq!(EventKey::from(-1i64), EventKey::from(String::from("-1")));
    }

    #[test]
    fn debug_shows_text_when_it_is_utf8() {
        assert_eq!(format!("{:?}", EventKey::from("a")), r#"EventKey("a")"#);
        assert_eq!(
            format!("{:?}", EventKey::from(&[0xffu8][..])),
            "EventKey([255])"
        );
    }

    #[test]
    fn into_owned_keeps_the_bytes() {
        let text = String::from("k");
        let owned: EventKey<'static> = EventKey::from(text.as_str()).into_owned();
        drop(text);
        assert_eq!(owned.as_bytes(), b"k");
    }
}
