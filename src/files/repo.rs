//! Every query about workspace files. User scope.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::FilePath;
use crate::db::UserTx;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct FileRow {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: Vec<u8>,
    pub updated_at: DateTime<Utc>,
}

/// Holds the aide's blob lock (see [`super::BLOB_LOCK_CLASS`]) shared until the transaction ends.
pub async fn share_blobs(tx: &mut UserTx, aide: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("select pg_advisory_xact_lock_shared($1, hashtext($2::text))")
        .bind(super::BLOB_LOCK_CLASS)
        .bind(aide)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// Locks the caller's aide for the rest of the transaction (so concurrent writes to it are
/// counted one after another) and returns the caller's tier; None when the aide is not theirs.
pub async fn lock_aide(tx: &mut UserTx, aide: Uuid) -> Result<Option<String>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2
         for update of a",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await
}

pub async fn aide_exists(tx: &mut UserTx, aide: Uuid) -> Result<bool, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar("select exists (select 1 from aides where id = $1 and user_id = $2)")
        .bind(aide)
        .bind(user.0)
        .fetch_one(tx.conn())
        .await
}

/// Bytes used by the aide's files other than `except`.
pub async fn bytes_used_except(
    tx: &mut UserTx,
    aide: Uuid,
    except: &FilePath,
) -> Result<i64, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select coalesce(sum(size_bytes), 0)::int8 from workspace_files
         where aide_id = $1 and user_id = $2 and path <> $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(except.as_str())
    .fetch_one(tx.conn())
    .await
}

pub async fn upsert(
    tx: &mut UserTx,
    aide: Uuid,
    path: &FilePath,
    size_bytes: i64,
    content_type: &str,
    sha256: &[u8],
) -> Result<FileRow, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (aide_id, user_id, path) do update
             set size_bytes = excluded.size_bytes, content_type = excluded.content_type,
                 sha256 = excluded.sha256
         returning path, size_bytes, content_type, sha256, updated_at",
    )
    .bind(aide)
    .bind(user.0)
    .bind(path.as_str())
    .bind(size_bytes)
    .bind(content_type)
    .bind(sha256)
    .fetch_one(tx.conn())
    .await
}

pub async fn find(
    tx: &mut UserTx,
    aide: Uuid,
    path: &FilePath,
) -> Result<Option<FileRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select path, size_bytes, content_type, sha256, updated_at from workspace_files
         where aide_id = $1 and user_id = $2 and path = $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(path.as_str())
    .fetch_optional(tx.conn())
    .await
}

pub async fn list(tx: &mut UserTx, aide: Uuid) -> Result<Vec<FileRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select path, size_bytes, content_type, sha256, updated_at from workspace_files
         where aide_id = $1 and user_id = $2 order by path",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_all(tx.conn())
    .await
}

pub async fn delete(tx: &mut UserTx, aide: Uuid, path: &FilePath) -> Result<bool, sqlx::Error> {
    let user = tx.user_id();
    let done = sqlx::query(
        "delete from workspace_files where aide_id = $1 and user_id = $2 and path = $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(path.as_str())
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}
