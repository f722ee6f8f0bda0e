//! Logging, and what is known about the request being handled. Human-readable lines in
//! development, JSON lines in deployed environments (LOG_FORMAT chooses either). RUST_LOG
//! overrides the default filter.
//!
//! Rules: log user ids, never emails, tokens, message content or request bodies; the route
//! template, never the path (a path can hold a signature or a token); dotted field names with
//! units (`duration_ms`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::EnvFilter;
use uuid::Uuid;

use crate::config::LogFormat;

const DEFAULT_FILTER: &str = "info,tokio_postgres=warn";

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second call (in tests, say) leaves the first subscriber in place.
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// What is known about the request being handled, filled in as it goes through the layers:
/// read by error bodies, log lines and error reports.
#[derive(Debug)]
pub struct RequestContext {
    pub id: axum::http::HeaderValue,
    pub method: String,
    /// Where this request's errors are reported (None: Sentry is off).
    pub reporter: Option<std::sync::Arc<crate::sentry::Reporter>>,
    /// The signed-in user, once a session has been verified.
    user: Mutex<Option<Uuid>>,
    /// The matched route's template, once routed.
    route: Mutex<Option<String>>,
    /// A panic has been reported for this request already.
    panicked: AtomicBool,
}

impl RequestContext {
    pub fn new(
        id: axum::http::HeaderValue,
        method: &axum::http::Method,
        reporter: Option<std::sync::Arc<crate::sentry::Reporter>>,
    ) -> Self {
        RequestContext {
            id,
            method: method.as_str().to_string(),
            reporter,
            user: Mutex::new(None),
            route: Mutex::new(None),
            panicked: AtomicBool::new(false),
        }
    }

    pub fn user(&self) -> Option<Uuid> {
        self.user.lock().ok().and_then(|u| *u)
    }

    pub fn route(&self) -> Option<String> {
        self.route.lock().ok().and_then(|r| r.clone())
    }

    pub fn panicked(&self) -> bool {
        self.panicked.load(Ordering::Acquire)
    }

    /// Marks the request as having panicked (its panic is reported already).
    pub fn set_panicked(&self) {
        self.panicked.store(true, Ordering::Release);
    }
}

tokio::task_local! {
    static REQUEST: std::sync::Arc<RequestContext>;
}

/// Runs `work` as the request `context`: [`request_id`] and the setters below reach it inside.
pub async fn with_request<F: std::future::Future>(
    context: std::sync::Arc<RequestContext>,
    work: F,
) -> F::Output {
    REQUEST.scope(context, work).await
}

/// Runs `f` with the request being handled, if any.
pub fn with_current<T>(f: impl FnOnce(&RequestContext) -> T) -> Option<T> {
    REQUEST.try_with(|context| f(context)).ok()
}

/// The id of the request being handled, if any (for error bodies and log lines).
pub fn request_id() -> Option<String> {
    with_current(|c| c.id.to_str().map(str::to_owned).ok()).flatten()
}

/// Records the signed-in user of the request being handled.
pub fn set_user(user: Uuid) {
    with_current(|c| {
        if let Ok(mut slot) = c.user.lock() {
            *slot = Some(user);
        }
    });
}

/// Records the route template the request being handled matched.
pub fn set_route(route: &str) {
    with_current(|c| {
        if let Ok(mut slot) = c.route.lock() {
            *slot = Some(route.to_string());
        }
    });
}
