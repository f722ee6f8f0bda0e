//! `POST /api/account/export`, `GET /api/account/exports`, `GET /api/account/exports/{id}` and
//! its `/download`.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::deletion;
use super::repo::{self, ExportRow};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::IdPath;
use crate::state::AppState;
use crate::storage::keys;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(list))
        .routes(routes!(one))
        .routes(routes!(download))
        .routes(routes!(request_deletion))
        .routes(routes!(confirm_deletion))
        .routes(routes!(cancel_deletion))
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

/// `POST /api/account/deletion`: the account's email, typed again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "me@example.com"}))]
pub struct DeletionRequest {
    /// The account's email address, typed to show this is meant.
    pub email: String,
}

/// A code is on its way.
#[derive(Debug, Serialize, ToSchema)]
pub struct CodeSent {
    /// Until when the code works.
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Asks to delete the account: sends a six-digit code to its email address, which
/// `POST /api/account/deletion/confirm` takes. Nothing is deleted yet.
#[utoipa::path(post, path = "/api/account/deletion", tag = "account",
    request_body = DeletionRequest,
    responses((status = 202, description = "The code is on its way", body = CodeSent),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "DELETION_PENDING: the account is already being deleted", body = crate::error::ErrorBody),
              (status = 422, description = "The email is not this account's", body = crate::error::ErrorBody),
              (status = 429, description = "Too many codes asked for (5 an hour)", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn request_deletion(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<DeletionRequest>,
) -> Result<(StatusCode, Json<CodeSent>), AppError> {
    let expires_at = send_deletion_code(&state, &api, ip, &body.email).await?;
    Ok((StatusCode::ACCEPTED, Json(CodeSent { expires_at })))
}

/// Checks the typed address and sends the code (shared with the account page).
pub async fn send_deletion_code(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    typed: &str,
) -> Result<DateTime<Utc>, AppError> {
    let user = api.user_id();
    let tx = state.db.system().await?;
    let Some((email, requested, _)) = deletion::account(&tx, user).await? else {
        return Err(AppError::unauthorized());
    };
    if requested.is_some() {
        return Err(AppError::conflict(
            "DELETION_PENDING",
            "This account is already being deleted; you can cancel that from your account page.",
        ));
    }
    if !typed.trim().eq_ignore_ascii_case(&email) {
        return Err(AppError::invalid(
            "email",
            "is not this account's email address; type it exactly to confirm",
        ));
    }
    let verdict = crate::limits::hit(
        &tx,
        &format!("deletion:{}", user.0),
        crate::limits::Rate::per_hour(5),
    )
    .await?;
    if let Err(wait) = verdict {
        tx.commit().await?;
        return Err(AppError::rate_limited(
            "Too many deletion codes were asked for. Please wait before asking for another.",
            wait,
        ));
    }
    let code = crate::auth::tokens::new_code();
    let expires_at = deletion::save_code(&tx, user, &code).await?;
    crate::email::outbox::enqueue(&tx, &deletion::code_email(state, &email, &code)).await?;
    audit::record_system(
        &tx,
        &Entry::new("account.deletion_code_sent", "account")
            .user(user)
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    Ok(expires_at)
}

/// `POST /api/account/deletion/confirm`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"code": "123 456"}))]
pub struct DeletionConfirm {
    /// The six-digit code from the email (spaces and dashes are ignored).
    pub code: String,
}

/// The deletion under way.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionStarted {
    /// When everything is erased, unless the deletion is cancelled before (by signing in again).
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub purge_after: DateTime<Utc>,
}

/// Confirms the deletion with the emailed code: every session ends (this one too; the cookie is
/// cleared), every public page stops being served at once, a Pro subscription is cancelled, and
/// after the grace period everything is erased.
#[utoipa::path(post, path = "/api/account/deletion/confirm", tag = "account",
    request_body = DeletionConfirm,
    responses((status = 200, body = DeletionStarted),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "DELETION_PENDING", body = crate::error::ErrorBody),
              (status = 422, description = "The code is wrong, expired or used up", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn confirm_deletion(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    JsonBody(body): JsonBody<DeletionConfirm>,
) -> Result<Response, AppError> {
    let purge_after = confirm_deletion_code(&state, &api, ip, &body.code).await?;
    let mut response = Json(DeletionStarted { purge_after }).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        crate::auth::session::clear_cookie(&state.config.app_url),
    );
    Ok(response)
}

/// Checks the code and starts the deletion (shared with the account page).
pub async fn confirm_deletion_code(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    raw_code: &str,
) -> Result<DateTime<Utc>, AppError> {
    let user = api.user_id();
    let code = crate::auth::tokens::normalise_code(raw_code)
        .ok_or_else(|| AppError::invalid("code", "must be the six digits from the email"))?;
    let tx = state.db.system().await?;
    match deletion::use_code(&tx, user, &code).await? {
        Ok(()) => {}
        Err(refused) => {
            tx.commit().await?;
            return Err(AppError::invalid(
                "code",
                match refused {
                    deletion::CodeRefused::Wrong => "is not the code we sent",
                    deletion::CodeRefused::Dead => {
                        "has expired or was tried too many times; ask for a new one"
                    }
                },
            ));
        }
    }
    let Some(purge_after) =
        deletion::mark_deleting(&tx, user, state.config.limits.account_deletion_grace_days).await?
    else {
        tx.rollback();
        return Err(AppError::conflict(
            "DELETION_PENDING",
            "This account is already being deleted.",
        ));
    };
    crate::auth::repo::revoke_all_sessions(&tx, user).await?;
    audit::record_system(
        &tx,
        &Entry::new("account.deletion_requested", "account")
            .user(user)
            .ip(ip)
            .details(serde_json::json!({"purge_after": crate::time::rfc3339_string(&purge_after)})),
    )
    .await?;
    tx.commit().await?;
    // This server forgets its pages now; the others hear of it from the database.
    state.live_pages.evict("*");
    if let Err(e) = deletion::cancel_subscriptions(state).await {
        tracing::warn!(error = %e, "could not cancel the subscription yet; the purge job will try again");
    }
    Ok(purge_after)
}

/// The deletion was stopped.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeletionCancelled {
    pub cancelled: bool,
}

/// Stops a deletion during its grace period: the account and its pages are back as they were.
/// A Pro subscription cancelled by the deletion stays cancelled (subscribe again from the account
/// page).
#[utoipa::path(post, path = "/api/account/deletion/cancel", tag = "account",
    responses((status = 200, body = DeletionCancelled),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "NO_DELETION: the account is not being deleted", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn cancel_deletion(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
) -> Result<Json<DeletionCancelled>, AppError> {
    cancel_account_deletion(&state, &api, ip).await?;
    Ok(Json(DeletionCancelled { cancelled: true }))
}

/// Stops the caller's deletion (shared with the account page).
pub async fn cancel_account_deletion(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
) -> Result<(), AppError> {
    let tx = state.db.system().await?;
    if !deletion::cancel(&tx, api.user_id()).await? {
        tx.rollback();
        return Err(AppError::conflict(
            "NO_DELETION",
            "This account is not being deleted.",
        ));
    }
    audit::record_system(
        &tx,
        &Entry::new("account.deletion_cancelled", "account")
            .user(api.user_id())
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
    state.live_pages.evict("*");
    Ok(())
}
