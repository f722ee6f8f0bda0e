//! Path ids, query strings and page sizes: parsed at the boundary, with 422 and a clear message for
//! anything malformed.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
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

/// The `{n}` of a route naming a numbered thing (a version, a revision): a whole number from 1.
/// Otherwise 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberPath(pub i32);

impl<S: Send + Sync> FromRequestParts<S> for NumberPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        #[derive(Deserialize)]
        struct Params {
            n: String,
        }
        let Path(params) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::invalid("n", "missing from the path"))?;
        match params.n.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(NumberPath(n)),
            _ => Err(AppError::invalid(
                "n",
                "must be a whole number from 1 (1, 2, 3, ...)",
            )),
        }
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

/// `?cursor=&limit=` of a paged list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// From the previous page's `next_cursor`.
    pub cursor: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Page size: `limit` (1 to 100, default 20).
pub fn page_size(limit: Option<u32>) -> Result<i64, AppError> {
    match limit {
        None => Ok(20),
        Some(n @ 1..=100) => Ok(i64::from(n)),
        Some(_) => Err(AppError::invalid("limit", "must be from 1 to 100")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes() {
        assert!(page_size(Some(0)).is_err());
        assert!(page_size(Some(101)).is_err());
        assert_eq!(page_size(None).expect("default"), 20);
        assert_eq!(page_size(Some(100)).expect("largest"), 100);
    }
}
