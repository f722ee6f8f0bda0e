//! A request body that may be JSON or an HTML form; handlers answer browsers with pages and
//! programs with JSON.

use axum::extract::{Form, FromRequest, Json, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
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

/// An [`Input`] that could not be read: our JSON error for programs, an error page for a browser's
/// form.
#[derive(Debug)]
pub struct InputRejection {
    error: AppError,
    via: Via,
}

impl IntoResponse for InputRejection {
    fn into_response(self) -> Response {
        match self.via {
            Via::Json => self.error.into_response(),
            Via::Form => {
                let body = format!(
                    "<h1>That didn't work</h1><p class=\"error\">{}</p><p><a href=\"/\">Home</a></p>",
                    crate::html::escape(&self.error.detail_for_client())
                );
                let mut response =
                    crate::html::page(self.error.status(), "Something was missing", &body);
                self.error.decorate(&mut response);
                response
            }
        }
    }
}

impl<S, T> FromRequest<S> for Input<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = InputRejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, InputRejection> {
        Self::read(request, state).await
    }
}

impl<T: DeserializeOwned> Input<T> {
    async fn read<S: Send + Sync>(request: Request, state: &S) -> Result<Self, InputRejection> {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_ascii_lowercase();
        if content_type.starts_with("application/x-www-form-urlencoded") {
            let Form(value) =
                Form::<T>::from_request(request, state)
                    .await
                    .map_err(|e| InputRejection {
                        error: invalid_body(e.status(), e.body_text()),
                        via: Via::Form,
                    })?;
            Ok(Input {
                value,
                via: Via::Form,
            })
        } else if content_type.starts_with("application/json") {
            let Json(value) =
                Json::<T>::from_request(request, state)
                    .await
                    .map_err(|e| InputRejection {
                        error: invalid_body(e.status(), e.body_text()),
                        via: Via::Json,
                    })?;
            Ok(Input {
                value,
                via: Via::Json,
            })
        } else {
            Err(InputRejection {
                error: AppError::client(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UNSUPPORTED_MEDIA_TYPE",
                    "Send the body as JSON (Content-Type: application/json) or as a form.",
                ),
                via: Via::Json,
            })
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

/// A JSON body, for API routes. Parse failures are 422 with axum's message (which names the field
/// and the problem); a wrong content type is 415; an oversized body is 413.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Self, AppError> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(e) if e.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE => Err(AppError::client(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Send the body as JSON (Content-Type: application/json).",
            )),
            Err(e) => Err(invalid_body(e.status(), e.body_text())),
        }
    }
}

/// `Option<JsonBody<T>>`: None when the request has no body (no Content-Type and no length).
impl<S, T> axum::extract::OptionalFromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = AppError;

    async fn from_request(request: Request, state: &S) -> Result<Option<Self>, AppError> {
        let headers = request.headers();
        let empty = !headers.contains_key(header::CONTENT_TYPE)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        if empty {
            return Ok(None);
        }
        <JsonBody<T> as FromRequest<S>>::from_request(request, state)
            .await
            .map(Some)
    }
}
