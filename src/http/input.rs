//! A request body that may be JSON or an HTML form; handlers answer browsers with pages and
//! programs with JSON.

use axum::extract::{Form, FromRequest, Json, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// How the client sent its input, and so how it wants its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Json,
    Form,
}

/// A body parsed from JSON or `application/x-www-form-urlencoded`.
#[derive(Debug)]
pub struct Input<T> {
    pub value: T,
    pub via: Via,
}

impl<S, T> FromRequest<S> for Input<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(value) = Form::<T>::from_request(request, state)
                .await
                .map_err(|e| invalid_body(e.status(), e.body_text()))?;
            Ok(Input {
                value,
                via: Via::Form,
            })
        } else if content_type.starts_with("application/json") {
            let Json(value) = Json::<T>::from_request(request, state)
                .await
                .map_err(|e| invalid_body(e.status(), e.body_text()))?;
            Ok(Input {
                value,
                via: Via::Json,
            })
        } else {
            Err(AppError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Send the body as JSON (Content-Type: application/json) or as a form.",
            ))
        }
    }
}

/// axum's parse messages name the field and the problem; they never echo more than the request.
fn invalid_body(status: StatusCode, message: String) -> AppError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::client(
            status,
            "PAYLOAD_TOO_LARGE",
            "The request body is too large.",
        );
    }
    AppError::Validation {
        detail: format!("The request body could not be read: {message}"),
        fields: Vec::new(),
    }
}
