//! The HTTP plumbing every route shares: extractors, the layer around every request, and
//! response helpers. Routes live with their features; the application is assembled in
//! [`crate::app`].

pub mod body;
pub mod client_ip;
pub mod front;
mod guard;
mod hosts;
pub mod input;
pub mod params;
pub mod request_id;

use std::time::Duration;

use serde::Serialize;

use crate::error::AppError;

/// Largest request body accepted by default (routes that take files set their own).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a file upload may take: it may be large and the client slow, so long as bytes keep
/// arriving (a stall of 10 s ends it sooner, see [`body::STALL_TIMEOUT`]). It holds no database
/// connection meanwhile.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// A JSON response serialized into a buffer of about its size, for large responses on hot paths
/// (axum's `Json` starts with 128 bytes and grows, copying each time).
pub struct SizedJson<T>(pub T, pub usize);

impl<T: Serialize> axum::response::IntoResponse for SizedJson<T> {
    fn into_response(self) -> axum::response::Response {
        let mut body = Vec::with_capacity(self.1);
        match serde_json::to_writer(&mut body, &self.0) {
            Ok(()) => (
                [(
                    axum::http::header::CONTENT_TYPE,
                    axum::http::HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response(),
            Err(e) => AppError::Internal(e.into()).into_response(),
        }
    }
}
