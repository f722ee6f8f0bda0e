//! Every query about workspace files. User scope.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::FilePath;
use crate::db::{self, UserTx};
use crate::tier::Tier;

#[derive(Debug, Clone)]
pub struct FileRow {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    pub sha256: Vec<u8>,
    pub updated_at: DateTime<Utc>,
}

impl db::FromRow for FileRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(FileRow {
            path: row.try_get("path")?,
            size_bytes: row.try_get("size_bytes")?,
            content_type: row.try_get("content_type")?,
            sha256: row.try_get("sha256")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

crate::statement! {
    /// `$1` is [`super::BLOB_LOCK_CLASS`], `$2` the aide.
    TRY_SHARE_BLOBS: User = "select pg_try_advisory_xact_lock_shared($1::int4, hashtext($2::uuid::text))";
    INSERT_PENDING: User = "insert into pending_blobs (aide_id, user_id, sha256)
         select $1::uuid, $2::uuid, s from unnest($3::bytea[]) as s
         returning id";
    DELETE_PENDING: User = "delete from pending_blobs where id = any($1::int8[]) and user_id = $2";
    AIDE_TIER: User = "select u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2";
    USAGE_EXCEPT: User = "select coalesce(sum(size_bytes), 0)::int8, count(*) from workspace_files
         where aide_id = $1 and user_id = $2 and path <> $3";
    ACCOUNT_BYTES_AFTER: User = "with ws as (
             select aide_id, sha256, size_bytes from workspace_files
             where user_id = $1 and not (aide_id = $2::uuid and path = coalesce($3::text, ''))
             union
             select $2::uuid, $4::bytea, $5::int8 where $4::bytea is not null
         ), pub as (
             select aide_id, sha256, size_bytes from published_files where user_id = $1
             union
             select $2::uuid, h, z from unnest($6::bytea[], $7::int8[]) as n(h, z)
         )
         select ((select coalesce(sum(size_bytes), 0) from ws)
                 + (select coalesce(sum(size_bytes), 0) from pub))::int8";
    LOCK_AIDE: User = "select u.tier from aides a join users u on u.id = a.user_id
         where a.id = $1 and a.user_id = $2
         for update of a";
    UPSERT: User = "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (aide_id, user_id, path) do update
             set size_bytes = excluded.size_bytes, content_type = excluded.content_type,
                 sha256 = excluded.sha256
         returning path, size_bytes, content_type, sha256, updated_at";
    FIND: User = "select path, size_bytes, content_type, sha256, updated_at from workspace_files
         where aide_id = $1 and user_id = $2 and path = $3";
    LIST: User = "select path, size_bytes, content_type, sha256, updated_at from workspace_files
         where aide_id = $1 and user_id = $2 order by path";
    DELETE: User = "delete from workspace_files where aide_id = $1 and user_id = $2 and path = $3";
}

/// Tries to take the aide's blob lock (see [`super::BLOB_LOCK_CLASS`]) shared, until the
/// transaction ends, without waiting: false when the storage worker holds it.
pub async fn try_share_blobs(tx: &UserTx, aide: Uuid) -> Result<bool, db::Error> {
    tx.value(&TRY_SHARE_BLOBS, &[&super::BLOB_LOCK_CLASS, &aide])
        .await
}

/// Records that the blobs `sha256s` of the caller's aide are about to be written or read (see
/// migrations/0011); returns the rows' ids. Fails with a foreign-key violation when the aide is
/// not the caller's.
pub async fn insert_pending(
    tx: &UserTx,
    aide: Uuid,
    sha256s: &[Vec<u8>],
) -> Result<Vec<i64>, db::Error> {
    tx.values(&INSERT_PENDING, &[&aide, &tx.user_id(), &sha256s])
        .await
}

/// Removes pending-blob rows (a trigger queues any blob they leave unreferenced).
pub async fn delete_pending(tx: &UserTx, ids: &[i64]) -> Result<(), db::Error> {
    tx.execute(&DELETE_PENDING, &[&ids, &tx.user_id()])
        .await
        .map(|_| ())
}

/// The caller's tier, when `aide` is theirs.
pub async fn aide_tier(tx: &UserTx, aide: Uuid) -> Result<Option<Tier>, db::Error> {
    tx.value_opt(&AIDE_TIER, &[&aide, &tx.user_id()]).await
}

/// Bytes and number of the aide's files other than `except`.
pub async fn usage_except(
    tx: &UserTx,
    aide: Uuid,
    except: &FilePath,
) -> Result<(i64, i64), db::Error> {
    tx.row(&USAGE_EXCEPT, &[&aide, &tx.user_id(), &except.as_str()])
        .await
}

/// What the caller's account would store after a change: each distinct blob of each aide, once
/// per bucket (workspace and published), with the workspace file at `put`'s path holding `put`'s
/// blob instead of what it holds now, and the published blobs `published` added to `aide`.
pub async fn account_bytes_after(
    tx: &UserTx,
    aide: Uuid,
    put: Option<(&FilePath, &[u8], i64)>,
    published: &[(Vec<u8>, i64)],
) -> Result<i64, db::Error> {
    let (hashes, sizes): (Vec<&[u8]>, Vec<i64>) =
        published.iter().map(|(h, s)| (h.as_slice(), *s)).unzip();
    tx.value(
        &ACCOUNT_BYTES_AFTER,
        &[
            &tx.user_id(),
            &aide,
            &put.map(|(path, _, _)| path.as_str()),
            &put.map(|(_, sha256, _)| sha256),
            &put.map(|(_, _, size)| size),
            &hashes,
            &sizes,
        ],
    )
    .await
}

/// Locks the caller's aide for the rest of the transaction (so concurrent writes to it are
/// counted one after another) and returns the caller's tier; None when the aide is not theirs.
pub async fn lock_aide(tx: &UserTx, aide: Uuid) -> Result<Option<Tier>, db::Error> {
    tx.value_opt(&LOCK_AIDE, &[&aide, &tx.user_id()]).await
}

pub async fn upsert(
    tx: &UserTx,
    aide: Uuid,
    path: &FilePath,
    size_bytes: i64,
    content_type: &str,
    sha256: &[u8],
) -> Result<FileRow, db::Error> {
    tx.row(
        &UPSERT,
        &[
            &aide,
            &tx.user_id(),
            &path.as_str(),
            &size_bytes,
            &content_type,
            &sha256,
        ],
    )
    .await
}

pub async fn find(tx: &UserTx, aide: Uuid, path: &FilePath) -> Result<Option<FileRow>, db::Error> {
    tx.row_opt(&FIND, &[&aide, &tx.user_id(), &path.as_str()])
        .await
}

pub async fn list(tx: &UserTx, aide: Uuid) -> Result<Vec<FileRow>, db::Error> {
    tx.rows(&LIST, &[&aide, &tx.user_id()]).await
}

pub async fn delete(tx: &UserTx, aide: Uuid, path: &FilePath) -> Result<bool, db::Error> {
    Ok(tx
        .execute(&DELETE, &[&aide, &tx.user_id(), &path.as_str()])
        .await?
        == 1)
}
