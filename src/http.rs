//! The HTTP surface. For now: liveness and readiness.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::config::Config;
use crate::db::Db;
use crate::error::AppError;

/// What every handler can reach.
#[derive(Debug, Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: Db,
}

/// The whole application: `main` serves it and the tests call it directly.
pub fn build_app(state: AppState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .with_state(state)
}

#[derive(Debug, Serialize)]
struct Status {
    status: &'static str,
}

/// The process is alive. Touches nothing else, so it stays cheap for frequent probes.
async fn health() -> Json<Status> {
    Json(Status { status: "ok" })
}

/// The process can serve requests: the database answers. 503 otherwise.
async fn ready(State(state): State<AppState>) -> Result<Json<Status>, AppError> {
    match state.db.ping().await {
        Ok(()) => Ok(Json(Status { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: database unreachable");
            Err(AppError::Unavailable("The database is not reachable."))
        }
    }
}
