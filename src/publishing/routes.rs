//! Publish, unpublish, list versions, restore a version.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::repo::{self, VersionFile, VersionRow};
use crate::aides::model::{Aide, Status};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::db::UserTx;
use crate::error::AppError;
use crate::files::blob_key;
use crate::http::AppState;
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::IdPath;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/aides/{id}/publish", post(publish))
        .route("/api/aides/{id}/unpublish", post(unpublish))
        .route("/api/aides/{id}/versions", get(list_versions))
        .route(
            "/api/aides/{id}/versions/{n}/restore",
            post(restore_version),
        )
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// Up to 1,000 characters, for the owner's own history.
    pub notes: Option<String>,
}

/// A published version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    pub version: i32,
    pub notes: Option<String>,
    pub size_bytes: i64,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub published_at: DateTime<Utc>,
    /// The permanent address of this version.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Published {
    pub version: Version,
    /// The page's public address (always its latest version).
    pub url: String,
    pub aide: Aide,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionList {
    pub versions: Vec<Version>,
}

/// The `{n}` of a version route: a whole number from 1. Otherwise 422.
pub struct VersionNumber(i32);

impl<S: Send + Sync> FromRequestParts<S> for VersionNumber {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        #[derive(Deserialize)]
        struct Params {
            n: String,
        }
        let Path(params) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::invalid("n", "missing from the path"))?;
        match params.n.parse::<i32>() {
            Ok(n) if n >= 1 => Ok(VersionNumber(n)),
            _ => Err(AppError::invalid(
                "n",
                "must be a version number (1, 2, 3, ...)",
            )),
        }
    }
}

fn version_key(aide: Uuid, version: i32) -> String {
    format!("aides/{aide}/v{version}/")
}

fn object_key(prefix: &str, path: &str) -> object_store::path::Path {
    object_store::path::Path::from(format!("{prefix}{path}"))
}

/// A slug nobody chose: ten characters, a letter then letters and digits, drawn at random.
fn random_slug() -> String {
    const FIRST: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const REST: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    let mut slug = String::with_capacity(10);
    slug.push(FIRST[rng.random_range(0..FIRST.len())] as char);
    for _ in 0..9 {
        slug.push(REST[rng.random_range(0..REST.len())] as char);
    }
    slug
}

fn version_view(state: &AppState, slug: &str, row: VersionRow) -> Version {
    Version {
        url: state
            .config
            .public_url_for(&format!("s/{slug}/v/{}/", row.version))
            .to_string(),
        version: row.version,
        notes: row.notes,
        size_bytes: row.size_bytes,
        published_at: row.published_at,
    }
}

/// Records version `version` with `files` (already stored) and marks the aide published.
async fn finish_publish(
    state: &AppState,
    mut tx: UserTx,
    aide: Uuid,
    version: i32,
    notes: Option<&str>,
    files: &[VersionFile],
    audit_entry: Entry,
) -> Result<Published, AppError> {
    let row = repo::insert_version(
        &mut tx,
        aide,
        version,
        &version_key(aide, version),
        notes,
        files,
    )
    .await?;
    let aide_row = repo::mark_published(&mut tx, aide, &random_slug()).await?;
    audit::record_user(&mut tx, &audit_entry.resource(aide)).await?;
    tx.commit().await?;
    state.page_changed(aide, &[aide_row.slug.as_deref()]);
    let slug = aide_row.slug.clone().unwrap_or_default();
    Ok(Published {
        url: state
            .config
            .public_url_for(&format!("s/{slug}/"))
            .to_string(),
        version: version_view(state, &slug, row),
        aide: aide_row.into(),
    })
}

/// Publishes the workspace as a new, immutable version. The page must have an index.html.
#[utoipa::path(post, path = "/api/aides/{id}/publish", tag = "publishing",
    params(("id" = Uuid, Path, description = "The aide's id")),
    request_body = PublishRequest,
    responses((status = 201, body = Published),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "AIDE_ARCHIVED", body = crate::error::ErrorBody),
              (status = 422, description = "No index.html, or notes too long", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn publish(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    body: Option<JsonBody<PublishRequest>>,
) -> Result<(StatusCode, Json<Published>), AppError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let notes = request
        .notes
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty());
    if notes.is_some_and(|n| n.chars().count() > 1000) {
        return Err(AppError::invalid(
            "notes",
            "must be at most 1,000 characters",
        ));
    }
    let mut tx = api.begin(&state.db).await?;
    // Holding the aide's row lock until commit numbers concurrent publishes one after another.
    let locked = repo::lock_aide(&mut tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    if locked.status == Status::Archived {
        return Err(AppError::conflict(
            "AIDE_ARCHIVED",
            "This aide is archived. Restore it before publishing.",
        ));
    }
    // The blobs read below stay until this commits (see files::BLOB_LOCK_CLASS).
    crate::files::share_blobs(&mut tx, aide).await?;
    let files = repo::workspace_files(&mut tx, aide).await?;
    if !files.iter().any(|f| f.path == "index.html") {
        return Err(AppError::invalid(
            "files",
            "there is no index.html to publish; upload the page as index.html first",
        ));
    }
    let version = repo::next_version(&mut tx, aide).await?;
    let prefix = version_key(aide, version);
    // Every object is stored before the version is recorded; any failure rolls the record back.
    for file in &files {
        let bytes = state
            .storage
            .workspace
            .get(&blob_key(aide, &file.sha256))
            .await
            .map_err(AppError::internal)?
            .bytes()
            .await
            .map_err(AppError::internal)?;
        state
            .storage
            .published
            .put(&object_key(&prefix, &file.path), bytes.into())
            .await
            .map_err(AppError::internal)?;
    }
    let size: i64 = files.iter().map(|f| f.size_bytes).sum();
    let entry = Entry::new("aide.publish", "aide")
        .ip(ip)
        .details(serde_json::json!({
            "version": version, "files": files.len(), "size_bytes": size
        }));
    let published = finish_publish(&state, tx, aide, version, notes, &files, entry).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

/// Stops serving the page at once (its versions are kept).
#[utoipa::path(post, path = "/api/aides/{id}/unpublish", tag = "publishing",
    params(("id" = Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "NOT_PUBLISHED", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn unpublish(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
) -> Result<Json<Aide>, AppError> {
    let mut tx = api.begin(&state.db).await?;
    repo::lock_aide(&mut tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    let row = repo::mark_draft(&mut tx, aide)
        .await?
        .ok_or_else(|| AppError::conflict("NOT_PUBLISHED", "This aide is not published."))?;
    audit::record_user(
        &mut tx,
        &Entry::new("aide.unpublish", "aide").resource(aide).ip(ip),
    )
    .await?;
    tx.commit().await?;
    state.page_changed(aide, &[row.slug.as_deref()]);
    Ok(Json(row.into()))
}

/// The aide's published versions, newest first.
#[utoipa::path(get, path = "/api/aides/{id}/versions", tag = "publishing",
    params(("id" = Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = VersionList),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list_versions(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide): IdPath,
) -> Result<Json<VersionList>, AppError> {
    let mut tx = api.begin_read(&state.db).await?;
    let slug = crate::aides::find_slug(&mut tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    let rows = repo::list_versions(&mut tx, aide).await?;
    tx.finish();
    let slug = slug.unwrap_or_default();
    Ok(Json(VersionList {
        versions: rows
            .into_iter()
            .map(|r| version_view(&state, &slug, r))
            .collect(),
    }))
}

/// Publishes version n's content again, as the newest version.
#[utoipa::path(post, path = "/api/aides/{id}/versions/{n}/restore", tag = "publishing",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("n" = i32, Path, description = "The version to publish again")),
    responses((status = 201, body = Published),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such aide or version", body = crate::error::ErrorBody),
              (status = 409, description = "AIDE_ARCHIVED", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn restore_version(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    VersionNumber(from): VersionNumber,
) -> Result<(StatusCode, Json<Published>), AppError> {
    let mut tx = api.begin(&state.db).await?;
    let locked = repo::lock_aide(&mut tx, aide)
        .await?
        .ok_or_else(AppError::not_found)?;
    if locked.status == Status::Archived {
        return Err(AppError::conflict(
            "AIDE_ARCHIVED",
            "This aide is archived. Restore it before publishing.",
        ));
    }
    let files = repo::version_files(&mut tx, aide, from).await?;
    if files.is_empty() {
        return Err(AppError::not_found());
    }
    let version = repo::next_version(&mut tx, aide).await?;
    let (source, target) = (version_key(aide, from), version_key(aide, version));
    for file in &files {
        state
            .storage
            .published
            .copy(
                &object_key(&source, &file.path),
                &object_key(&target, &file.path),
            )
            .await
            .map_err(AppError::internal)?;
    }
    let entry = Entry::new("aide.version_restore", "aide")
        .ip(ip)
        .details(serde_json::json!({"from": from, "version": version}));
    let notes = format!("Restored from version {from}");
    let published = finish_publish(&state, tx, aide, version, Some(&notes), &files, entry).await?;
    Ok((StatusCode::CREATED, Json(published)))
}
