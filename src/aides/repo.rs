//! Every query about aides. User scope: row-level security confines each to the caller's rows,
//! and each also names the caller so the planner uses the per-user indexes.

use uuid::Uuid;

use super::model::{AideRow, Status, aide_columns};
use crate::cursor::TimeCursor;
use crate::db::{self, UserTx};
use crate::tier::Tier;

crate::statement! {
    /// The caller's aide `$1`.
    FIND: User = concat!("select ", aide_columns!(), " from aides where id = $1 and user_id = $2");
    /// The caller's aides with status `$2` (null: all but archived), most recently updated first,
    /// after the cursor (`$3`, `$4`; null: from the start).
    LIST: User = concat!(
        "select ",
        aide_columns!(),
        " from aides
         where user_id = $1
           and case when $2::text is null then status <> 'archived' else status = $2::text end
           and ($3::timestamptz is null or (updated_at, id) < ($3::timestamptz, $4::uuid))
         order by updated_at desc, id desc
         limit $5"
    );
    LOCK_ACCOUNT: User = "select tier from users where id = $1 for update";
    TIER: User = "select tier from users where id = $1";
    EXISTS: User = "select exists (select 1 from aides where id = $1 and user_id = $2)";
    COUNT_ACTIVE: User = "select count(*) from aides where user_id = $1 and status <> 'archived'";
    INSERT: User = concat!(
        "insert into aides (user_id, title) values ($1, $2) returning ",
        aide_columns!()
    );
    INSERT_CONVERSATION: User = "insert into conversations (aide_id, user_id) values ($1, $2)";
    LOCK: User = "select 1 from aides where id = $1 and user_id = $2 for update";
    UPDATE: User = concat!(
        "with seen as (
             select exists (select 1 from published_versions
                            where aide_id = $1 and user_id = $2) as published)
         update aides set title = coalesce($3::text, title),
             slug = case when $4::text is null then slug
                         when (select published from seen) then $4::text
                         else null end,
             requested_slug = case when $4::text is null then requested_slug
                                   when (select published from seen) then null
                                   else $4::text end
         where id = $1 and user_id = $2
         returning ",
        aide_columns!()
    );
    SET_STATUS: User = concat!(
        "update aides set status = $3 where id = $1 and user_id = $2 returning ",
        aide_columns!()
    );
    DELETE: User = "delete from aides where id = $1 and user_id = $2";
}

pub async fn find(tx: &UserTx, id: Uuid) -> Result<Option<AideRow>, db::Error> {
    tx.row_opt(&FIND, &[&id, &tx.user_id()]).await
}

/// The caller's aides with `status` (None: all but archived), most recently updated first,
/// after `cursor`.
pub async fn list(
    tx: &UserTx,
    status: Option<Status>,
    cursor: Option<TimeCursor>,
    limit: i64,
) -> Result<Vec<AideRow>, db::Error> {
    tx.rows(
        &LIST,
        &[
            &tx.user_id(),
            &status,
            &cursor.map(|c| c.at),
            &cursor.map(|c| c.id),
            &limit,
        ],
    )
    .await
}

/// Locks the caller's account row for the rest of the transaction and returns its tier, so that
/// checks such as "at most 5 aides" cannot race each other.
pub async fn lock_account(tx: &UserTx) -> Result<Tier, db::Error> {
    tx.value(&LOCK_ACCOUNT, &[&tx.user_id()]).await
}

/// Whether aide `id` is the caller's.
pub async fn exists(tx: &UserTx, id: Uuid) -> Result<bool, db::Error> {
    tx.value(&EXISTS, &[&id, &tx.user_id()]).await
}

/// The caller's tier, without locking.
pub async fn tier(tx: &UserTx) -> Result<Tier, db::Error> {
    tx.value(&TIER, &[&tx.user_id()]).await
}

/// How many aides the caller holds that are not archived.
pub async fn count_active(tx: &UserTx) -> Result<i64, db::Error> {
    tx.value(&COUNT_ACTIVE, &[&tx.user_id()]).await
}

/// Creates an aide and its (empty) conversation.
pub async fn insert(tx: &UserTx, title: &str) -> Result<AideRow, db::Error> {
    let user = tx.user_id();
    let row: AideRow = tx.row(&INSERT, &[&user, &title]).await?;
    tx.execute(&INSERT_CONVERSATION, &[&row.id, &user]).await?;
    Ok(row)
}

/// Changes the given fields; None when the aide is not the caller's. A slug is taken at once by
/// an aide that has been published (a unique violation when someone holds it); for one that has
/// not, it is recorded as requested and taken when the aide is first published, and a slug that
/// a failed publish took already is given up for it.
pub async fn update(
    tx: &UserTx,
    id: Uuid,
    title: Option<&str>,
    slug: Option<&str>,
) -> Result<Option<AideRow>, db::Error> {
    let user = tx.user_id();
    // The aide's row first: a first publish running at the same moment then finishes (or has not
    // begun) before "has it been published" is read, rather than after, from a stale snapshot.
    // (The update goes out behind the lock in the same round trip; PostgreSQL runs it once the
    // lock is held.)
    let (_, row) = futures_util::future::try_join(
        tx.execute(&LOCK, &[&id, &user]),
        tx.row_opt(&UPDATE, &[&id, &user, &title, &slug]),
    )
    .await?;
    Ok(row)
}

pub async fn set_status(
    tx: &UserTx,
    id: Uuid,
    status: Status,
) -> Result<Option<AideRow>, db::Error> {
    tx.row_opt(&SET_STATUS, &[&id, &tx.user_id(), &status])
        .await
}

/// Deletes the aide with its conversation and versions; false when it is not the caller's.
pub async fn delete(tx: &UserTx, id: Uuid) -> Result<bool, db::Error> {
    Ok(tx.execute(&DELETE, &[&id, &tx.user_id()]).await? == 1)
}
