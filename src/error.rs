//! One error type for HTTP handlers. The client sees a stable code, a sentence and the request id;
//! the cause of an internal error goes to the log, once, and never to the client.

use std::time::Duration;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// An error a handler returns.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 4xx with a stable code and a sentence for people.
    #[error("{detail}")]
    Client {
        status: StatusCode,
        code: &'static str,
        detail: String,
    },
    /// 422: input that does not validate, with a message per field.
    #[error("{detail}")]
    Validation {
        detail: String,
        fields: Vec<FieldError>,
    },
    /// 429 with Retry-After; `usage` describes a quota (turns) when one was exhausted.
    #[error("{detail}")]
    RateLimited {
        code: &'static str,
        detail: String,
        retry_after: Duration,
        usage: Option<Usage>,
    },
    /// 503: a dependency (the database) cannot serve requests right now.
    #[error("{0}")]
    Unavailable(&'static str),
    /// Anything unexpected. The cause is logged; the client gets a generic sentence.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

/// When a client should try again after a 503.
const UNAVAILABLE_RETRY_AFTER_SECS: u64 = 5;

/// One field's validation problem.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// How much of a quota was used, on `TURN_LIMIT_REACHED`.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct Usage {
    pub used: i64,
    pub limit: i64,
    pub resets_at: chrono::DateTime<chrono::Utc>,
}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence for people.
    pub detail: String,
    /// A stable code for programs, such as `RATE_LIMITED`.
    pub code: &'static str,
    /// The request's id (also in the `x-request-id` header), for support.
    pub request_id: Option<String>,
    /// Per-field problems, for `VALIDATION_FAILED`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
    /// The quota that was exhausted, on `TURN_LIMIT_REACHED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl AppError {
    pub fn client(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        AppError::Client {
            status,
            code,
            detail: detail.into(),
        }
    }

    pub fn unauthorized() -> Self {
        Self::client(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "Sign in to do this.",
        )
    }

    pub fn not_found() -> Self {
        Self::client(StatusCode::NOT_FOUND, "NOT_FOUND", "Not found.")
    }

    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, code, detail)
    }

    /// A single-field validation error.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        AppError::Validation {
            detail: format!("{field}: {message}"),
            fields: vec![FieldError {
                field: field.to_string(),
                message,
            }],
        }
    }

    pub fn rate_limited(detail: impl Into<String>, retry_after: Duration) -> Self {
        AppError::RateLimited {
            code: "RATE_LIMITED",
            detail: detail.into(),
            retry_after,
            usage: None,
        }
    }

    /// 429 with its own code.
    pub fn rate_limited_with_code(
        code: &'static str,
        detail: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        AppError::RateLimited {
            code,
            detail: detail.into(),
            retry_after,
            usage: None,
        }
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, detail)
    }

    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        AppError::Internal(cause.into())
    }

    /// An object storage failure: 503 with Retry-After when storage could not be reached or
    /// failed (after the client's own retries), 500 for anything else (a missing object, refused
    /// credentials: a bug or a misconfiguration).
    pub fn storage(e: object_store::Error) -> Self {
        match e {
            object_store::Error::Generic { .. } => {
                tracing::warn!(error = %e, "object storage is unavailable");
                AppError::Unavailable(
                    "File storage is not reachable right now. Please try again shortly.",
                )
            }
            other => AppError::internal(other),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            AppError::Client { status, .. } => *status,
            AppError::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            AppError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            AppError::Client { code, .. } => code,
            AppError::Validation { .. } => "VALIDATION_FAILED",
            AppError::RateLimited { code, .. } => code,
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL_ERROR",
        }
    }

    /// The sentence the client sees. Logs an internal error's cause (once, here).
    pub fn detail_for_client(&self) -> String {
        match self {
            AppError::Internal(cause) => {
                tracing::error!(error = describe(cause), "internal error");
                "Something went wrong on our side. Please try again.".to_string()
            }
            other => other.to_string(),
        }
    }

    /// Seconds for the Retry-After header, rounded up and at least 1.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            AppError::RateLimited { retry_after, .. } => {
                Some(retry_after.as_secs_f64().ceil().max(1.0) as u64)
            }
            AppError::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECS),
            _ => None,
        }
    }

    /// Adds Retry-After when the error has one.
    pub fn decorate(&self, response: &mut Response) {
        if let Some(secs) = self.retry_after_secs() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = self.detail_for_client();
        let fields = match &self {
            AppError::Validation { fields, .. } => fields.clone(),
            _ => Vec::new(),
        };
        let usage = match &self {
            AppError::RateLimited { usage, .. } => usage.clone(),
            _ => None,
        };
        let body = ErrorBody {
            detail,
            code: self.code(),
            request_id: crate::telemetry::request_id(),
            fields,
            usage,
        };
        let mut response = (status, Json(body)).into_response();
        self.decorate(&mut response);
        if let AppError::Internal(cause) = &self {
            response
                .extensions_mut()
                .insert(InternalCause(describe(cause)));
        }
        response
    }
}

/// An internal error's chain of causes, without the parts PostgreSQL adds that can quote a row's
/// values (`DETAIL: Failing row contains (...)`, `Key (slug)=(...)`, `HINT: ...`): what logs and
/// error reports get.
pub fn describe(cause: &anyhow::Error) -> String {
    format!("{cause:#}")
        .lines()
        .filter(|line| {
            let line = line.trim_start();
            !line.starts_with("DETAIL:") && !line.starts_with("HINT:")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// On a 500 answer: what went wrong, for the error report the front layer sends (never for the
/// client).
#[derive(Debug, Clone)]
pub struct InternalCause(pub String);

impl From<crate::db::Error> for AppError {
    fn from(e: crate::db::Error) -> Self {
        if e.is_session_not_live() {
            // Raised only by the session check a user scope opens with.
            tracing::info!("session revoked or expired");
            AppError::unauthorized()
        } else if e.is_unavailable() {
            tracing::warn!(error = %e, "the database is unavailable");
            AppError::Unavailable(
                "The database is not reachable right now. Please try again shortly.",
            )
        } else {
            AppError::Internal(e.into())
        }
    }
}

#[cfg(test)]
mod describe_tests {
    #[test]
    fn a_cause_is_described_without_the_rows_postgres_quotes() {
        let cause = anyhow::anyhow!(
            "ERROR: new row violates check constraint \"t\"\nDETAIL: Failing row contains (secret title, a@b.c).\nHINT: look at (secret)"
        )
        .context("saving the aide");
        let described = super::describe(&cause);
        assert_eq!(
            described,
            "saving the aide: ERROR: new row violates check constraint \"t\""
        );
    }
}
