//! [`TraceParent`]: the W3C Trace Context an event carries in its `traceparent` header.

use std::fmt;
use std::str::FromStr;

/// A W3C Trace Context `traceparent`: the trace, the publishing span, and the trace flags.
///
/// On the wire the `traceparent` header holds it in [`WIRE_LEN`](Self::WIRE_LEN) bytes: the
/// version (0), the 16-byte trace id, the 8-byte span id and the flags byte, in that order.
/// Its text form is the W3C header, `00-<32 hex>-<16 hex>-<2 hex>`, which [`Display`](fmt::Display) writes
/// and [`FromStr`] reads.
///
/// ```
/// use sidestream::TraceParent;
///
/// let text = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
/// let parent: TraceParent = text.parse()?;
/// assert!(parent.is_sampled());
/// assert_eq!(parent.to_string(), text);
/// assert_eq!(TraceParent::from_header(&parent.to_wire()), Some(parent));
/// assert_eq!(TraceParent::from_header(text.as_bytes()), Some(parent));
/// # Ok::<(), sidestream::ParseTraceParentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace: 16 bytes, not all zero.
    pub trace_id: [u8; 16],
    /// The span that published the event: 8 bytes, not all zero.
    pub span_id: [u8; 8],
    /// The trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceParent {
    /// Size of the header value in its binary form.
    pub const WIRE_LEN: usize = 26;
    /// Size of the W3C text form.
    pub const TEXT_LEN: usize = 55;

    /// Whether the publisher sampled the trace (flags bit 0).
    pub fn is_sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The binary form the SDK writes into the `traceparent` header.
    pub fn to_wire(&self) -> [u8; Self::WIRE_LEN] {
        let mut out = [0u8; Self::WIRE_LEN];
        out[1..17].copy_from_slice(&self.trace_id);
        out[17..25].copy_from_slice(&self.span_id);
        out[25] = self.flags;
        out
    }

    /// Reads a `traceparent` header value: the binary form, or the W3C text (as events
    /// published by other tools, or by SDK versions before the binary form, carry it).
    /// `None` for anything else, including all-zero ids and versions other than 0.
    pub fn from_header(value: &[u8]) -> Option<Self> {
        match value.len() {
            Self::WIRE_LEN => {
                let (&version, rest) = value.split_first()?;
                let (trace_id, rest) = rest.split_first_chunk::<16>()?;
                let (span_id, rest) = rest.split_first_chunk::<8>()?;
                let &[flags] = rest else { return None };
                Self::checked(version, *trace_id, *span_id, flags)
            }
            Self::TEXT_LEN => std::str::from_utf8(value).ok()?.parse().ok(),
            _ => None,
        }
    }

    fn checked(version: u8, trace_id: [u8; 16], span_id: [u8; 8], flags: u8) -> Option<Self> {
        (version == 0 && trace_id != [0; 16] && span_id != [0; 8]).then_some(Self {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("00-")?;
        for byte in self.trace_id {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("-")?;
        for byte in self.span_id {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// Why a text is not a `traceparent` this SDK reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "not a version 00 W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>, ids not all zero): {text:?}"
)]
pub struct ParseTraceParentError {
    text: String,
}

impl FromStr for TraceParent {
    type Err = ParseTraceParentError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = || ParseTraceParentError {
            text: text.to_owned(),
        };
        let bytes = text.as_bytes();
        if bytes.len() != Self::TEXT_LEN
            || bytes.get(2) != Some(&b'-')
            || bytes.get(35) != Some(&b'-')
            || bytes.get(52) != Some(&b'-')
        {
            return Err(error());
        }
        let mut version = [0u8; 1];
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        for (out, range) in [
            (&mut version[..], 0..2),
            (&mut trace_id[..], 3..35),
            (&mut span_id[..], 36..52),
            (&mut flags[..], 53..55),
        ] {
            let hex = bytes.get(range).ok_or_else(error)?;
            for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
                *byte = (hex_digit(pair[0]).ok_or_else(error)? << 4)
                    | hex_digit(pair[1]).ok_or_else(error)?;
            }
        }
        Self::checked(version[0], trace_id, span_id, flags[0]).ok_or_else(error)
    }
}

/// The value of a lowercase hex digit (W3C allows no uppercase).
fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn text_and_wire_forms_round_trip() {
        let parent: TraceParent = TEXT.parse().unwrap();
        assert_eq!(parent.trace_id[0], 0x4b);
        assert_eq!(parent.span_id[7], 0xb7);
        assert_eq!(parent.flags, 1);
        assert_eq!(parent.to_string(), TEXT);
        let wire = parent.to_wire();
        assert_eq!(wire[0], 0);
        assert_eq!(TraceParent::from_header(&wire), Some(parent));
        assert_eq!(TraceParent::from_header(TEXT.as_bytes()), Some(parent));
    }

    #[test]
    fn malformed_values_are_refused() {
        for text in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            let error = text.parse::<TraceParent>().unwrap_err();
            assert!(error.to_string().contains("traceparent"), "{error}");
            assert_eq!(TraceParent::from_header(text.as_bytes()), None, "{text}");
        }
        let mut wire = TEXT.parse::<TraceParent>().unwrap().to_wire();
        wire[0] = 1;
        assert_eq!(TraceParent::from_header(&wire), None, "version 1");
        assert_eq!(TraceParent::from_header(&[0; 26]), None, "zero ids");
        assert_eq!(TraceParent::from_header(&wire[..25]), None, "short");
    }
}
