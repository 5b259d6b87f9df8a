//! Times as RFC 3339 text in UTC with milliseconds, `YYYY-MM-DDTHH:MM:SS.mmmZ`: how
//! [`Headers::time`](crate::Headers::time) shows an event's record timestamp.

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), clamped as [`format_rfc3339_millis`] does.
pub(crate) fn rfc3339_millis(unix_ms: i64) -> String {
    let mut out = [0u8; TIME_LEN];
    format_rfc3339_millis(unix_ms, &mut out);
    out.iter().map(|&b| char::from(b)).collect()
}

/// Writes `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC). Times before 1970 or after 9999 are
/// clamped to those years' bounds, so the text always has this exact width.
fn format_rfc3339_millis(unix_ms: i64, out: &mut [u8; TIME_LEN]) {
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

/// Length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const TIME_LEN: usize = 24;
const MS_PER_DAY: i64 = 86_400_000;
/// 9999-12-31T23:59:59.999Z.
const MAX_UNIX_MS: i64 = 253_402_300_799_999;

#[cfg(test)]
mod tests {
    use super::*;

    fn time_text(unix_ms: i64) -> String {
        rfc3339_millis(unix_ms)
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
}
