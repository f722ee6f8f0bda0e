//! The HTTP surface: the router every request goes through, and what it shares.

pub mod body;
pub mod client_ip;
mod docs;
mod guard;
mod hosts;
pub mod input;
mod openapi;
pub mod params;
pub mod request_id;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::{Json, Router, middleware};
use serde::Serialize;
use tokio::sync::Notify;
use utoipa::ToSchema;

use crate::auth::SessionKey;
use crate::config::Config;
use crate::db::Db;
use crate::error::AppError;
use crate::limits::ApiLimiter;
use crate::public::{LiveCache, PageCache};
use crate::storage::Storage;

/// Largest request body accepted by default (routes that take files set their own).
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest a request may take before it is answered with 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a file upload may take: it may be large and the client slow, so long as bytes keep
/// arriving (a stall of 10 s ends it sooner, see [`body::STALL_TIMEOUT`]). It holds no database
/// connection meanwhile.
pub const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// What every handler can reach: [`Shared`] behind one `Arc`, so the per-request clones that
/// handlers and middleware take cost one reference count, not one per field.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        AppState(Arc::new(shared))
    }
}

impl AppState {
    pub fn new(config: Arc<Config>, db: Db, session_key: SessionKey, storage: Storage) -> Self {
        Shared::new(config, db, session_key, storage).into()
    }
}

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct Shared {
    pub config: Arc<Config>,
    pub db: Db,
    pub session_key: SessionKey,
    /// Wakes the email worker after an email is queued.
    pub outbox_wake: Arc<Notify>,
    /// This process's share of the per-user API rate limit.
    pub api_limiter: Arc<ApiLimiter>,
    /// Page files.
    pub storage: Storage,
    /// Public pages already read and prepared.
    pub page_cache: Arc<PageCache>,
    /// Which public pages are live (kept true by database notifications).
    pub live_pages: Arc<LiveCache>,
    /// Wakes the storage clean-up worker after an aide is deleted.
    pub storage_cleanup_wake: Arc<Notify>,
    /// Public-page requests memory could not answer, per client network.
    pub public_misses: Arc<crate::public::MissLimiter>,
    /// Uploads and publishes under way, per user (UPLOADS_IN_FLIGHT_PER_USER).
    pub in_flight: Arc<crate::limits::InFlight>,
}

impl Shared {
    pub fn new(config: Arc<Config>, db: Db, session_key: SessionKey, storage: Storage) -> Self {
        Shared {
            storage,
            page_cache: Arc::new(PageCache::default()),
            storage_cleanup_wake: Arc::new(Notify::new()),
            live_pages: Arc::new(LiveCache::default()),
            config,
            db,
            session_key,
            outbox_wake: Arc::new(Notify::new()),
            api_limiter: Arc::new(ApiLimiter::default()),
            in_flight: Arc::new(crate::limits::InFlight::default()),
            public_misses: Arc::new(crate::public::MissLimiter::default()),
        }
    }
}

impl Shared {
    /// After a change to an aide's public page commits: forget what this process knew about it
    /// at once (other processes hear of it through the database's notification).
    pub fn page_changed(&self, aide: uuid::Uuid, slugs: &[Option<&str>]) {
        self.live_pages.evict_aide(aide);
        for slug in slugs.iter().flatten() {
            self.live_pages.evict(slug);
        }
    }
}

/// The whole application: `main` serves it and the tests call it directly.
pub fn build_app(state: AppState) -> Router {
    Router::new()
        .merge(openapi::api().split_for_parts().0)
        .merge(crate::home::router())
        .merge(crate::public::router())
        .merge(openapi::router())
        .merge(docs::router())
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        // Layers run bottom-up on the way in: the request id is set first, so every later
        // layer and every error body can use it.
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), guard::front))
        .layer(middleware::from_fn(request_id::middleware))
        .with_state(state)
}

/// Any address no route serves: our 404, as JSON under `/api` and `/auth`, as a page elsewhere.
async fn unknown_route(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = uri.path();
    if path.starts_with("/api/") || path.starts_with("/auth/") || path == "/api" {
        AppError::client(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "There is nothing at this address.",
        )
        .into_response()
    } else {
        crate::html::page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>Not found</h1><p>There is nothing at this address. <a href=\"/\">Home</a></p>",
        )
    }
}

/// A method the address does not take: 405 in our error shape (axum adds `Allow`).
async fn wrong_method(method: axum::http::Method) -> AppError {
    AppError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("This address does not take {method} requests."),
    )
}

/// Answers 408 when a request runs past its time: [`UPLOAD_TIMEOUT`] for file uploads,
/// [`REQUEST_TIMEOUT`] for everything else.
async fn deadline(
    request: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let path = request.uri().path();
    // Uploads, and publishes and restores, which copy every new file to the published bucket.
    let upload = path.starts_with("/api/aides/")
        && ((request.method() == axum::http::Method::PUT && path.contains("/files/"))
            || (request.method() == axum::http::Method::POST
                && (path.ends_with("/publish") || path.ends_with("/restore"))));
    let limit = if upload {
        UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => AppError::client(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "The request took too long and was stopped. Please try again.",
        )
        .into_response(),
    }
}

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

/// Liveness or readiness.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `ready`.
    status: &'static str,
}

/// The process is alive. Touches nothing else, so it stays cheap for frequent probes.
#[utoipa::path(get, path = "/health", tag = "operations",
    responses((status = 200, body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The process can serve requests: the database answers.
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Health),
              (status = 503, description = "The database is unreachable", body = crate::error::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    match state.db.ping().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(AppError::Unavailable("The database is not reachable."))
        }
    }
}
