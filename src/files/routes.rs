//! `/api/aides/{id}/files`: put, get, delete and list an aide's workspace files.

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;

use super::repo::{self, FileRow};
use super::{FilePath, content_type_for};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::params::IdPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/aides/{id}/files", get(list_files))
        .route(
            "/api/aides/{id}/files/{*path}",
            get(get_file)
                .delete(delete_file)
                // The tier's own limit is checked while reading the body.
                .put(put_file)
                .layer(DefaultBodyLimit::disable()),
        )
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a blob lives in the workspace bucket: content-addressed per aide.
pub(crate) fn blob_key(aide: Uuid, sha256: &[u8]) -> object_store::path::Path {
    object_store::path::Path::from(format!("aides/{aide}/blobs/{}", hex(sha256)))
}

/// Stores a file (the body), replacing any file at that path. Size limits by tier.
#[utoipa::path(put, path = "/api/aides/{id}/files/{path}", tag = "files",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("path" = String, Path, description = "The file's path, such as index.html or css/site.css")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
                 description = "The file's bytes; Content-Type is kept, or guessed from the extension"),
    responses((status = 200, body = FileInfo),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 413, description = "FILE_TOO_LARGE or AIDE_STORAGE_FULL", body = crate::error::ErrorBody),
              (status = 422, description = "A path with .., a leading /, a backslash or control characters", body = crate::error::ErrorBody)),
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
    let mut tx = api.begin(&state.db).await?;
    let tier = repo::lock_aide(&mut tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    // Before the blob is written: the storage worker may not delete it until this commits.
    repo::share_blobs(&mut tx, aide).await?;
    let limits = &state.config.limits;
    let (max_file, max_aide) = if tier == "pro" {
        (limits.pro_max_file_bytes, limits.pro_max_aide_bytes)
    } else {
        (limits.free_max_file_bytes, limits.free_max_aide_bytes)
    };
    let bytes: Bytes = axum::body::to_bytes(body, max_file as usize)
        .await
        .map_err(|_| {
            too_large(
                "FILE_TOO_LARGE",
                format!(
                    "Files may be at most {} on your plan{}.",
                    human(max_file),
                    if tier == "pro" {
                        ""
                    } else {
                        "; Pro allows larger ones"
                    }
                ),
            )
        })?;
    let used = repo::bytes_used_except(&mut tx, aide, &path).await?;
    let size = bytes.len() as i64;
    if used + size > i64::from(max_aide) {
        return Err(too_large(
            "AIDE_STORAGE_FULL",
            format!(
                "This aide's files may take at most {} on your plan; it uses {} and this file needs {}.",
                human(max_aide),
                human_i64(used),
                human_i64(size)
            ),
        ));
    }
    let sha256 = Sha256::digest(&bytes).to_vec();
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let content_type = content_type_for(&path, declared);
    // The blob first: if the database then fails, an unreferenced blob is all that is left.
    state
        .storage
        .workspace
        .put(&blob_key(aide, &sha256), bytes.into())
        .await
        .map_err(AppError::internal)?;
    let row = repo::upsert(&mut tx, aide, &path, size, &content_type, &sha256).await?;
    audit::record_user(
        &mut tx,
        &Entry::new("file.put", "aide")
            .resource(aide)
            .details(serde_json::json!({"path": path.as_str(), "size_bytes": size}))
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
    // A replaced file may have left its old bytes unreferenced (queued by a trigger).
    state.storage_cleanup_wake.notify_one();
    Ok(Json(row.into()))
}

/// A file's bytes, served so it cannot act with the app's cookies.
#[utoipa::path(get, path = "/api/aides/{id}/files/{path}", tag = "files",
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
    let mut tx = api.begin_read(&state.db).await?;
    let row = repo::find(&mut tx, aide, &path)
        .await?
        .ok_or_else(AppError::not_found)?;
    tx.finish();
    let bytes = state
        .storage
        .workspace
        .get(&blob_key(aide, &row.sha256))
        .await
        .map_err(AppError::internal)?
        .bytes()
        .await
        .map_err(AppError::internal)?;
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
#[utoipa::path(delete, path = "/api/aides/{id}/files/{path}", tag = "files",
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
    let mut tx = api.begin(&state.db).await?;
    if !repo::delete(&mut tx, aide, &path).await? {
        return Err(AppError::not_found());
    }
    audit::record_user(
        &mut tx,
        &Entry::new("file.delete", "aide")
            .resource(aide)
            .details(serde_json::json!({"path": path.as_str()}))
            .ip(ip),
    )
    .await?;
    tx.commit().await?;
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
    let mut tx = api.begin_read(&state.db).await?;
    if !repo::aide_exists(&mut tx, aide).await? {
        return Err(AppError::not_found());
    }
    let rows = repo::list(&mut tx, aide).await?;
    tx.finish();
    let total_bytes = rows.iter().map(|r| r.size_bytes).sum();
    Ok(Json(FileList {
        files: rows.into_iter().map(FileInfo::from).collect(),
        total_bytes,
    }))
}

fn too_large(code: &'static str, detail: String) -> AppError {
    AppError::client(StatusCode::PAYLOAD_TOO_LARGE, code, detail)
}

fn human(bytes: u32) -> String {
    human_i64(i64::from(bytes))
}

fn human_i64(bytes: i64) -> String {
    const MIB: i64 = 1024 * 1024;
    if bytes >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}
