//! Cursors for paged lists: opaque to clients, checked when they come back (422 for anything
//! this API did not give out).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::AppError;

/// Cuts a page read with one row more than `limit` (which tells whether there is a next page) to
/// `limit` rows, and returns the cursor of the page after it, made from its last row.
pub fn next_page<T>(
    items: &mut Vec<T>,
    limit: i64,
    cursor_of: impl Fn(&T) -> String,
) -> Option<String> {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(cursor_of)
    } else {
        None
    }
}

/// A position in a list ordered by (time, id): opaque to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeCursor {
    pub at: DateTime<Utc>,
    pub id: Uuid,
}

impl TimeCursor {
    pub fn encode(&self) -> String {
        B64.encode(format!("{}:{}", self.at.timestamp_micros(), self.id))
    }

    pub fn decode(raw: &str) -> Result<Self, AppError> {
        let bad = || AppError::invalid("cursor", "is not a cursor this API gave out");
        let text = B64
            .decode(raw)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(bad)?;
        let (micros, id) = text.split_once(':').ok_or_else(bad)?;
        let at = micros
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_micros)
            // Every timestamp stored here is in years 1 to 9999; PostgreSQL's text form of others
            // differs, so a forged one would fail in the database rather than here.
            .filter(|at| (1..=9999).contains(&chrono::Datelike::year(at)))
            .ok_or_else(bad)?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        Ok(TimeCursor { at, id })
    }
}

/// A position in a list ordered by a numeric id: opaque to clients.
pub fn encode_id_cursor(id: i64) -> String {
    B64.encode(id.to_string())
}

pub fn decode_id_cursor(raw: &str) -> Result<i64, AppError> {
    B64.decode(raw)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(|| AppError::invalid("cursor", "is not a cursor this API gave out"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = TimeCursor {
            at: DateTime::from_timestamp_micros(1_700_000_000_123_456).expect("time"),
            id: Uuid::new_v4(),
        };
        assert_eq!(TimeCursor::decode(&c.encode()).expect("decodes"), c);
        assert!(TimeCursor::decode("garbage!").is_err());
        assert!(TimeCursor::decode(&B64.encode("12:not-a-uuid")).is_err());
        // Years outside 1 to 9999 are no cursor of ours (year 10000, then year 0).
        let id = Uuid::new_v4();
        for micros in [253_402_300_800_000_000_i64, -62_135_596_800_000_001] {
            let forged = B64.encode(format!("{micros}:{id}"));
            assert!(TimeCursor::decode(&forged).is_err(), "{micros}");
        }
        let last = B64.encode(format!("253402300799999999:{id}"));
        assert!(TimeCursor::decode(&last).is_ok());
        assert_eq!(
            decode_id_cursor(&encode_id_cursor(42)).expect("decodes"),
            42
        );
        assert!(decode_id_cursor("zz").is_err());
    }
}
