//! [`Headers`]: an event's headers, kept in their wire form.

use std::fmt;

use bytes::Bytes;
use sidestream_log::batch::{HeaderIter, SharedHeaders, header_len, put_header};
use uuid::Uuid;

use super::rfc3339::rfc3339_millis;
use crate::{TraceParent, headers};

/// An event's headers, in order: the ones a subscription delivers (`id`, `type`, `source`,
/// `traceparent`, and any others, with the record's timestamp as the event's
/// [`time`](Self::time)), or the ones a [`RawEvent`](crate::RawEvent) is published with.
///
/// They are kept as the record holds them on the wire, sharing the delivered batch's bytes, and
/// read when asked for: a delivery costs no allocation for its headers. A delivered event's
/// headers include those its batch gave every record (docs/STORAGE.md, "Shared headers"),
/// after its own.
///
/// ```
/// use sidestream::Headers;
///
/// let headers = Headers::new().with("tenant", "acme").with("retry", "2");
/// assert_eq!(headers.get_str("tenant"), Some("acme"));
/// assert_eq!(headers.iter().map(|(name, _)| name).collect::<Vec<_>>(), ["tenant", "retry"]);
/// ```
#[derive(Clone, Default)]
pub struct Headers {
    /// Each header as a varint name length, the UTF-8 name, a varint value length and the
    /// value; well formed (checked when the record was read, or written by `push`).
    wire: Bytes,
    count: u32,
    /// The delivered batch's shared headers, in the same form: each one is also this event's
    /// unless it has its own of the same name.
    shared: Bytes,
    shared_count: u32,
    /// The delivered record's timestamp, which is the event's `time`.
    timestamp: Option<i64>,
}

impl PartialEq for Headers {
    /// The same headers in the same order, and the same timestamp, however they are held.
    fn eq(&self, other: &Self) -> bool {
        self.timestamp == other.timestamp && self.iter().eq(other.iter())
    }
}

impl Eq for Headers {}

impl Headers {
    /// No headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same headers with one more, after the others.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.push(name, value);
        self
    }

    /// Adds a header after the others (a name may repeat; [`get`](Self::get) finds the first).
    ///
    /// # Panics
    ///
    /// If there are already `u32::MAX` headers.
    pub fn push(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let mut wire =
            Vec::with_capacity(self.wire.len() + self.shared.len() + header_len(name, value));
        let mut count = 0u32;
        // The shared headers become its own: a new one must not hide one of them.
        for (name, value) in self.iter() {
            put_header(&mut wire, name, value);
            count += 1;
        }
        put_header(&mut wire, name, value);
        self.wire = Bytes::from(wire);
        self.shared = Bytes::new();
        self.shared_count = 0;
        self.count = count
            .checked_add(1)
            .unwrap_or_else(|| panic!("more than {} headers", u32::MAX));
    }

    /// The value of the first header named `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter()
            .find(|(header, _)| *header == name)
            .map(|(_, value)| value)
    }

    /// The value of the first header named `name`, if it is UTF-8 text.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// Every header in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        HeaderIter::with_shared(
            &self.wire,
            u64::from(self.count),
            SharedHeaders::new(&self.shared, u64::from(self.shared_count)),
        )
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        if self.shared_count == 0 {
            self.count as usize
        } else {
            self.iter().count()
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0 && self.shared_count == 0
    }

    /// The [`id`](headers::ID) header: the event's UUID v7 (its 16 bytes, or its hyphenated
    /// text as other tools may write it).
    pub fn id(&self) -> Option<Uuid> {
        let value = self.get(headers::ID)?;
        match value.len() {
            16 => Uuid::from_slice(value).ok(),
            _ => Uuid::try_parse_ascii(value).ok(),
        }
    }

    /// The [`type`](headers::TYPE) header: the event's versioned type name.
    pub fn type_name(&self) -> Option<&str> {
        self.get_str(headers::TYPE)
    }

    /// The [`source`](headers::SOURCE) header: the publishing service.
    pub fn source(&self) -> Option<&str> {
        self.get_str(headers::SOURCE)
    }

    /// When the event was published: the text of a [`time`](headers::TIME) header if the
    /// record has one (as tools other than the SDK may write it), otherwise the delivered
    /// record's timestamp as RFC 3339 text in UTC with milliseconds. `None` only for headers
    /// that were not delivered and have no `time` header.
    pub fn time(&self) -> Option<String> {
        if let Some(text) = self.get_str(headers::TIME) {
            return Some(text.to_owned());
        }
        self.timestamp.map(rfc3339_millis)
    }

    /// The [`traceparent`](headers::TRACEPARENT) header: the publisher's W3C trace context
    /// (binary, or W3C text as other tools may write it).
    pub fn traceparent(&self) -> Option<TraceParent> {
        TraceParent::from_header(self.get(headers::TRACEPARENT)?)
    }

    /// The delivered record's timestamp, in milliseconds since the Unix epoch: the event's
    /// time. `None` for headers that were not delivered. A delivered [`RawEvent`](crate::RawEvent)
    /// published again keeps it as its timestamp.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp
    }

    /// Each header with its value as text: UTF-8 values as they are, the standard ids in
    /// their text forms (a hyphenated UUID, a W3C `traceparent`), and other values `None`.
    pub fn iter_text(
        &self,
    ) -> impl Iterator<Item = (&str, Option<std::borrow::Cow<'_, str>>)> + '_ {
        use std::borrow::Cow;
        self.iter().map(|(name, value)| {
            let standard = match name {
                headers::ID if value.len() == 16 => Uuid::from_slice(value)
                    .ok()
                    .filter(|id| id.get_version_num() == 7)
                    .map(|id| id.to_string()),
                headers::TRACEPARENT if value.len() == TraceParent::WIRE_LEN => {
                    TraceParent::from_header(value).map(|t| t.to_string())
                }
                _ => None,
            };
            let text = standard
                .map(Cow::Owned)
                .or_else(|| std::str::from_utf8(value).ok().map(Cow::Borrowed));
            (name, text)
        })
    }

    /// A delivered record's headers in their wire form, already checked to be well formed (a
    /// record that [`RecordIter`](sidestream_log::batch::RecordIter) read): `count` of its own
    /// in `wire`, and its batch's `shared` ones (wire and count). The record's `timestamp` is
    /// the event's time.
    pub(crate) fn from_wire(
        wire: Bytes,
        count: u32,
        (shared, shared_count): (Bytes, u32),
        timestamp: i64,
    ) -> Self {
        Self {
            wire,
            count,
            shared,
            shared_count,
            timestamp: Some(timestamp),
        }
    }
}

impl<N: AsRef<str>, V: AsRef<[u8]>> FromIterator<(N, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(pairs: I) -> Self {
        let mut wire = Vec::new();
        let mut count = 0u32;
        for (name, value) in pairs {
            put_header(&mut wire, name.as_ref(), value.as_ref());
            count = count
                .checked_add(1)
                .unwrap_or_else(|| panic!("more than {} headers", u32::MAX));
        }
        Self {
            wire: Bytes::from(wire),
            count,
            shared: Bytes::new(),
            shared_count: 0,
            timestamp: None,
        }
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        map.entries(
            self.iter_text()
                .zip(self.iter())
                .map(|((name, text), (_, value))| {
                    (name, text.unwrap_or_else(|| String::from_utf8_lossy(value)))
                }),
        );
        if let Some(timestamp) = self.timestamp {
            map.entry(&"(timestamp_ms)", &timestamp);
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_their_order_and_find_the_first_of_a_name() {
        let mut headers: Headers = [("a", &b"1"[..]), ("b", b"\xff"), ("a", b"3")]
            .into_iter()
            .collect();
        headers.push("c", "4");
        assert_eq!(headers.len(), 4);
        assert_eq!(headers.get("a"), Some(&b"1"[..]));
        assert_eq!(headers.get_str("b"), None, "not UTF-8");
        assert_eq!(headers.get("b"), Some(&b"\xff"[..]));
        assert_eq!(headers.get("z"), None);
        let names: Vec<&str> = headers.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["a", "b", "a", "c"]);
        assert_eq!(
            headers,
            Headers::new()
                .with("a", "1")
                .with("b", b"\xff")
                .with("a", "3")
                .with("c", "4")
        );
    }

    #[test]
    fn no_headers_is_empty() {
        let headers = Headers::new();
        assert!(headers.is_empty());
        assert_eq!(headers.iter().count(), 0);
        assert_eq!(format!("{headers:?}"), "{}");
    }
}
