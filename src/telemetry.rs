//! Logging. Human-readable lines in development, JSON lines in deployed environments. RUST_LOG
//! overrides the default filter.
//!
//! Rules: log user ids, never emails, tokens, message content or
//! request bodies; dotted field names with units (`duration_ms`).

use tracing_subscriber::EnvFilter;

use crate::config::Environment;

const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(environment: Environment) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (in tests, say) leaves the first subscriber in place.
    let _ = if environment.is_deployed() {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

tokio::task_local! {
    static REQUEST_ID: axum::http::HeaderValue;
}

/// Runs `work` as the request with id `id`: [`request_id`] answers it inside.
pub async fn with_request_id<F: std::future::Future>(
    id: axum::http::HeaderValue,
    work: F,
) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The id of the request being handled, if any (for error bodies and log lines).
pub fn request_id() -> Option<String> {
    REQUEST_ID
        .try_with(|id| id.to_str().map(str::to_owned).ok())
        .ok()
        .flatten()
}
