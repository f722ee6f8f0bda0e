//! Every query about published versions. User scope.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aides::model::{AIDE_COLUMNS, AideRow};
use crate::db::UserTx;

/// The aide's status and its owner's tier.
#[derive(Debug, sqlx::FromRow)]
pub struct AideState {
    pub status: crate::aides::model::Status,
    pub tier: String,
}

/// The aide's state, locked for the rest of the transaction when `lock`.
pub async fn aide_state(
    tx: &mut UserTx,
    aide: Uuid,
    lock: bool,
) -> Result<Option<AideState>, sqlx::Error> {
    let user = tx.user_id();
    let sql = if lock {
        "select a.status, u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2 for update of a"
    } else {
        "select a.status, u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2"
    };
    sqlx::query_as(sql)
        .bind(aide)
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await
}

/// The contents (SHA-256) the aide already has in its blob folder of the published bucket: those
/// of versions stored there (`r2_key` = `blob_folder`), not of versions stored before that layout.
pub async fn published_hashes(
    tx: &mut UserTx,
    aide: Uuid,
    blob_folder: &str,
) -> Result<Vec<Vec<u8>>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select distinct f.sha256 from published_files f
         join published_versions v
           on v.aide_id = f.aide_id and v.user_id = f.user_id and v.version = f.version
         where f.aide_id = $1 and f.user_id = $2 and v.r2_key = $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(blob_folder)
    .fetch_all(tx.conn())
    .await
}

/// Where version `version`'s files are stored (its `r2_key`), if it exists.
pub async fn version_r2_key(
    tx: &mut UserTx,
    aide: Uuid,
    version: i32,
) -> Result<Option<String>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select r2_key from published_versions where aide_id = $1 and user_id = $2 and version = $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(version)
    .fetch_optional(tx.conn())
    .await
}

pub async fn next_version(tx: &mut UserTx, aide: Uuid) -> Result<i32, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select coalesce(max(version), 0) + 1 from published_versions where aide_id = $1 and user_id = $2",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
}

/// A file of a version (or of the workspace, being published).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionFile {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: Vec<u8>,
}

pub async fn workspace_files(tx: &mut UserTx, aide: Uuid) -> Result<Vec<VersionFile>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select path, size_bytes, content_type, sha256 from workspace_files
         where aide_id = $1 and user_id = $2 order by path",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_all(tx.conn())
    .await
}

pub async fn version_files(
    tx: &mut UserTx,
    aide: Uuid,
    version: i32,
) -> Result<Vec<VersionFile>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select path, size_bytes, content_type, sha256 from published_files
         where aide_id = $1 and user_id = $2 and version = $3 order by path",
    )
    .bind(aide)
    .bind(user.0)
    .bind(version)
    .fetch_all(tx.conn())
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i32,
    pub notes: Option<String>,
    pub size_bytes: i64,
    pub published_at: DateTime<Utc>,
}

/// Records version `version` and its files.
pub async fn insert_version(
    tx: &mut UserTx,
    aide: Uuid,
    version: i32,
    r2_key: &str,
    notes: Option<&str>,
    files: &[VersionFile],
) -> Result<VersionRow, sqlx::Error> {
    let user = tx.user_id();
    let size: i64 = files.iter().map(|f| f.size_bytes).sum();
    let row: VersionRow = sqlx::query_as(
        "insert into published_versions (aide_id, user_id, version, r2_key, notes, size_bytes)
         values ($1, $2, $3, $4, $5, $6)
         returning version, notes, size_bytes, published_at",
    )
    .bind(aide)
    .bind(user.0)
    .bind(version)
    .bind(r2_key)
    .bind(notes)
    .bind(size)
    .fetch_one(tx.conn())
    .await?;
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let sizes: Vec<i64> = files.iter().map(|f| f.size_bytes).collect();
    let types: Vec<&str> = files.iter().map(|f| f.content_type.as_str()).collect();
    let hashes: Vec<Vec<u8>> = files.iter().map(|f| f.sha256.clone()).collect();
    sqlx::query(
        "insert into published_files (aide_id, user_id, version, path, size_bytes, content_type, sha256)
         select $1, $2, $3, p, s, t, h
         from unnest($4::text[], $5::int8[], $6::text[], $7::bytea[]) as f(p, s, t, h)",
    )
    .bind(aide)
    .bind(user.0)
    .bind(version)
    .bind(&paths)
    .bind(&sizes)
    .bind(&types)
    .bind(&hashes)
    .execute(tx.conn())
    .await?;
    Ok(row)
}

pub async fn list_versions(tx: &mut UserTx, aide: Uuid) -> Result<Vec<VersionRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select version, notes, size_bytes, published_at from published_versions
         where aide_id = $1 and user_id = $2 order by version desc",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_all(tx.conn())
    .await
}

/// Gives the aide the slug it will be published under, unless it holds one: the one its owner
/// asked for, or `random`. Fails with a unique violation on `aides_slug_key` when that slug is
/// held or retired by someone else.
pub async fn claim_slug(tx: &mut UserTx, aide: Uuid, random: &str) -> Result<(), sqlx::Error> {
    let user = tx.user_id();
    sqlx::query(
        "update aides set slug = coalesce(slug, requested_slug, $3), requested_slug = null
         where id = $1 and user_id = $2 and slug is null",
    )
    .bind(aide)
    .bind(user.0)
    .bind(random)
    .execute(tx.conn())
    .await
    .map(|_| ())
}

/// Marks the aide published.
pub async fn mark_published(tx: &mut UserTx, aide: Uuid) -> Result<AideRow, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(&format!(
        "update aides set status = 'published'
         where id = $1 and user_id = $2 returning {AIDE_COLUMNS}"
    ))
    .bind(aide)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
}

pub async fn mark_draft(tx: &mut UserTx, aide: Uuid) -> Result<Option<AideRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(&format!(
        "update aides set status = 'draft' where id = $1 and user_id = $2 and status = 'published'
         returning {AIDE_COLUMNS}"
    ))
    .bind(aide)
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await
}
