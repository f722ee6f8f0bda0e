//! Path ids and cursor pagination: parsed at the boundary, with 422 and a clear message for
//! anything malformed.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::error::AppError;

/// The `{id}` of a route, as a UUID. Malformed: 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        #[derive(Deserialize)]
        struct Params {
            id: String,
        }
        let Path(params) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::invalid("id", "missing from the path"))?;
        Uuid::parse_str(&params.id)
            .map(IdPath)
            .map_err(|_| AppError::invalid("id", "is not a valid id (a UUID is expected)"))
    }
}

/// A query string parsed into `T`. Malformed: 422 in our error shape, naming the parameter
/// (axum's own `Query` answers 400 in plain text).
#[derive(Debug, Clone)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(QueryParams(value)),
            Err(e) => {
                // "Failed to deserialize query string: limit: invalid digit found in string"
                let text = e.body_text();
                let problem = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let (field, message) = problem.split_once(": ").unwrap_or(("query", problem));
                Err(AppError::invalid(field, message))
            }
        }
    }
}

/// Page size: `limit` (1 to 100, default 20).
pub fn page_size(limit: Option<u32>) -> Result<i64, AppError> {
    match limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(i64::from(n)),
        Some(_) => Err(AppError::invalid("limit", "must be from 1 to 100")),
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
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
        assert_eq!(page_size(None).expect("default"), 20);
    }
}
