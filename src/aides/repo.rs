//! Every query about aides. User scope: row-level security confines each to the caller's rows,
//! and each also names the caller so the planner uses the per-user indexes.

use uuid::Uuid;

use sqlx::FromRow;

use super::model::{AideRow, Status};
use crate::db::{Args, Prepared, UserRead, UserTx};
use crate::http::params::TimeCursor;

use super::model::AIDE_COLUMNS as COLUMNS;

pub async fn find(tx: &mut UserTx, id: Uuid) -> Result<Option<AideRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(&format!(
        "select {COLUMNS} from aides where id = $1 and user_id = $2"
    ))
    .bind(id)
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await
}

/// The caller's aides with `status` (None: all but archived), most recently updated first,
/// after `cursor`. Read in one round trip with the session check (see [`UserRead`]).
pub async fn list(
    read: &UserRead<'_>,
    status: Option<Status>,
    cursor: Option<TimeCursor>,
    limit: i64,
) -> Result<Vec<AideRow>, sqlx::Error> {
    const LIST: Prepared = Prepared::new(
        "aides_list",
        "uuid, text, timestamptz, uuid, int8",
        concat!(
            "select ",
            super::model::aide_columns!(),
            " from aides
         where user_id = $1
           and case when $2 is null then status <> 'archived' else status = $2 end
           and ($3 is null or (updated_at, id) < ($3, $4))
         order by updated_at desc, id desc
         limit $5"
        ),
    );
    let args = Args::new()
        .arg(read.user_id())
        .arg(status)
        .arg(cursor.map(|c| c.at))
        .arg(cursor.map(|c| c.id))
        .arg(limit);
    let rows = read.rows(&LIST, &args).await?;
    rows.iter().map(AideRow::from_row).collect()
}

/// Locks the caller's account row for the rest of the transaction and returns its tier, so that
/// checks such as "at most 5 aides" cannot race each other.
pub async fn lock_account(tx: &mut UserTx) -> Result<String, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar("select tier from users where id = $1 for update")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await
}

/// The caller's tier, without locking.
pub async fn tier(tx: &mut UserTx) -> Result<String, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar("select tier from users where id = $1")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await
}

/// How many aides the caller holds that are not archived.
pub async fn count_active(tx: &mut UserTx) -> Result<i64, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar("select count(*) from aides where user_id = $1 and status <> 'archived'")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await
}

/// Creates an aide and its (empty) conversation.
pub async fn insert(tx: &mut UserTx, title: &str) -> Result<AideRow, sqlx::Error> {
    let user = tx.user_id();
    let row: AideRow = sqlx::query_as(&format!(
        "insert into aides (user_id, title) values ($1, $2) returning {COLUMNS}"
    ))
    .bind(user.0)
    .bind(title)
    .fetch_one(tx.conn())
    .await?;
    sqlx::query("insert into conversations (aide_id, user_id) values ($1, $2)")
        .bind(row.id)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    Ok(row)
}

/// Changes the given fields; None when the aide is not the caller's. A slug is taken at once by
/// an aide that has been published (a unique violation when someone holds it); for one that has
/// not, it is recorded as requested and taken when the aide is first published, and a slug that
/// a failed publish took already is given up for it.
pub async fn update(
    tx: &mut UserTx,
    id: Uuid,
    title: Option<&str>,
    slug: Option<&str>,
) -> Result<Option<AideRow>, sqlx::Error> {
    let user = tx.user_id();
    // The aide's row first: a first publish running at the same moment then finishes (or has not
    // begun) before "has it been published" is read, rather than after, from a stale snapshot.
    sqlx::query("select 1 from aides where id = $1 and user_id = $2 for update")
        .bind(id)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    sqlx::query_as(&format!(
        "with seen as (
             select exists (select 1 from published_versions
                            where aide_id = $1 and user_id = $2) as published)
         update aides set title = coalesce($3, title),
             slug = case when $4::text is null then slug
                         when (select published from seen) then $4
                         else null end,
             requested_slug = case when $4::text is null then requested_slug
                                   when (select published from seen) then null
                                   else $4 end
         where id = $1 and user_id = $2
         returning {COLUMNS}"
    ))
    .bind(id)
    .bind(user.0)
    .bind(title)
    .bind(slug)
    .fetch_optional(tx.conn())
    .await
}

pub async fn set_status(
    tx: &mut UserTx,
    id: Uuid,
    status: Status,
) -> Result<Option<AideRow>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(&format!(
        "update aides set status = $3 where id = $1 and user_id = $2 returning {COLUMNS}"
    ))
    .bind(id)
    .bind(user.0)
    .bind(status)
    .fetch_optional(tx.conn())
    .await
}

/// Deletes the aide with its conversation and versions; false when it is not the caller's.
pub async fn delete(tx: &mut UserTx, id: Uuid) -> Result<bool, sqlx::Error> {
    let user = tx.user_id();
    let done = sqlx::query("delete from aides where id = $1 and user_id = $2")
        .bind(id)
        .bind(user.0)
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected() == 1)
}
