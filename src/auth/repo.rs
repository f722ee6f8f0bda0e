//! Every query sign-in makes. System scope except where noted.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::email_address::EmailAddress;
use sqlx::{FromRow, Row};

use crate::db::{Args, Db, Prepared, SqlLiteral, SystemTx, UserId, UserRead, UserTx};
use crate::time::PgTimestamp;

/// Wrong code attempts after which a code is dead.
pub const MAX_CODE_ATTEMPTS: i32 = 5;

pub async fn user_id_by_email(
    tx: &mut SystemTx,
    email: &EmailAddress,
) -> Result<Option<UserId>, sqlx::Error> {
    sqlx::query_scalar("select id from users where email = $1")
        .bind(email.as_str())
        .fetch_optional(tx.conn())
        .await
        .map(|id| id.map(UserId))
}

/// Stores a new link (hashes only) valid for `ttl_minutes`; returns when it expires.
pub async fn insert_magic_link(
    tx: &mut SystemTx,
    id: Uuid,
    email: &EmailAddress,
    token_hash: &[u8],
    code_hash: &[u8],
    ip: IpAddr,
    ttl_minutes: u32,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "insert into magic_links (id, email, token_hash, code_hash, requested_ip, expires_at)
         values ($1, $2, $3, $4, $5::inet, now() + make_interval(mins => $6))
         returning expires_at",
    )
    .bind(id)
    .bind(email.as_str())
    .bind(token_hash)
    .bind(code_hash)
    .bind(ip.to_string())
    .bind(i32::try_from(ttl_minutes).unwrap_or(i32::MAX))
    .fetch_one(tx.conn())
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
    tx: &mut SystemTx,
    token_hash: &[u8],
) -> Result<Option<Consumed>, sqlx::Error> {
    sqlx::query_as::<_, (Uuid, String)>(
        "update magic_links set consumed_at = now()
         where token_hash = $1 and consumed_at is null and expires_at > now()
         returning id, email",
    )
    .bind(token_hash)
    .fetch_optional(tx.conn())
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
    tx: &mut SystemTx,
    token_hash: &[u8],
) -> Result<(Option<LinkProblem>, Option<String>), sqlx::Error> {
    let row: Option<(bool, bool, String)> = sqlx::query_as(
        "select consumed_at is not null, expires_at <= now(), email
         from magic_links where token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(tx.conn())
    .await?;
    Ok(match row {
        None => (Some(LinkProblem::Unknown), None),
        Some((true, _, email)) => (Some(LinkProblem::Used), Some(email)),
        Some((false, true, email)) => (Some(LinkProblem::Expired), Some(email)),
        Some((false, false, email)) => (None, Some(email)),
    })
}

/// The newest link of an address, whose code is the only one that may be tried.
#[derive(Debug, sqlx::FromRow)]
pub struct CodeCandidate {
    pub id: Uuid,
    pub code_hash: Vec<u8>,
    pub code_attempts: i32,
    /// Not consumed and not expired.
    pub live: bool,
}

/// The newest link requested for `email` (live or not), locked so concurrent code attempts for
/// the address take turns. Only its code signs in: a code from an older email never does.
pub async fn newest_link_for_code(
    tx: &mut SystemTx,
    email: &EmailAddress,
) -> Result<Option<CodeCandidate>, sqlx::Error> {
    sqlx::query_as(
        "select id, code_hash, code_attempts,
                (consumed_at is null and expires_at > now()) as live
         from magic_links
         where email = $1
         order by created_at desc, id desc
         limit 1
         for update",
    )
    .bind(email.as_str())
    .fetch_optional(tx.conn())
    .await
}

pub async fn consume_by_id(tx: &mut SystemTx, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "update magic_links set consumed_at = now()
         where id = $1 and consumed_at is null and expires_at > now()",
    )
    .bind(id)
    .execute(tx.conn())
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Counts a wrong code against link `id`.
pub async fn count_wrong_code(tx: &mut SystemTx, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update magic_links set code_attempts = code_attempts + 1 where id = $1")
        .bind(id)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// The email of user `user`, read in system scope (the confirm page names the account a browser
/// is already signed in to).
pub async fn email_of_user(tx: &mut SystemTx, user: UserId) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("select email from users where id = $1")
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await
}

/// The user with this email, created on first sign-in. Returns whether it was created.
pub async fn upsert_user(tx: &mut SystemTx, email: &str) -> Result<(UserId, bool), sqlx::Error> {
    // `xmax = 0` holds for a freshly inserted row and not for one the conflict branch touched.
    sqlx::query_as::<_, (Uuid, bool)>(
        "insert into users (email) values ($1)
         on conflict (email) do update set email = excluded.email
         returning id, (xmax = 0)",
    )
    .bind(email)
    .fetch_one(tx.conn())
    .await
    .map(|(id, created)| (UserId(id), created))
}

pub async fn create_session(
    tx: &mut SystemTx,
    user: UserId,
    ttl_hours: u32,
    ip: IpAddr,
    user_agent: Option<&str>,
) -> Result<(Uuid, DateTime<Utc>, DateTime<Utc>), sqlx::Error> {
    sqlx::query_as(
        "insert into sessions (user_id, expires_at, ip_address, user_agent)
         values ($1, now() + make_interval(hours => $2), $3::inet, $4)
         returning id, created_at, expires_at",
    )
    .bind(user.0)
    .bind(i32::try_from(ttl_hours).unwrap_or(i32::MAX))
    .bind(ip.to_string())
    .bind(user_agent.map(|ua| ua.chars().take(512).collect::<String>()))
    .fetch_one(tx.conn())
    .await
}

/// Whether the session is live (not revoked, not expired, the user's), in one round trip.
pub async fn session_is_live(db: &Db, session: Uuid, user: UserId) -> Result<bool, sqlx::Error> {
    let statement = format!(
        "select exists (select 1 from sessions where id = {} and user_id = {}
                        and revoked_at is null and expires_at > now()) as live",
        session.sql(),
        user.sql()
    );
    let row = db
        .system_oneshot(&statement)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("the session check returned no row".into()))?;
    row.try_get("live")
}

pub async fn revoke_session(tx: &mut SystemTx, session: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("update sessions set revoked_at = now() where id = $1 and revoked_at is null")
        .bind(session)
        .execute(tx.conn())
        .await
        .map(|_| ())
}

/// Revokes every live session of `user`; returns how many.
pub async fn revoke_all_sessions(tx: &mut SystemTx, user: UserId) -> Result<u64, sqlx::Error> {
    sqlx::query("update sessions set revoked_at = now() where user_id = $1 and revoked_at is null")
        .bind(user.0)
        .execute(tx.conn())
        .await
        .map(|done| done.rows_affected())
}

/// The signed-in user's own row (user scope).
#[derive(Debug)]
pub struct Me {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub tier: String,
    pub turn_count: i32,
    pub turn_week_start: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

// By hand rather than derived, for the timestamps' fast text decoding (see [`PgTimestamp`]).
impl<'r> FromRow<'r, sqlx::postgres::PgRow> for Me {
    fn from_row(row: &'r sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Me {
            id: row.try_get("id")?,
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            tier: row.try_get("tier")?,
            turn_count: row.try_get("turn_count")?,
            turn_week_start: row.try_get::<PgTimestamp, _>("turn_week_start")?.0,
            created_at: row.try_get::<PgTimestamp, _>("created_at")?.0,
        })
    }
}

/// The caller's account, read in one round trip with their session check (see [`UserRead`]).
pub async fn me_read(read: &UserRead<'_>) -> Result<Option<Me>, sqlx::Error> {
    const ME: Prepared = Prepared::new(
        "users_me",
        "uuid",
        "select id, email, name, tier, turn_count, turn_week_start, created_at
         from users where id = $1",
    );
    let rows = read.rows(&ME, &Args::new().arg(read.user_id())).await?;
    rows.first().map(Me::from_row).transpose()
}

pub async fn me(tx: &mut UserTx) -> Result<Option<Me>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select id, email, name, tier, turn_count, turn_week_start, created_at
         from users where id = $1",
    )
    .bind(user.0)
    .fetch_optional(tx.conn())
    .await
}

/// Deletes links past their expiry by a day (kept that long so an old link still says "expired"),
/// and sessions that are expired or revoked.
pub async fn delete_stale(tx: &mut SystemTx) -> Result<(u64, u64), sqlx::Error> {
    let links = sqlx::query("delete from magic_links where expires_at < now() - interval '1 day'")
        .execute(tx.conn())
        .await?
        .rows_affected();
    let sessions =
        sqlx::query("delete from sessions where expires_at < now() or revoked_at is not null")
            .execute(tx.conn())
            .await?
            .rows_affected();
    Ok((links, sessions))
}
