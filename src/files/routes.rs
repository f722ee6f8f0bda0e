//! `/api/aides/{id}/files`: put, get, delete and list an aide's workspace files.

use super::guard::{BlobGuard, begin_sharing_blobs};
use super::repo::{self, FileRow};
use super::{FilePath, content_type_for, quota};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::http::body::{BodyError, STALL_TIMEOUT, read_limited};
use crate::http::client_ip::ClientIp;
use crate::http::params::IdPath;
use crate::revisions;
use crate::state::AppState;
use crate::storage::keys::{self, hex};
use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    let file = OpenApiRouter::new()
        .routes(routes!(get_file, put_file, delete_file))
        // The tier's own limit is checked while reading the body.
        .route_layer(DefaultBodyLimit::disable());
    OpenApiRouter::new().routes(routes!(list_files)).merge(file)
}

/// The `{*path}` of a file route, normalised. Malformed: 422.
pub struct FilePathParam(FilePath);

impl<S: Send + Sync> FromRequestParts<S> for FilePathParam {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        #[derive(Deserialize)]
        struct Params {
            path: String,
        }
        let Path(params) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::invalid("path", "is missing or not valid UTF-8"))?;
        FilePath::parse(&params.path)
            .map(FilePathParam)
            .map_err(|m| AppError::invalid("path", m))
    }
}

/// A workspace file's description.
#[derive(Debug, Serialize, ToSchema)]
pub struct FileInfo {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl From<FileRow> for FileInfo {
    fn from(row: FileRow) -> Self {
        FileInfo {
            path: row.path,
            size_bytes: row.size_bytes,
            content_type: row.content_type,
            sha256: hex(&row.sha256),
            updated_at: row.updated_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FileList {
    pub files: Vec<FileInfo>,
    pub total_bytes: i64,
}

/// Stores a file (the body), replacing any file at that path. Size and count limits by tier.
///
/// No database connection is held while the body arrives or the blob is stored: the aide and the
/// tier are read first, then the body (cut off after 10 s without data), then the blob is
/// protected (see [`super::guard`]) and stored, and a last transaction records it after checking
/// the limits again under the aide's lock.
#[utoipa::path(put, path = "/api/aides/{id}/files/{*path}", tag = "files",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("path" = String, Path, description = "The file's path, such as index.html or css/site.css")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
                 description = "The file's bytes; Content-Type is kept, or guessed from the extension"),
    responses((status = 200, body = FileInfo),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 408, description = "UPLOAD_STALLED: no data arrived for 10 seconds", body = crate::error::ErrorBody),
              (status = 413, description = "FILE_TOO_LARGE, AIDE_STORAGE_FULL, AIDE_FILE_LIMIT or ACCOUNT_STORAGE_FULL", body = crate::error::ErrorBody),
              (status = 422, description = "A path with .., a leading /, a backslash or control characters", body = crate::error::ErrorBody),
              (status = 429, description = "RATE_LIMITED, or UPLOADS_IN_FLIGHT: too many uploads and publishes under way", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn put_file(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    FilePathParam(path): FilePathParam,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<FileInfo>, AppError> {
    let _slot = enter_in_flight(&state, &api)?;
    let tx = api.begin_read(&state.db).await?;
    let tier = repo::aide_tier(&tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    tx.finish();
    let limits = state.config.limits.tier(tier);

    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = read_limited(body, declared, limits.max_file_bytes, STALL_TIMEOUT)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge => quota::file_too_large(&limits),
            BodyError::Stalled => AppError::client(
                StatusCode::REQUEST_TIMEOUT,
                "UPLOAD_STALLED",
                "The upload stopped: no data arrived for 10 seconds. Please try again.",
            ),
            BodyError::Broken => AppError::client(
                StatusCode::BAD_REQUEST,
                "UPLOAD_BROKEN",
                "The upload was cut off before it finished. Please try again.",
            ),
        })?;
    let size = bytes.len() as i64;
    let sha256 = Sha256::digest(&bytes).to_vec();
    let declared_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_type = content_type_for(&path, declared_type);
    let upload = quota::Upload {
        aide,
        path: &path,
        size,
        sha256: &sha256,
    };

    // Refuse now what would be refused anyway, before storing anything.
    let tx = begin_sharing_blobs(&state.db, &api, aide).await?;
    quota::check_upload(&tx, &limits, &upload).await?;
    let (guard, ()) = futures_util::future::try_join(
        BlobGuard::take(&tx, aide, std::slice::from_ref(&sha256)),
        tx.commit_queued().map_err(AppError::from),
    )
    .await?;
    // Back to the pool before the bytes move.
    drop(tx);

    let stored = state
        .storage
        .workspace
        .put(&keys::blob(aide, &sha256), bytes.into())
        .await
        .map_err(AppError::storage);
    let recorded = match stored {
        Ok(_) => record_upload(&state, &api, ip, &upload, &content_type, guard).await,
        Err(e) => Err((e, guard)),
    };
    match recorded {
        Ok(row) => {
            // A replaced file may have left its old bytes unreferenced (queued by a trigger).
            state.storage_cleanup_wake.notify_one();
            Ok(Json(row.into()))
        }
        Err((e, guard)) => {
            guard.release(&state.db, &api).await;
            if e.status() == StatusCode::NOT_FOUND {
                // The aide was deleted while the bytes moved, perhaps after its folder was
                // emptied: nothing else would remove them.
                remove_orphan(&state.storage.workspace, &keys::blob(aide, &sha256)).await;
            }
            state.storage_cleanup_wake.notify_one();
            Err(e)
        }
    }
}

/// Deletes an object a request stored for an aide that no longer exists. Best effort: logged when
/// it fails.
pub(crate) async fn remove_orphan(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    key: &object_store::path::Path,
) {
    match store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            tracing::warn!(storage.key = %key, error = %e, "could not remove an orphaned object")
        }
    }
}

/// Records an upload whose blob is stored: checks the limits again under the aide's lock (so
/// concurrent uploads are counted one after another), then the path, the audit row and the end
/// of the guard commit together. On failure the guard comes back for release.
async fn record_upload(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    upload: &quota::Upload<'_>,
    content_type: &str,
    guard: BlobGuard,
) -> Result<FileRow, (AppError, BlobGuard)> {
    let tx = match api.begin(&state.db).await {
        Ok(tx) => tx,
        Err(e) => return Err((e, guard)),
    };
    let recorded = async {
        let tier = repo::lock_aide(&tx, upload.aide)
            .await?
            .ok_or_else(AppError::not_found)?;
        let limits = state.config.limits.tier(tier);
        quota::check_upload(&tx, &limits, upload).await?;
        // The path, the revision it makes, its audit row and the end of the guard (the path now
        // refers to the blob) go in one round trip with the commit.
        let (row, _, (), (), ()) = futures_util::future::try_join5(
            repo::upsert(
                &tx,
                upload.aide,
                upload.path,
                upload.size,
                content_type,
                upload.sha256,
            )
            .map_err(AppError::from),
            revisions::record(
                &tx,
                upload.aide,
                revisions::Cause::Upload,
                None,
                None,
                limits.revisions_kept,
            )
            .map_err(AppError::from),
            audit::record_user(
                &tx,
                &Entry::new("file.put", "aide")
                    .resource(upload.aide)
                    .details(
                        serde_json::json!({"path": upload.path.as_str(), "size_bytes": upload.size}),
                    )
                    .ip(ip),
            )
            .map_err(AppError::from),
            guard.settle(&tx).map_err(AppError::from),
            tx.commit_queued().map_err(AppError::from),
        )
        .await?;
        Ok::<_, AppError>(row)
    }
    .await;
    match recorded {
        Ok(row) => Ok(row),
        Err(e) => Err((e, guard)),
    }
}

/// Takes one of the caller's upload-and-publish slots in this process (429 when all are taken).
pub(crate) fn enter_in_flight(
    state: &AppState,
    api: &ApiUser,
) -> Result<crate::limits::Slot, AppError> {
    let max = state.config.limits.uploads_in_flight_per_user;
    state
        .in_flight
        .enter(api.user_id(), max)
        .ok_or_else(|| AppError::RateLimited {
            code: "UPLOADS_IN_FLIGHT",
            detail: format!(
                "You already have {max} uploads or publishes under way. Wait for one to finish, then try again."
            ),
            retry_after: std::time::Duration::from_secs(1),
            usage: None,
        })
}

/// A file's bytes, served so it cannot act with the app's cookies.
#[utoipa::path(get, path = "/api/aides/{id}/files/{*path}", tag = "files",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("path" = String, Path, description = "The file's path")),
    responses((status = 200, description = "The file, with its content type and an ETag"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn get_file(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide): IdPath,
    FilePathParam(path): FilePathParam,
) -> Result<Response, AppError> {
    let tx = api.begin_read(&state.db).await?;
    let row = repo::find(&tx, aide, &path)
        .await?
        .ok_or_else(AppError::not_found)?;
    tx.finish();
    let bytes = state
        .storage
        .workspace
        .get(&keys::blob(aide, &row.sha256))
        .await
        .map_err(AppError::storage)?
        .bytes()
        .await
        .map_err(AppError::storage)?;
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&row.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("\"{}\"", hex(&row.sha256))) {
        headers.insert(header::ETAG, value);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    // A draft page is user-written HTML: on the app's origin it must run in an opaque origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    Ok(response)
}

/// Removes a file.
#[utoipa::path(delete, path = "/api/aides/{id}/files/{*path}", tag = "files",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("path" = String, Path, description = "The file's path")),
    responses((status = 204, description = "Removed"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn delete_file(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    FilePathParam(path): FilePathParam,
) -> Result<StatusCode, AppError> {
    let tx = api.begin(&state.db).await?;
    // One round trip: the aide locked (and its owner's plan), and the file deleted.
    let (tier, deleted) =
        futures_util::future::try_join(repo::lock_aide(&tx, aide), repo::delete(&tx, aide, &path))
            .await?;
    let (Some(tier), true) = (tier, deleted) else {
        return Err(AppError::not_found());
    };
    let keep = state.config.limits.tier(tier).revisions_kept;
    futures_util::future::try_join3(
        revisions::record(&tx, aide, revisions::Cause::Delete, None, None, keep),
        audit::record_user(
            &tx,
            &Entry::new("file.delete", "aide")
                .resource(aide)
                .details(serde_json::json!({"path": path.as_str()}))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    // Its bytes may now be unreferenced (queued by a trigger).
    state.storage_cleanup_wake.notify_one();
    Ok(StatusCode::NO_CONTENT)
}

/// The aide's files, by path.
#[utoipa::path(get, path = "/api/aides/{id}/files", tag = "files",
    params(("id" = Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = FileList),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list_files(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide): IdPath,
) -> Result<Json<FileList>, AppError> {
    let tx = api.begin_read(&state.db).await?;
    let rows = crate::aides::of_owned_aide(&tx, aide, repo::list(&tx, aide)).await;
    tx.finish();
    let rows = rows?;
    let total_bytes = rows.iter().map(|r| r.size_bytes).sum();
    Ok(Json(FileList {
        files: rows.into_iter().map(FileInfo::from).collect(),
        total_bytes,
    }))
}
