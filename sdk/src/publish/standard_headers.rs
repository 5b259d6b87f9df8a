//! The headers the SDK writes on every event: `id`, `type`, `source`, `time`,
//! `traceparent`, formatted into fixed-size stack buffers (no allocation per event).

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::headers;
use crate::random;

/// The per-event header values: a UUID v7 id, the publish time in RFC 3339 and a W3C
/// `traceparent`, each as text in a buffer of its exact size.
#[derive(Clone, Copy)]
pub(crate) struct StandardHeaders {
    /// Milliseconds since the Unix epoch: the record's timestamp and the `time` header.
    pub(crate) timestamp_ms: i64,
    id: [u8; ID_LEN],
    time: [u8; TIME_LEN],
    traceparent: [u8; TRACEPARENT_LEN],
}

impl StandardHeaders {
    /// Fresh values for an event published now.
    pub(crate) fn now() -> Self {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_millis());
        Self::at(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    /// Fresh values (new random id and trace) for an event published at `timestamp_ms`.
    pub(crate) fn at(timestamp_ms: i64) -> Self {
        let mut random_bits = [0u8; 10];
        random::fill(&mut random_bits);
        let millis = u64::try_from(timestamp_ms).unwrap_or(0);
        let id = uuid::Builder::from_unix_timestamp_millis(millis, &random_bits).into_uuid();
        let mut id_text = [0u8; ID_LEN];
        id.hyphenated().encode_lower(&mut id_text);

        // Events published in the same millisecond share the text: format it once.
        let time = LAST_TIME.with(|last| {
            let (at, text) = last.get();
            if at == timestamp_ms {
                return text;
            }
            let mut text = [0u8; TIME_LEN];
            format_rfc3339_millis(timestamp_ms, &mut text);
            last.set((timestamp_ms, text));
            text
        });

        let mut traceparent = [0u8; TRACEPARENT_LEN];
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        // All-zero ids are invalid in W3C Trace Context; the odds are nil, but be exact.
        while trace_id == [0; 16] {
            random::fill(&mut trace_id);
        }
        while span_id == [0; 8] {
            random::fill(&mut span_id);
        }
        format_traceparent(&trace_id, span_id, &mut traceparent);

        Self {
            timestamp_ms,
            id: id_text,
            time,
            traceparent,
        }
    }

    /// The five headers in their fixed order: id, type, source, time, traceparent.
    pub(crate) fn pairs<'a>(&'a self, type_name: &'a str, source: &'a str) -> [Header<'a>; 5] {
        [
            (headers::ID, &self.id),
            (headers::TYPE, type_name.as_bytes()),
            (headers::SOURCE, source.as_bytes()),
            (headers::TIME, &self.time),
            (headers::TRACEPARENT, &self.traceparent),
        ]
    }

    /// The headers without `type` (for raw events, which bring their own or none), in order.
    pub(crate) fn untyped_pairs<'a>(&'a self, source: &'a str) -> [Header<'a>; 4] {
        [
            (headers::ID, &self.id),
            (headers::SOURCE, source.as_bytes()),
            (headers::TIME, &self.time),
            (headers::TRACEPARENT, &self.traceparent),
        ]
    }
}

/// One header as the batch builder takes it.
pub(crate) type Header<'a> = (&'a str, &'a [u8]);

/// Writes `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Times before 1970 or after 9999 are
/// clamped to those years' bounds, so the text always has this exact width.
pub(crate) fn format_rfc3339_millis(unix_ms: i64, out: &mut [u8; TIME_LEN]) {
    let unix_ms = unix_ms.clamp(0, MAX_UNIX_MS);
    let days = unix_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = unix_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let hour = ms_of_day / 3_600_000;
    let minute = ms_of_day / 60_000 % 60;
    let second = ms_of_day / 1000 % 60;
    let millis = ms_of_day % 1000;

    out.copy_from_slice(b"0000-00-00T00:00:00.000Z");
    put_digits(&mut out[0..4], year);
    put_digits(&mut out[5..7], month);
    put_digits(&mut out[8..10], day);
    put_digits(&mut out[11..13], hour);
    put_digits(&mut out[14..16], minute);
    put_digits(&mut out[17..19], second);
    put_digits(&mut out[20..23], millis);
}

/// `00-<trace id>-<span id>-01`, lowercase hex, sampled.
fn format_traceparent(trace_id: &[u8; 16], span_id: [u8; 8], out: &mut [u8; TRACEPARENT_LEN]) {
    out[..3].copy_from_slice(b"00-");
    put_hex(&mut out[3..35], trace_id);
    out[35] = b'-';
    put_hex(&mut out[36..52], &span_id);
    out[52..].copy_from_slice(b"-01");
}

/// Year, month (1–12) and day (1–31) of the day `days` after 1970-01-01, in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes `value` as decimal digits filling `out`, zero-padded; `value` fits by construction.
fn put_digits(out: &mut [u8], mut value: i64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + u8::try_from(value.rem_euclid(10)).unwrap_or(0);
        value /= 10;
    }
}

fn put_hex(out: &mut [u8], bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = HEX[usize::from(byte >> 4)];
        pair[1] = HEX[usize::from(byte & 0x0f)];
    }
}

/// Length of a hyphenated UUID.
const ID_LEN: usize = 36;
/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub(crate) const TIME_LEN: usize = 24;
/// Length of `00-<32 hex>-<16 hex>-01`.
const TRACEPARENT_LEN: usize = 55;
const MS_PER_DAY: i64 = 86_400_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MS: i64 = 253_402_300_799_999;

thread_local! {
    /// The last `time` text this thread formatted, and its millisecond.
    static LAST_TIME: Cell<(i64, [u8; TIME_LEN])> = const { Cell::new((i64::MIN, [0; TIME_LEN])) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time_text(unix_ms: i64) -> String {
        let mut out = [0u8; TIME_LEN];
        format_rfc3339_millis(unix_ms, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn rfc3339_with_milliseconds() {
        assert_eq!(time_text(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_text(1_795_574_818_123), "2026-11-25T02:46:58.123Z");
        assert_eq!(time_text(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(time_text(951_868_799_999), "2000-02-29T23:59:59.999Z");
        assert_eq!(time_text(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
        assert_eq!(time_text(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
        assert_eq!(time_text(-5), "1970-01-01T00:00:00.000Z");
        assert_eq!(time_text(i64::MAX), "9999-12-31T23:59:59.999Z");
    }

    #[test]
    fn every_day_of_four_centuries_round_trips() {
        // Check civil_from_days against a plain day-by-day calendar walk.
        let (mut year, mut month, mut day) = (1970_i64, 1_i64, 1_i64);
        for days in 0..146_097 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn headers_come_in_order_with_valid_values() {
        let standard = StandardHeaders::at(1_795_574_818_123);
        let pairs = standard.pairs("shop.OrderPlaced.v1", "order-service");
        let names: Vec<&str> = pairs.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, headers::ALL);

        let id = std::str::from_utf8(pairs[0].1).unwrap();
        let parsed = uuid::Uuid::parse_str(id).unwrap();
        assert_eq!(parsed.get_version_num(), 7);
        let (secs, nanos) = parsed.get_timestamp().unwrap().to_unix();
        assert_eq!(
            secs * 1000 + u64::from(nanos) / 1_000_000,
            1_795_574_818_123
        );
        assert_eq!(pairs[1].1, b"shop.OrderPlaced.v1");
        assert_eq!(pairs[2].1, b"order-service");
        assert_eq!(pairs[3].1, b"2026-11-25T02:46:58.123Z");

        let traceparent = std::str::from_utf8(pairs[4].1).unwrap();
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{traceparent}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1].len(), 32);
        assert_eq!(parts[2].len(), 16);
        assert_eq!(parts[3], "01");
        assert!(parts[1..3].iter().all(|p| {
            p.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        }));
        assert_ne!(parts[1], "0".repeat(32));

        let untyped = standard.untyped_pairs("cli");
        assert_eq!(
            untyped.map(|(name, _)| name),
            [
                headers::ID,
                headers::SOURCE,
                headers::TIME,
                headers::TRACEPARENT
            ]
        );
    }

    #[test]
    fn the_cached_time_follows_the_clock() {
        let a = StandardHeaders::at(1_000);
        let b = StandardHeaders::at(1_000);
        let c = StandardHeaders::at(1_001);
        assert_eq!(a.time, b.time);
        assert_eq!(&c.time, b"1970-01-01T00:00:01.001Z");
    }

    #[test]
    fn ids_and_traces_differ_between_events() {
        let a = StandardHeaders::at(1);
        let b = StandardHeaders::at(1);
        assert_ne!(a.id, b.id);
        assert_ne!(a.traceparent, b.traceparent);
    }
}
