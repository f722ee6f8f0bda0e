//! Timestamps in responses, written without chrono's general-purpose format machinery: formatting
//! them was among the largest costs of listing aides in a profile of the server.
//!
//! Responses carry RFC 3339 in UTC with exactly six fractional digits
//! (`2026-11-25T04:49:24.081682Z`, PostgreSQL's precision), so every timestamp the API returns has
//! the same width and sorts as text. (Years outside 0 to 9999, which nothing here stores, fall back
//! to chrono's form; a leap second, which PostgreSQL never returns, prints as `:59.999999`.)

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// `serialize_with` for a timestamp in a response.
pub fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    let mut buf = [0u8; 27];
    match write_rfc3339(at, &mut buf) {
        Some(text) => serializer.serialize_str(text),
        // Years outside 0..=9999: never stored here, but still printed correctly.
        None => serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
    }
}

/// A timestamp as responses write it, as a string.
pub fn rfc3339_string(at: &DateTime<Utc>) -> String {
    let mut buf = [0u8; 27];
    match write_rfc3339(at, &mut buf) {
        Some(text) => text.to_string(),
        None => at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    }
}

/// `serialize_with` for an optional timestamp in a response.
pub fn rfc3339_opt<S: Serializer>(
    at: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` into `buf`; None for years outside 0..=9999.
fn write_rfc3339<'b>(at: &DateTime<Utc>, buf: &'b mut [u8; 27]) -> Option<&'b str> {
    let year = u32::try_from(at.year()).ok().filter(|y| *y <= 9999)?;
    // chrono keeps a leap second as nanoseconds of 1,000,000,000 and more; fold it into :59.
    let micros = (at.nanosecond() / 1_000).min(999_999);
    let fields: [(usize, u32, usize); 7] = [
        (0, year, 4),
        (5, at.month(), 2),
        (8, at.day(), 2),
        (11, at.hour(), 2),
        (14, at.minute(), 2),
        (17, at.second(), 2),
        (20, micros, 6),
    ];
    buf.copy_from_slice(b"0000-00-00T00:00:00.000000Z");
    for (start, mut value, width) in fields {
        for i in (start..start + width).rev() {
            buf[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    std::str::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn json(at: DateTime<Utc>) -> String {
        let mut out = Vec::new();
        rfc3339(&at, &mut serde_json::Serializer::new(&mut out)).expect("serialize");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn writes_fixed_width_rfc3339() {
        let at = Utc.with_ymd_and_hms(2026, 11, 25, 4, 9, 7).unwrap();
        assert_eq!(json(at), "\"2026-11-25T04:09:07.000000Z\"");
        let at = at + chrono::Duration::microseconds(81_682);
        assert_eq!(json(at), "\"2026-11-25T04:09:07.081682Z\"");
        // Sub-microsecond digits are cut, as PostgreSQL stores none.
        let at = at + chrono::Duration::nanoseconds(999);
        assert_eq!(json(at), "\"2026-11-25T04:09:07.081682Z\"");
        let early = Utc.with_ymd_and_hms(7, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(json(early), "\"0007-01-02T03:04:05.000000Z\"");
        let far = Utc.with_ymd_and_hms(12345, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            json(far),
            format!(
                "\"{}\"",
                far.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            )
        );
    }

    #[test]
    fn agrees_with_chrono_across_many_instants() {
        let mut at = Utc.with_ymd_and_hms(1999, 12, 31, 23, 59, 58).unwrap();
        for step in 0..2_000 {
            let expected = format!(
                "\"{}\"",
                at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
            assert_eq!(json(at), expected);
            at += chrono::Duration::microseconds(123_456_789 + step * 7);
        }
    }
}
