//! The whole application: every route, the fallbacks, and the layer around them. `main` serves
//! it and the tests call it directly.

mod docs;
pub(crate) mod openapi;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::{Json, Router, middleware};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::AppError;
use crate::http::{MAX_BODY_BYTES, front};
use crate::state::AppState;

/// The whole application: `main` serves it and the tests call it directly.
pub fn build_app(state: AppState) -> Router {
    build_app_with(state, Router::new())
}

/// [`build_app`] with `extra` routes behind the same layers: how tests reach failures no real
/// route can be made to have on demand (a panic).
pub fn build_app_with(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(extra)
        .merge(openapi::api().split_for_parts().0)
        .merge(crate::web::router())
        .merge(crate::public::router())
        .merge(openapi::router())
        .merge(docs::router())
        .route("/metrics", axum::routing::get(crate::metrics::serve))
        .route_layer(middleware::from_fn(crate::metrics::tag_route))
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(state.clone(), front::front))
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
        crate::web::not_found()
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

/// How long readiness waits for the database.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The process can serve requests: it is not shutting down, and the database answers within two
/// seconds. A 503 names the check that failed (`SHUTTING_DOWN` or `DATABASE_UNREACHABLE`).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Health),
              (status = 503, description = "SHUTTING_DOWN: the server has been asked to stop and is draining; DATABASE_UNREACHABLE: the database did not answer in time", body = crate::error::ErrorBody)))]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, AppError> {
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return Err(AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "SHUTTING_DOWN",
            "This server is shutting down; send traffic elsewhere.",
        ));
    }
    let unreachable = || {
        AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNREACHABLE",
            "The database is not reachable.",
        )
    };
    match tokio::time::timeout(READY_TIMEOUT, state.db.ping()).await {
        Ok(Ok(())) => Ok(Json(Health { status: "ready" })),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(unreachable())
        }
        Err(_) => {
            tracing::warn!("readiness check: the database did not answer in time");
            Err(unreachable())
        }
    }
}
