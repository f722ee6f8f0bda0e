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

/// Tries to take the aide's blob lock (see [`super::BLOB_LOCK_CLASS`]) shared, until the
/// transaction ends, without waiting: false when the storage worker holds it.
pub async fn try_share_blobs(tx: &mut UserTx, aide: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("select pg_try_advisory_xact_lock_shared($1, hashtext($2::text))")
        .bind(super::BLOB_LOCK_CLASS)
        .bind(aide)
        .fetch_one(tx.conn())
        .await
}

/// Records that the blobs `sha256s` of the caller's aide are about to be written or read (see
/// migrations/0011); returns the rows' ids. Fails with a foreign-key violation when the aide is
/// not the caller's.
pub async fn insert_pending(
    tx: &mut UserTx,
    aide: Uuid,
    sha256s: &[Vec<u8>],
) -> Result<Vec<i64>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "insert into pending_blobs (aide_id, user_id, sha256)
         select $1, $2, s from unnest($3::bytea[]) as s
         returning id",
    )
    .bind(aide)
    .bind(user.0)
    .bind(sha256s)
    .fetch_all(tx.conn())
    .await
}

/// Removes pending-blob rows (a trigger queues any blob they leave unreferenced).
pub async fn delete_pending(tx: &mut UserTx, ids: &[i64]) -> Result<(), sqlx::Error> {
    let user = tx.user_id();
    sqlx::query("delete from pending_blobs where id = any($1) and user_id = $2")
        .bind(ids)
        .bind(user.0)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// The caller's tier, when `aide` is theirs.
pub async fn aide_tier(tx: &mut UserTx, aide: Uuid) -> Result<Option<String>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar(
        "select u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await
}

/// Bytes and number of the aide's files other than `except`.
pub async fn usage_except(
    tx: &mut UserTx,
    aide: Uuid,
    except: &FilePath,
) -> Result<(i64, i64), sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select coalesce(sum(size_bytes), 0)::int8, count(*) from workspace_files
         where aide_id = $1 and user_id = $2 and path <> $3",
    )
    .bind(aide)
    .bind(user.0)
    .bind(except.as_str())
    .fetch_one(tx.conn())
    .await
}

/// What the caller's account would store after a change: each distinct blob of each aide, once
/// per bucket (workspace and published), with the workspace file at `put`'s path holding `put`'s
/// blob instead of what it holds now, and the published blobs `published` added to `aide`.
pub async fn account_bytes_after(
    tx: &mut UserTx,
    aide: Uuid,
    put: Option<(&FilePath, &[u8], i64)>,
    published: &[(Vec<u8>, i64)],
) -> Result<i64, sqlx::Error> {
    let user = tx.user_id();
    let (hashes, sizes): (Vec<&[u8]>, Vec<i64>) =
        published.iter().map(|(h, s)| (h.as_slice(), *s)).unzip();
    sqlx::query_scalar(
        "with ws as (
             select aide_id, sha256, size_bytes from workspace_files
             where user_id = $1 and not (aide_id = $2 and path = coalesce($3::text, ''))
             union
             select $2, $4::bytea, $5::int8 where $4::bytea is not null
         ), pub as (
             select aide_id, sha256, size_bytes from published_files where user_id = $1
             union
             select $2, h, z from unnest($6::bytea[], $7::int8[]) as n(h, z)
         )
         select ((select coalesce(sum(size_bytes), 0) from ws)
                 + (select coalesce(sum(size_bytes), 0) from pub))::int8",
    )
    .bind(user.0)
    .bind(aide)
    .bind(put.map(|(path, _, _)| path.as_str()))
    .bind(put.map(|(_, sha256, _)| sha256))
    .bind(put.map(|(_, _, size)| size))
    .bind(&hashes)
    .bind(&sizes)
    .fetch_one(tx.conn())
    .await
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
