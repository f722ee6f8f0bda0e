//! `POST /api/account/export`, `GET /api/account/exports`, `GET /api/account/exports/{id}` and
//! its `/download`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repo::{self, ExportRow};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::http::params::IdPath;
use crate::state::AppState;
use crate::storage::keys;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(download))
}

/// An export of the caller's data.
#[derive(Debug, Serialize, ToSchema)]
pub struct Export {
    pub id: Uuid,
    /// `running`, `ready`, `failed` or `expired`.
    pub status: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Until when it can be downloaded (seven days after it is ready).
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The archive's size in bytes, once ready.
    pub size_bytes: Option<i64>,
    /// Files in the archive, once ready.
    pub file_count: Option<i32>,
    /// Where to download it, while it is ready.
    pub download_url: Option<String>,
}

impl Export {
    fn new(row: ExportRow) -> Self {
        let live = row.status == "ready" && row.expires_at.is_some_and(|at| at > Utc::now());
        Export {
            download_url: live.then(|| format!("/api/account/exports/{}/download", row.id)),
            status: if row.status == "ready" && !live {
                "expired".to_string()
            } else {
                row.status
            },
            id: row.id,
            created_at: row.created_at,
            finished_at: row.finished_at,
            expires_at: row.expires_at,
            size_bytes: row.size_bytes,
            file_count: row.file_count,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExportList {
    /// The newest twenty, newest first.
    pub items: Vec<Export>,
}

/// Starts an archive of everything of the caller's: account, aides, conversations, files,
/// revisions, published versions and audit trail. It is made in the background; an email says when
/// it is ready. One at a time, and one a day.
#[utoipa::path(post, path = "/api/account/export", tag = "account",
    responses((status = 202, description = "Started", body = Export),
              (status = 401, body = crate::error::ErrorBody),
              (status = 429, description = "EXPORT_RUNNING: one is being made; EXPORT_LIMIT: one was made in the last day (Retry-After says when the next may start)", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
) -> Result<(StatusCode, Json<Export>), AppError> {
    let row = start_export(&state, &api, ip).await?;
    Ok((StatusCode::ACCEPTED, Json(Export::new(row))))
}

/// Starts an export for the caller and its job (shared with the account page's form).
pub async fn start_export(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
) -> Result<ExportRow, AppError> {
    let tx = api.begin(&state.db).await?;
    let row = match repo::start(&tx).await {
        Ok(row) => row,
        Err(e) if e.constraint() == Some("account_exports_one_running") => {
            return Err(AppError::rate_limited_with_code(
                "EXPORT_RUNNING",
                "An export of your data is being made; it will be ready shortly.",
                Duration::from_secs(60),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    let Some(row) = row else {
        let last = repo::last_counted(&tx).await?;
        tx.rollback();
        let wait = last
            .map(|at| at + chrono::Duration::days(1) - Utc::now())
            .and_then(|d| d.to_std().ok())
            .unwrap_or(Duration::from_secs(3600));
        return Err(AppError::rate_limited_with_code(
            "EXPORT_LIMIT",
            "You can export your data once a day; the last export is still available below.",
            wait,
        ));
    };
    audit::record_user(
        &tx,
        &Entry::new("account.export_requested", "export")
            .user(api.user_id())
            .resource(row.id)
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
    tokio::spawn(super::export::run(state.clone(), api.user_id(), row.id));
    Ok(row)
}

/// The caller's exports, newest first.
#[utoipa::path(get, path = "/api/account/exports", tag = "account",
    responses((status = 200, body = ExportList),
              (status = 401, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    api: ApiUser,
) -> Result<Json<ExportList>, AppError> {
    let tx = api.begin(&state.db).await?;
    let rows = repo::list(&tx).await?;
    tx.rollback();
    Ok(Json(ExportList {
        items: rows.into_iter().map(Export::new).collect(),
    }))
}

/// One of the caller's exports (to follow one being made).
#[utoipa::path(get, path = "/api/account/exports/{id}", tag = "account",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Export),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such export of the caller's", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn one(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(id): IdPath,
) -> Result<Json<Export>, AppError> {
    let tx = api.begin(&state.db).await?;
    let row = repo::one(&tx, id).await?;
    tx.rollback();
    row.map(|row| Json(Export::new(row)))
        .ok_or_else(AppError::not_found)
}

/// The archive (`application/zip`), for its owner, while it has not expired. Each download is
/// recorded in the audit trail.
#[utoipa::path(get, path = "/api/account/exports/{id}/download", tag = "account",
    params(("id" = Uuid, Path)),
    responses((status = 200, description = "The zip archive", content_type = "application/zip"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such export of the caller's, not ready, or expired", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(id): IdPath,
    ClientIp(ip): ClientIp,
) -> Result<Response, AppError> {
    let tx = api.begin(&state.db).await?;
    let Some(size) = repo::downloadable(&tx, id).await? else {
        tx.rollback();
        return Err(AppError::not_found());
    };
    let object = state
        .storage
        .workspace
        .get(&keys::export(api.user_id().0, id))
        .await
        .map_err(|e| match e {
            object_store::Error::NotFound { .. } => AppError::not_found(),
            other => AppError::internal(other),
        })?;
    audit::record_user(
        &tx,
        &Entry::new("account.export_downloaded", "export")
            .user(api.user_id())
            .resource(id)
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
    let mut response = Body::from_stream(object.into_stream()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    let name = format!(
        "attachment; filename=\"aide-export-{}.zip\"",
        Utc::now().format("%Y-%m-%d")
    );
    if let Ok(value) = HeaderValue::from_str(&name) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
