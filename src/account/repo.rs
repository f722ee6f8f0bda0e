//! Every query of the account's data export. User scope (row-level security confines each to the
//! caller's rows) except the upkeep's.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{self, FromRow, Row, SystemTx, UserTx};

crate::statement! {
    /// A new export, unless one counted in the last day exists; a running one makes the unique
    /// index refuse it.
    START: User = "insert into account_exports (user_id)
         select $1 where not exists (
             select 1 from account_exports
             where user_id = $1 and status <> 'failed' and created_at > now() - interval '1 day')
         returning id, status, created_at, finished_at, expires_at, size_bytes, file_count";
    /// When the newest counted export of the last day was asked for (for Retry-After).
    LAST_COUNTED: User = "select max(created_at) from account_exports
         where user_id = $1 and status <> 'failed' and created_at > now() - interval '1 day'";
    LIST: User = "select id, status, created_at, finished_at, expires_at, size_bytes, file_count
         from account_exports where user_id = $1 order by created_at desc limit 20";
    ONE: User = "select id, status, created_at, finished_at, expires_at, size_bytes, file_count
         from account_exports where id = $1 and user_id = $2";
    /// A ready, unexpired export of the caller's.
    DOWNLOADABLE: User = "select size_bytes from account_exports
         where id = $1 and user_id = $2 and status = 'ready' and expires_at > now()";
    FINISHED: User = "update account_exports
         set status = 'ready', size_bytes = $2, sha256 = $3, file_count = $4, finished_at = now(),
             expires_at = now() + interval '7 days'
         where id = $1 and status = 'running'
         returning expires_at";
    FAILED: User = "update account_exports set status = 'failed', error = $2, finished_at = now()
         where id = $1 and status = 'running'";

    pub(super) ACCOUNT: User = "select id, email, name, tier, billing_status, billing_period_end,
                billing_cancel_at_period_end, turn_count, turn_week_start, created_at
         from users where id = $1";
    pub(super) AIDES: User = "select id, title, slug, status, created_at, updated_at
         from aides where user_id = $1 order by created_at, id";
    /// One page of an aide's conversation, after message `$2`.
    pub(super) MESSAGES: User = "select m.id, m.role, m.content, m.metadata, m.created_at
         from conversation_messages m
         join conversations c on c.id = m.conversation_id and c.user_id = m.user_id
         where c.aide_id = $1 and m.user_id = $2 and m.id > $3
         order by m.id limit 500";
    /// Whether aide `$1` of user `$2` still exists and, when `$4`, still refers to workspace blob
    /// `$3` (a file or a kept revision): an object missing from storage is then a fault, not a
    /// change made while the export ran.
    pub(super) STILL_STORED: User = "select exists (select 1 from aides where id = $1 and user_id = $2)
             and (not $4
                  or exists (select 1 from workspace_files where aide_id = $1 and user_id = $2 and sha256 = $3)
                  or exists (select 1 from workspace_revision_files where aide_id = $1 and user_id = $2 and sha256 = $3))";
    pub(super) FILES: User = "select path, size_bytes, content_type, sha256, updated_at
         from workspace_files where aide_id = $1 and user_id = $2 order by path";
    pub(super) REVISIONS: User = "select number, cause, turn_id, restored_from, file_count, size_bytes, created_at
         from workspace_revisions where aide_id = $1 and user_id = $2 order by number";
    pub(super) REVISION_FILES: User = "select revision, path, size_bytes, content_type, sha256
         from workspace_revision_files where aide_id = $1 and user_id = $2 order by revision, path";
    pub(super) VERSIONS: User = "select version, r2_key, notes, size_bytes, published_at, revision
         from published_versions where aide_id = $1 and user_id = $2 order by version";
    pub(super) VERSION_FILES: User = "select version, path, size_bytes, content_type, sha256
         from published_files where aide_id = $1 and user_id = $2 order by version, path";
    /// One page of the caller's audit trail, after row `$2`.
    pub(super) AUDIT: User = "select id, action, resource_type, resource_id, details,
                host(ip_address) as ip_address, created_at
         from audit_log where user_id = $1 and id > $2 order by id limit 1000";

    /// Staff access to the caller's account, newest first: what was done, and which aide.
    STAFF_ACCESS: User = "select l.created_at, l.action, l.details, a.title
         from audit_log l
         left join aides a on a.user_id = l.user_id and a.id::text = l.details ->> 'aide'
         where l.user_id = $1 and l.action like 'support.%'
         order by l.id desc limit 100";

    /// Archives past their seven days.
    EXPIRED: System = "select id, user_id from account_exports
         where status = 'ready' and expires_at <= now() order by expires_at limit 100";
    MARK_EXPIRED: System = "update account_exports set status = 'expired' where id = $1 and status = 'ready'";
    /// Exports left running by a process that stopped (none takes six hours: 10 GiB at the
    /// slowest storage this service expects).
    ABANDONED: System = "update account_exports
         set status = 'failed', error = 'interrupted: the server stopped while making it', finished_at = now()
         where status = 'running' and created_at < now() - interval '6 hours'";
}

/// An export as its owner sees it.
#[derive(Debug, Clone)]
pub struct ExportRow {
    pub id: Uuid,
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<i64>,
    pub file_count: Option<i32>,
}

impl FromRow for ExportRow {
    fn from_row(row: &Row) -> Result<Self, db::Error> {
        Ok(ExportRow {
            id: row.try_get("id")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
            expires_at: row.try_get("expires_at")?,
            size_bytes: row.try_get("size_bytes")?,
            file_count: row.try_get("file_count")?,
        })
    }
}

/// Starts an export: None when one was made in the last day. A running one: a unique violation.
pub async fn start(tx: &UserTx) -> Result<Option<ExportRow>, db::Error> {
    tx.row_opt(&START, &[&tx.user_id()]).await
}

pub async fn last_counted(tx: &UserTx) -> Result<Option<DateTime<Utc>>, db::Error> {
    tx.value(&LAST_COUNTED, &[&tx.user_id()]).await
}

pub async fn list(tx: &UserTx) -> Result<Vec<ExportRow>, db::Error> {
    tx.rows(&LIST, &[&tx.user_id()]).await
}

pub async fn one(tx: &UserTx, id: Uuid) -> Result<Option<ExportRow>, db::Error> {
    tx.row_opt(&ONE, &[&id, &tx.user_id()]).await
}

pub async fn downloadable(tx: &UserTx, id: Uuid) -> Result<Option<i64>, db::Error> {
    tx.value_opt(&DOWNLOADABLE, &[&id, &tx.user_id()]).await
}

pub async fn finished(
    tx: &UserTx,
    id: Uuid,
    size: i64,
    sha256: &[u8],
    files: i32,
) -> Result<Option<DateTime<Utc>>, db::Error> {
    tx.value_opt(&FINISHED, &[&id, &size, &sha256, &files])
        .await
}

pub async fn failed(tx: &UserTx, id: Uuid, error: &str) -> Result<(), db::Error> {
    tx.execute(&FAILED, &[&id, &error]).await.map(|_| ())
}

pub async fn expired(tx: &SystemTx) -> Result<Vec<(Uuid, Uuid)>, db::Error> {
    tx.rows(&EXPIRED, &[]).await
}

pub async fn mark_expired(tx: &SystemTx, id: Uuid) -> Result<(), db::Error> {
    tx.execute(&MARK_EXPIRED, &[&id]).await.map(|_| ())
}

pub async fn fail_abandoned(tx: &SystemTx) -> Result<u64, db::Error> {
    tx.execute(&ABANDONED, &[]).await
}

/// Staff access to the caller's account: (when, action, details, the aide's title).
pub async fn staff_access(
    tx: &UserTx,
) -> Result<Vec<(DateTime<Utc>, String, serde_json::Value, Option<String>)>, db::Error> {
    tx.rows(&STAFF_ACCESS, &[&tx.user_id()]).await
}
