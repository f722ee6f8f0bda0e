//! Publish, unpublish, list versions, restore a version.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures_util::TryFutureExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use std::collections::HashSet;

use super::repo::{self, VersionFile, VersionRow};
use crate::aides::model::{Aide, Status};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::db::UserTx;
use crate::error::AppError;
use crate::files::guard::{BlobGuard, begin_sharing_blobs};
use crate::files::quota;
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::{IdPath, NumberPath};
use crate::state::AppState;
use crate::storage::keys;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(publish))
        .routes(routes!(unpublish))
        .routes(routes!(list_versions))
        .routes(routes!(restore_version))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"notes": "First version"}))]
pub struct PublishRequest {
    /// Up to 1,000 characters, for the owner's own history.
    pub notes: Option<String>,
    /// Publish this revision of the workspace (see `GET /api/aides/{id}/revisions`) instead of
    /// the workspace as it is now. The workspace itself is left as it is.
    #[schema(minimum = 1)]
    pub revision: Option<i32>,
}

/// A published version.
#[derive(Debug, Serialize, ToSchema)]
pub struct Version {
    pub version: i32,
    /// The workspace revision this version shows; none for versions published before revisions
    /// were kept.
    pub revision: Option<i32>,
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
        revision: row.revision,
        notes: row.notes,
        size_bytes: row.size_bytes,
        published_at: row.published_at,
    }
}

/// Records the next version with `files` (already stored) under the aide's row lock, and marks
/// the aide published. `new_blobs` are the contents this version adds to the published bucket,
/// counted against the account's storage.
async fn record_version(
    state: &AppState,
    tx: &UserTx,
    aide: Uuid,
    notes: Option<&str>,
    revision: Option<i32>,
    files: &[VersionFile],
    new_blobs: &[(Vec<u8>, i64)],
) -> Result<(VersionRow, crate::aides::model::AideRow), AppError> {
    // Holding the aide's row lock until commit numbers concurrent publishes one after another.
    let locked = repo::aide_state(tx, aide, true)
        .await?
        .ok_or_else(AppError::not_found)?;
    refuse_archived(&locked)?;
    // Publishing claimed the slug already; a restore of an aide from before slugs were claimed
    // that way may still need one.
    repo::claim_slug(tx, aide, &random_slug())
        .await
        .map_err(crate::aides::slug_conflict)?;
    if !new_blobs.is_empty() {
        let limits = state.config.limits.tier(locked.tier);
        let after = crate::files::account_bytes_after(tx, aide, None, new_blobs).await?;
        quota::check_account(&limits, after)?;
    }
    let version = repo::next_version(tx, aide).await?;
    let folder = keys::blob_folder(aide);
    let (row, aide_row) = futures_util::future::try_join(
        repo::insert_version(tx, aide, version, &folder, notes, revision, files),
        repo::mark_published(tx, aide),
    )
    .await?;
    Ok((row, aide_row))
}

fn refuse_archived(state: &repo::AideState) -> Result<(), AppError> {
    if state.status == Status::Archived {
        return Err(AppError::conflict(
            "AIDE_ARCHIVED",
            "This aide is archived. Restore it before publishing.",
        ));
    }
    Ok(())
}

/// The answer to a publish or restore that committed.
fn published_view(
    state: &AppState,
    row: VersionRow,
    aide_row: crate::aides::model::AideRow,
) -> Published {
    let slug = aide_row.slug.clone().unwrap_or_default();
    Published {
        url: state
            .config
            .public_url_for(&format!("s/{slug}/"))
            .to_string(),
        version: version_view(state, &slug, row),
        aide: aide_row.into(),
    }
}

/// Counts one publish (or restore) against PUBLISHES_PER_USER_PER_HOUR.
async fn check_publish_rate(state: &AppState, api: &ApiUser) -> Result<(), AppError> {
    let tx = state.db.system().await?;
    let verdict = crate::limits::hit(
        &tx,
        &format!("publish:user:{}", api.user_id()),
        crate::limits::Rate::per_hour(state.config.limits.publishes_per_user_per_hour),
    )
    .await?;
    tx.commit().await?;
    verdict.map_err(|wait| {
        AppError::rate_limited(
            format!(
                "You can publish {} times an hour. Please wait before publishing again.",
                state.config.limits.publishes_per_user_per_hour
            ),
            wait,
        )
    })
}

/// Publishes the workspace (or one of its revisions) as a new, immutable version. The page must
/// have an index.html.
#[utoipa::path(post, path = "/api/aides/{id}/publish", tag = "publishing",
    params(("id" = Uuid, Path, description = "The aide's id")),
    request_body = PublishRequest,
    responses((status = 201, body = Published),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "AIDE_ARCHIVED, or SLUG_TAKEN: the slug chosen before the first publish was taken meanwhile", body = crate::error::ErrorBody),
              (status = 413, description = "ACCOUNT_STORAGE_FULL", body = crate::error::ErrorBody),
              (status = 422, description = "No index.html, no such revision, or notes too long", body = crate::error::ErrorBody),
              (status = 429, description = "RATE_LIMITED (PUBLISHES_PER_USER_PER_HOUR) or UPLOADS_IN_FLIGHT", body = crate::error::ErrorBody)),
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
    if notes.is_some_and(|n| n.contains('\0')) {
        return Err(AppError::invalid(
            "notes",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    if notes.is_some_and(|n| n.chars().count() > 1000) {
        return Err(AppError::invalid(
            "notes",
            "must be at most 1,000 characters",
        ));
    }
    if request.revision.is_some_and(|n| n < 1) {
        return Err(AppError::invalid(
            "revision",
            "must be a revision number (1 or more)",
        ));
    }
    let published = publish_aide(&state, &api, ip, aide, notes, request.revision).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

/// Publishes revision `asked` of aide `aide` (the newest when None) as its next version, with its
/// audit row; `notes` already checked (the JSON route and the web app's form both come here).
pub(crate) async fn publish_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    aide: Uuid,
    notes: Option<&str>,
    asked: Option<i32>,
) -> Result<Published, AppError> {
    let _slot = crate::files::enter_in_flight(state, api)?;
    check_publish_rate(state, api).await?;

    // The files to publish (the newest revision is the workspace as it is), with the blobs still
    // to copy protected until recorded: the blob lock, held shared from here until the guard
    // commits, keeps the storage worker from removing them meanwhile.
    let tx = begin_sharing_blobs(&state.db, api, aide).await?;
    let folder = keys::blob_folder(aide);
    // One round trip: the files and hashes of an aide that is not the caller's are empty.
    let ((current, (files, revision)), stored) = futures_util::future::try_join(
        futures_util::future::try_join(
            repo::aide_state(&tx, aide, false),
            repo::revision_files(&tx, aide, asked),
        ),
        repo::published_hashes(&tx, aide, &folder),
    )
    .await?;
    let current = current.ok_or_else(AppError::not_found)?;
    refuse_archived(&current)?;
    if let Some(asked) = asked
        && revision.is_none()
    {
        // None from revision_files: no such revision, or one with no files at all.
        let (found, newest) = futures_util::future::try_join(
            crate::revisions::repo::find(&tx, aide, asked),
            crate::revisions::repo::latest(&tx, aide),
        )
        .await?;
        if found.is_none() {
            return Err(AppError::invalid(
                "revision",
                format!(
                    "this aide has no revision {asked} (its newest is {newest}; only the newest {} are kept)",
                    state.config.limits.tier(current.tier).revisions_kept
                ),
            ));
        }
    }
    if !files.iter().any(|f| f.path == "index.html") {
        return Err(AppError::invalid(
            "files",
            "there is no index.html to publish; upload the page as index.html first",
        ));
    }
    let stored: HashSet<Vec<u8>> = stored.into_iter().collect();
    let mut new_blobs: Vec<(Vec<u8>, i64)> = Vec::new();
    for file in &files {
        if !stored.contains(&file.sha256) && !new_blobs.iter().any(|(h, _)| *h == file.sha256) {
            new_blobs.push((file.sha256.clone(), file.size_bytes));
        }
    }
    let limits = state.config.limits.tier(current.tier);
    let after = crate::files::account_bytes_after(&tx, aide, None, &new_blobs).await?;
    quota::check_account(&limits, after)?;
    // The address is taken now, before anything is copied: a chosen slug someone took meanwhile
    // is refused here.
    let hashes: Vec<Vec<u8>> = new_blobs.iter().map(|(h, _)| h.clone()).collect();
    let (_, guard, ()) = futures_util::future::try_join3(
        repo::claim_slug(&tx, aide, &random_slug()).map_err(crate::aides::slug_conflict),
        BlobGuard::take(&tx, aide, &hashes),
        tx.commit_queued().map_err(AppError::from),
    )
    .await?;
    // Back to the pool before the bytes move.
    drop(tx);

    let result = async {
        copy_to_published(state, aide, &hashes).await?;
        let tx = api.begin(&state.db).await?;
        let (row, aide_row) =
            record_version(state, &tx, aide, notes, revision, &files, &new_blobs).await?;
        let size: i64 = files.iter().map(|f| f.size_bytes).sum();
        futures_util::future::try_join3(
            audit::record_user(
                &tx,
                &Entry::new("aide.publish", "aide")
                    .resource(aide)
                    .ip(ip)
                    .details(serde_json::json!({
                        "version": row.version, "revision": revision, "files": files.len(), "size_bytes": size,
                        "new_bytes": new_blobs.iter().map(|(_, s)| s).sum::<i64>()
                    })),
            )
            .map_err(AppError::from),
            guard.settle(&tx).map_err(AppError::from),
            tx.commit_queued().map_err(AppError::from),
        )
        .await?;
        Ok::<_, AppError>((row, aide_row))
    }
    .await;
    let (row, aide_row) = match result {
        Ok(done) => done,
        Err(e) => {
            guard.release(&state.db, api).await;
            if e.status() == StatusCode::NOT_FOUND {
                // Deleted while the bytes were copied: remove what this publish stored.
                let folder = keys::blob_folder(aide);
                for sha256 in &hashes {
                    let key = keys::published_file(&folder, "", sha256);
                    crate::files::remove_orphan(&state.storage.published, &key).await;
                }
            }
            return Err(e);
        }
    };
    state.page_changed(aide, &[aide_row.slug.as_deref()]);
    Ok(published_view(state, row, aide_row))
}

/// Copies workspace blobs to the aide's blob folder in the published bucket.
async fn copy_to_published(
    state: &AppState,
    aide: Uuid,
    hashes: &[Vec<u8>],
) -> Result<(), AppError> {
    for sha256 in hashes {
        let bytes = state
            .storage
            .workspace
            .get(&keys::blob(aide, sha256))
            .await
            .map_err(AppError::storage)?
            .bytes()
            .await
            .map_err(AppError::storage)?;
        state
            .storage
            .published
            .put(&keys::blob(aide, sha256), bytes.into())
            .await
            .map_err(AppError::storage)?;
    }
    Ok(())
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
    Ok(Json(unpublish_aide(&state, &api, ip, aide).await?.into()))
}

/// Takes aide `aide`'s page down at once, with its audit row.
pub(crate) async fn unpublish_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    aide: Uuid,
) -> Result<crate::aides::model::AideRow, AppError> {
    let tx = api.begin(&state.db).await?;
    // The lock and the update in one round trip (PostgreSQL runs the update once the lock is
    // held); a missing aide is told from one that is not published by the first answer.
    let (locked, row) = futures_util::future::try_join(
        repo::aide_state(&tx, aide, true),
        repo::mark_draft(&tx, aide),
    )
    .await?;
    locked.ok_or_else(AppError::not_found)?;
    let row =
        row.ok_or_else(|| AppError::conflict("NOT_PUBLISHED", "This aide is not published."))?;
    futures_util::future::try_join(
        audit::record_user(
            &tx,
            &Entry::new("aide.unpublish", "aide").resource(aide).ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(aide, &[row.slug.as_deref()]);
    Ok(row)
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
    let tx = api.begin_read(&state.db).await?;
    let (slug, rows) = futures_util::future::try_join(
        crate::aides::find_slug(&tx, aide),
        repo::list_versions(&tx, aide),
    )
    .await?;
    tx.finish();
    let slug = slug.ok_or_else(AppError::not_found)?;
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
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, description = "RATE_LIMITED (PUBLISHES_PER_USER_PER_HOUR) or UPLOADS_IN_FLIGHT", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn restore_version(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    NumberPath(from): NumberPath,
) -> Result<(StatusCode, Json<Published>), AppError> {
    let published = republish_version(&state, &api, ip, aide, from).await?;
    Ok((StatusCode::CREATED, Json(published)))
}

/// Publishes version `from` of aide `aide` again as its newest version, with its audit row.
pub(crate) async fn republish_version(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    aide: Uuid,
    from: i32,
) -> Result<Published, AppError> {
    let _slot = crate::files::enter_in_flight(state, api)?;
    let tx = api.begin_read(&state.db).await?;
    let (current, r2_key, files, revision) = futures_util::future::try_join4(
        repo::aide_state(&tx, aide, false),
        repo::version_r2_key(&tx, aide, from),
        repo::version_files(&tx, aide, from),
        repo::version_revision(&tx, aide, from),
    )
    .await?;
    tx.finish();
    let current = current.ok_or_else(AppError::not_found)?;
    refuse_archived(&current)?;
    let r2_key = r2_key.ok_or_else(AppError::not_found)?;
    check_publish_rate(state, api).await?;

    // A version from before content-addressed storage: its bytes move into the blob folder once.
    let folder = keys::blob_folder(aide);
    if r2_key != folder {
        for file in &files {
            state
                .storage
                .published
                .copy(
                    &keys::published_file(&r2_key, &file.path, &file.sha256),
                    &keys::published_file(&folder, &file.path, &file.sha256),
                )
                .await
                .map_err(AppError::storage)?;
        }
    }

    let tx = api.begin(&state.db).await?;
    let notes = format!("Restored from version {from}");
    let (row, aide_row) =
        record_version(state, &tx, aide, Some(&notes), revision, &files, &[]).await?;
    futures_util::future::try_join(
        audit::record_user(
            &tx,
            &Entry::new("aide.version_restore", "aide")
                .resource(aide)
                .ip(ip)
                .details(serde_json::json!({"from": from, "version": row.version})),
        ),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(aide, &[aide_row.slug.as_deref()]);
    Ok(published_view(state, row, aide_row))
}
