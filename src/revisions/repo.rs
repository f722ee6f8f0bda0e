//! Every query about revisions. User scope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::{self, UserTx};

/// What made a revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// The files an aide had when history began.
    Import,
    Turn,
    Upload,
    Delete,
    Restore,
}

impl Cause {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        match raw {
            "import" => Ok(Cause::Import),
            "turn" => Ok(Cause::Turn),
            "upload" => Ok(Cause::Upload),
            "delete" => Ok(Cause::Delete),
            "restore" => Ok(Cause::Restore),
            _ => Err("not a revision cause"),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Cause::Import => "import",
            Cause::Turn => "turn",
            Cause::Upload => "upload",
            Cause::Delete => "delete",
            Cause::Restore => "restore",
        }
    }
}

crate::text_column!(Cause);

/// One revision, as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Revision {
    pub number: i32,
    pub cause: Cause,
    /// The turn that made it, for `turn`.
    pub turn_id: Option<Uuid>,
    /// The revision it brought back, for `restore`.
    pub restored_from: Option<i32>,
    pub file_count: i32,
    pub size_bytes: i64,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl db::FromRow for Revision {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Revision {
            number: row.try_get("number")?,
            cause: row.try_get("cause")?,
            turn_id: row.try_get("turn_id")?,
            restored_from: row.try_get("restored_from")?,
            file_count: row.try_get("file_count")?,
            size_bytes: row.try_get("size_bytes")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

crate::statement! {
    RECORD: User = "select record_revision($1, $2, $3, $4, $5)";
    LIST: User = "select number, cause, turn_id, restored_from, file_count, size_bytes, created_at
         from workspace_revisions
         where aide_id = $1 and user_id = $2 and ($3::int4 is null or number < $3)
         order by number desc
         limit $4";
    FIND: User = "select number, cause, turn_id, restored_from, file_count, size_bytes, created_at
         from workspace_revisions where aide_id = $1 and user_id = $2 and number = $3";
    NEWEST: User = "select number, cause, turn_id, restored_from, file_count, size_bytes, created_at
         from workspace_revisions where aide_id = $1 and user_id = $2
         order by number desc limit 1";
    LATEST: User = "select coalesce(max(number), 0) from workspace_revisions
         where aide_id = $1 and user_id = $2";
    /// The workspace becomes revision `$3`'s files (the caller holds the aide's lock).
    CLEAR_WORKSPACE: User = "delete from workspace_files where aide_id = $1 and user_id = $2";
    COPY_BACK: User = "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
         select aide_id, user_id, path, size_bytes, content_type, sha256
         from workspace_revision_files where aide_id = $1 and user_id = $2 and revision = $3";
}

/// Records the aide's current files as its next revision, keeping the newest `keep`; returns its
/// number. Locks the aide's row. Fails with `no_data_found` when the aide is not the caller's.
pub async fn record(
    tx: &UserTx,
    aide: Uuid,
    cause: Cause,
    turn: Option<Uuid>,
    restored_from: Option<i32>,
    keep: u32,
) -> Result<i32, db::Error> {
    let keep = i32::try_from(keep).unwrap_or(i32::MAX);
    tx.value(&RECORD, &[&aide, &cause, &turn, &restored_from, &keep])
        .await
}

/// Revisions newest first, before number `before`.
pub async fn list(
    tx: &UserTx,
    aide: Uuid,
    before: Option<i32>,
    limit: i64,
) -> Result<Vec<Revision>, db::Error> {
    tx.rows(&LIST, &[&aide, &tx.user_id(), &before, &limit])
        .await
}

pub async fn find(tx: &UserTx, aide: Uuid, number: i32) -> Result<Option<Revision>, db::Error> {
    tx.row_opt(&FIND, &[&aide, &tx.user_id(), &number]).await
}

/// The newest revision's number (0 before the first).
pub async fn latest(tx: &UserTx, aide: Uuid) -> Result<i32, db::Error> {
    tx.value(&LATEST, &[&aide, &tx.user_id()]).await
}

/// Replaces the aide's files by revision `number`'s (the caller holds the aide's lock).
pub async fn copy_back(tx: &UserTx, aide: Uuid, number: i32) -> Result<u64, db::Error> {
    let user = tx.user_id();
    let (_, copied) = futures_util::future::try_join(
        tx.execute(&CLEAR_WORKSPACE, &[&aide, &user]),
        tx.execute(&COPY_BACK, &[&aide, &user, &number]),
    )
    .await?;
    Ok(copied)
}

/// The newest revision.
pub async fn newest(tx: &UserTx, aide: Uuid) -> Result<Option<Revision>, db::Error> {
    tx.row_opt(&NEWEST, &[&aide, &tx.user_id()]).await
}
