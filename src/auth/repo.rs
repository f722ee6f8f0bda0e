//! Every query sign-in makes. System scope except where noted.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::email_address::EmailAddress;
use crate::db::{self, SystemTx, UserId, UserTx};
use crate::tier::Tier;

crate::statement! {
    USER_ID_BY_EMAIL: System = "select id from users where email = $1";
    INSERT_MAGIC_LINK: System = "insert into magic_links (id, email, token_hash, code_hash, requested_ip, expires_at)
         values ($1, $2, $3, $4, $5::inet, now() + make_interval(mins => $6))
         returning expires_at";
    CONSUME_BY_TOKEN: System = "update magic_links set consumed_at = now()
         where token_hash = $1 and consumed_at is null and expires_at > now()
         returning id, email";
    LINK_STATE: System = "select consumed_at is not null, expires_at <= now(), email
         from magic_links where token_hash = $1";
    NEWEST_LINK_FOR_CODE: System = "select id, code_hash, code_attempts,
                (consumed_at is null and expires_at > now()) as live
         from magic_links
         where email = $1
         order by created_at desc, id desc
         limit 1
         for update";
    CONSUME_BY_ID: System = "update magic_links set consumed_at = now()
         where id = $1 and consumed_at is null and expires_at > now()";
    COUNT_WRONG_CODE: System = "update magic_links set code_attempts = code_attempts + 1 where id = $1";
    EMAIL_OF_USER: System = "select email from users where id = $1";
    /// `xmax = 0` holds for a freshly inserted row and not for one the conflict branch touched.
    UPSERT_USER: System = "insert into users (email) values ($1)
         on conflict (email) do update set email = excluded.email
         returning id, (xmax = 0)";
    CREATE_SESSION: System = "insert into sessions (user_id, expires_at, ip_address, user_agent)
         values ($1, now() + make_interval(hours => $2), $3::inet, $4)
         returning id, created_at, expires_at";
    SESSION_IS_LIVE: System = "select exists (select 1 from sessions where id = $1 and user_id = $2
                        and revoked_at is null and expires_at > now()) as live";
    REVOKE_SESSION: System = "update sessions set revoked_at = now() where id = $1 and revoked_at is null";
    REVOKE_ALL_SESSIONS: System = "update sessions set revoked_at = now() where user_id = $1 and revoked_at is null";
    /// The signed-in user's own row (user scope).
    ME: User = "select id, email, name, tier, turn_count, turn_week_start, created_at,
                deletion_requested_at, purge_after
         from users where id = $1";
    DELETE_STALE_LINKS: System = "delete from magic_links where expires_at < now() - interval '1 day'";
    DELETE_STALE_SESSIONS: System = "delete from sessions where expires_at < now() or revoked_at is not null";
}

/// Wrong code attempts after which a code is dead.
pub const MAX_CODE_ATTEMPTS: i32 = 5;

pub async fn user_id_by_email(
    tx: &SystemTx,
    email: &EmailAddress,
) -> Result<Option<UserId>, db::Error> {
    tx.value_opt(&USER_ID_BY_EMAIL, &[&email.as_str()]).await
}

/// Stores a new link (hashes only) valid for `ttl_minutes`; returns when it expires.
pub async fn insert_magic_link(
    tx: &SystemTx,
    id: Uuid,
    email: &EmailAddress,
    token_hash: &[u8],
    code_hash: &[u8],
    ip: IpAddr,
    ttl_minutes: u32,
) -> Result<DateTime<Utc>, db::Error> {
    let ttl = i32::try_from(ttl_minutes).unwrap_or(i32::MAX);
    tx.value(
        &INSERT_MAGIC_LINK,
        &[&id, &email.as_str(), &token_hash, &code_hash, &ip, &ttl],
    )
    .await
}

/// A link that was just consumed.
#[derive(Debug)]
pub struct Consumed {
    pub id: Uuid,
    pub email: String,
}

/// Consumes the live link with this token hash, atomically: of concurrent attempts, exactly one
/// gets it (the row lock makes the others re-check `consumed_at` and find it set).
pub async fn consume_by_token(
    tx: &SystemTx,
    token_hash: &[u8],
) -> Result<Option<Consumed>, db::Error> {
    tx.row_opt::<(Uuid, String)>(&CONSUME_BY_TOKEN, &[&token_hash])
        .await
        .map(|row| row.map(|(id, email)| Consumed { id, email }))
}

/// Why a link cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkProblem {
    Unknown,
    Expired,
    Used,
}

impl LinkProblem {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkProblem::Unknown => "unknown",
            LinkProblem::Expired => "expired",
            LinkProblem::Used => "used",
        }
    }
}

/// The state of the link with this token hash: None when it is live.
pub async fn link_problem(
    tx: &SystemTx,
    token_hash: &[u8],
) -> Result<(Option<LinkProblem>, Option<String>), db::Error> {
    let row = tx
        .row_opt::<(bool, bool, String)>(&LINK_STATE, &[&token_hash])
        .await?;
    Ok(match row {
        None => (Some(LinkProblem::Unknown), None),
        Some((true, _, email)) => (Some(LinkProblem::Used), Some(email)),
        Some((false, true, email)) => (Some(LinkProblem::Expired), Some(email)),
        Some((false, false, email)) => (None, Some(email)),
    })
}

/// The newest link of an address, whose code is the only one that may be tried.
#[derive(Debug)]
pub struct CodeCandidate {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
    pub code_attempts: i32,
    /// Not consumed and not expired.
    pub live: bool,
}

impl db::FromRow for CodeCandidate {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(CodeCandidate {
            id: row.try_get("id")?,
            code_hash: row.try_get("code_hash")?,
            code_attempts: row.try_get("code_attempts")?,
            live: row.try_get("live")?,
        })
    }
}

/// The newest link requested for `email` (live or not), locked so concurrent code attempts for
/// the address take turns. Only its code signs in: a code from an older email never does.
pub async fn newest_link_for_code(
    tx: &SystemTx,
    email: &EmailAddress,
) -> Result<Option<CodeCandidate>, db::Error> {
    tx.row_opt(&NEWEST_LINK_FOR_CODE, &[&email.as_str()]).await
}

pub async fn consume_by_id(tx: &SystemTx, id: Uuid) -> Result<bool, db::Error> {
    Ok(tx.execute(&CONSUME_BY_ID, &[&id]).await? == 1)
}

/// Counts a wrong code against link `id`.
pub async fn count_wrong_code(tx: &SystemTx, id: Uuid) -> Result<(), db::Error> {
    tx.execute(&COUNT_WRONG_CODE, &[&id]).await.map(|_| ())
}

/// The email of user `user`, read in system scope (the confirm page names the account a browser
/// is already signed in to).
pub async fn email_of_user(tx: &SystemTx, user: UserId) -> Result<Option<String>, db::Error> {
    tx.value_opt(&EMAIL_OF_USER, &[&user]).await
}

/// The user with this email, created on first sign-in. Returns whether it was created.
pub async fn upsert_user(tx: &SystemTx, email: &str) -> Result<(UserId, bool), db::Error> {
    tx.row::<(UserId, bool)>(&UPSERT_USER, &[&email]).await
}

pub async fn create_session(
    tx: &SystemTx,
    user: UserId,
    ttl_hours: u32,
    ip: IpAddr,
    user_agent: Option<&str>,
) -> Result<(Uuid, DateTime<Utc>, DateTime<Utc>), db::Error> {
    let ttl = i32::try_from(ttl_hours).unwrap_or(i32::MAX);
    let user_agent = user_agent.map(|ua| ua.chars().take(512).collect::<String>());
    tx.row(&CREATE_SESSION, &[&user, &ttl, &ip, &user_agent])
        .await
}

/// Whether the session is live (not revoked, not expired, the user's), in one round trip: the
/// statement goes out behind the scope's opening, and the scope's rollback (it wrote nothing) is
/// queued without waiting.
pub async fn session_is_live(db: &db::Db, session: Uuid, user: UserId) -> Result<bool, db::Error> {
    let tx = db.system().await?;
    let live = tx.value(&SESSION_IS_LIVE, &[&session, &user]).await?;
    tx.rollback();
    Ok(live)
}

pub async fn revoke_session(tx: &SystemTx, session: Uuid) -> Result<(), db::Error> {
    tx.execute(&REVOKE_SESSION, &[&session]).await.map(|_| ())
}

/// Revokes every live session of `user`; returns how many.
pub async fn revoke_all_sessions(tx: &SystemTx, user: UserId) -> Result<u64, db::Error> {
    tx.execute(&REVOKE_ALL_SESSIONS, &[&user]).await
}

/// The signed-in user's own row (user scope).
#[derive(Debug)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub tier: Tier,
    pub turn_count: i32,
    pub turn_week_start: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    /// Set while the account is being deleted: when that was confirmed, and when the purge runs.
    pub deletion_requested_at: Option<DateTime<Utc>>,
    pub purge_after: Option<DateTime<Utc>>,
}

impl db::FromRow for Me {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Me {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            tier: row.try_get("tier")?,
            turn_count: row.try_get("turn_count")?,
            turn_week_start: row.try_get("turn_week_start")?,
            created_at: row.try_get("created_at")?,
            deletion_requested_at: row.try_get("deletion_requested_at")?,
            purge_after: row.try_get("purge_after")?,
        })
    }
}

/// The caller's account (user scope). In a scope opened with a session check, it shares that
/// check's round trip.
pub async fn me(tx: &UserTx) -> Result<Option<Me>, db::Error> {
    tx.row_opt(&ME, &[&tx.user_id()]).await
}

/// Deletes links past their expiry by a day (kept that long so an old link still says "expired"),
/// and sessions that are expired or revoked.
pub async fn delete_stale(tx: &SystemTx) -> Result<(u64, u64), db::Error> {
    futures_util::future::try_join(
        tx.execute(&DELETE_STALE_LINKS, &[]),
        tx.execute(&DELETE_STALE_SESSIONS, &[]),
    )
    .await
}
