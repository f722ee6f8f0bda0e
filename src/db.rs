//! Database access: a connection pool and the two scopes every query runs in.
//!
//! The server logs in as `aide_app`, which holds no table privileges and does not inherit those
//! of its roles. Each transaction starts by switching role and setting the user id, both
//! transaction-locally, so nothing outlives the transaction on a pooled connection:
//!
//! * [`UserTx`] (`user_conn(user_id)` in the specification) runs as `aide_user` with
//!   `app.user_id` set; row-level security confines it to that user's rows.
//! * [`SystemTx`] (`system_conn()`) runs as `aide_system` with `app.user_id` empty, for sign-in,
//!   webhooks and background work; its grants limit what it may touch.
//!
//! Repository functions take `&mut UserTx` or `&mut SystemTx`. The pool is private to this module,
//! so a query outside a scope does not compile, and PostgreSQL refuses it anyway.

pub mod managed;
pub mod migrate;
mod one_trip;
mod scope;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

pub use one_trip::{Args, Prepared};
use scope::Access;
pub use scope::{ReadTx, SESSION_NOT_LIVE, SystemTx, UserTx};

/// The role user-scoped transactions run as.
pub const USER_ROLE: &str = "aide_user";
/// The role system-scoped transactions run as.
pub const SYSTEM_ROLE: &str = "aide_system";
/// The role the server logs in as.
pub const LOGIN_ROLE: &str = "aide_app";
/// The role that owns the schema.
pub const OWNER_ROLE: &str = "aide_owner";

/// A user's id. A newtype so a user id cannot be passed where an aide id is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct UserId(pub Uuid);

impl UserId {
    pub fn new_random() -> Self {
        UserId(Uuid::new_v4())
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserId({})", self.0)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(UserId)
    }
}

/// A signed-in caller whose session still has to be checked: [`UserRead::rows`] checks it in the
/// same round trip as the read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub user: UserId,
    pub session: Uuid,
}

/// A value whose SQL text cannot carry anything but itself, for statements sent without
/// parameters (see [`Db::system_oneshot`] and [`UserRead::rows`]). Implement it only for types
/// whose every value prints as a fixed set of safe characters; never for free text.
pub trait SqlLiteral {
    fn sql(&self) -> String;
}

impl SqlLiteral for Uuid {
    fn sql(&self) -> String {
        format!("'{}'::uuid", self.hyphenated())
    }
}

impl SqlLiteral for UserId {
    fn sql(&self) -> String {
        self.0.sql()
    }
}

impl SqlLiteral for i64 {
    fn sql(&self) -> String {
        // Quoted: a bare `-9223372036854775808::int8` would parse as the negation of an
        // out-of-range number.
        format!("'{self}'::int8")
    }
}

impl SqlLiteral for chrono::DateTime<chrono::Utc> {
    fn sql(&self) -> String {
        // Digits, dashes, colons, a dot, `T`, `Z` and, for years past 9999, a `+`: never a quote.
        // (Cursors, the one source of these from a request, only hold years 1 to 9999.)
        format!(
            "'{}'::timestamptz",
            self.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )
    }
}

impl<T: SqlLiteral> SqlLiteral for Option<T> {
    fn sql(&self) -> String {
        match self {
            Some(value) => value.sql(),
            None => "null".to_string(),
        }
    }
}

impl SqlLiteral for f64 {
    fn sql(&self) -> String {
        // Debug prints finite floats as plain decimals; anything else becomes a safe zero.
        if self.is_finite() {
            format!("{self:?}::float8")
        } else {
            "0::float8".to_string()
        }
    }
}

/// Splits DATABASE_MAX_CONNECTIONS (at least 3) between the pool (transactions, and the
/// notification listener, which keeps one) and the connections of one-round-trip reads: half each,
/// with at least two for the pool and one for reads.
fn split(max_connections: u32) -> (u32, u32) {
    let reads = (max_connections / 2).max(1);
    (max_connections.saturating_sub(reads).max(2), reads)
}

/// The scope of one-round-trip reads: [`Prepared`] statements run confined to the caller's rows
/// after their session is checked, all in one round trip (see [`one_trip`]). Repository
/// functions for the hottest reads take it as they take a [`UserTx`].
#[derive(Clone, Copy)]
pub struct UserRead<'a> {
    db: &'a Db,
    caller: Caller,
}

impl UserRead<'_> {
    /// The user the reads are confined to.
    pub fn user_id(&self) -> UserId {
        self.caller.user
    }

    /// Runs `statement` with `args` and returns its rows. A dead session fails with SQLSTATE
    /// [`SESSION_NOT_LIVE`]. The statement runs read-only: a write fails with SQLSTATE 25006.
    pub async fn rows(
        &self,
        statement: &Prepared,
        args: &Args,
    ) -> Result<Vec<sqlx::postgres::PgRow>, sqlx::Error> {
        self.db.reads.user_read(self.caller, statement, args).await
    }
}

/// How long a pooled connection may sit idle before it is pinged when next taken out.
const IDLE_PING_AFTER: Duration = Duration::from_secs(10);

/// The connection pool, and the connections of one-round-trip reads. Cheap to clone; the only ways
/// to reach the database are the scopes: [`Db::user`], [`Db::user_with_session`],
/// [`Db::user_read_with_session`], [`Db::reader`] and [`Db::system`].
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
    reads: std::sync::Arc<one_trip::ReadConnections>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db")
            .field("size", &self.pool.size())
            .field("idle", &self.pool.num_idle())
            .finish()
    }
}

impl Db {
    /// Opens a pool and checks that one connection works; `max_connections` in all, split as
    /// [`split`] says.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, sqlx::Error> {
        let (pool_size, read_size) = split(max_connections);
        Self::connect_sized(options, pool_size, read_size).await
    }

    /// [`Db::connect`] with the pool's size and the number of read connections given apart.
    pub async fn connect_sized(
        options: PgConnectOptions,
        pool_size: u32,
        read_size: u32,
    ) -> Result<Self, sqlx::Error> {
        let pool = Self::pool_options(pool_size)
            .connect_with(options.clone())
            .await?;
        Ok(Db {
            pool,
            reads: std::sync::Arc::new(one_trip::ReadConnections::new(options, read_size)),
        })
    }

    /// A pool that connects on first use: the server starts (and answers `/ready` with 503) even
    /// while the database is down.
    pub fn connect_lazy(options: PgConnectOptions, max_connections: u32) -> Self {
        let (pool_size, read_size) = split(max_connections);
        Db {
            pool: Self::pool_options(pool_size).connect_lazy_with(options.clone()),
            reads: std::sync::Arc::new(one_trip::ReadConnections::new(options, read_size)),
        }
    }

    /// sqlx pings every connection when it is returned to the pool (which also sends any queued
    /// `ROLLBACK`) and, by default, again when it is taken out: two round trips per request on
    /// top of its own. The second is kept only for connections idle long enough to have been
    /// dropped by a server or a proxy in between.
    fn pool_options(max_connections: u32) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }

    /// Begins a transaction confined to `user`'s rows.
    pub async fn user(&self, user: UserId) -> Result<UserTx, sqlx::Error> {
        UserTx::begin(&self.pool, user).await
    }

    /// Begins a transaction confined to `user`'s rows after checking, in the same round trip, that
    /// `session` is one of their live sessions. A dead session fails with SQLSTATE
    /// [`SESSION_NOT_LIVE`].
    pub async fn user_with_session(
        &self,
        user: UserId,
        session: Uuid,
    ) -> Result<UserTx, sqlx::Error> {
        UserTx::begin_checked(&self.pool, user, session, Access::ReadWrite).await
    }

    /// Like [`Db::user_with_session`], for a transaction that only reads (see [`ReadTx`]).
    pub async fn user_read_with_session(
        &self,
        user: UserId,
        session: Uuid,
    ) -> Result<ReadTx, sqlx::Error> {
        UserTx::begin_checked(&self.pool, user, session, Access::ReadOnly)
            .await
            .map(ReadTx::new)
    }

    /// The caller's one-round-trip reads (see [`UserRead`]).
    pub fn reader(&self, caller: Caller) -> UserRead<'_> {
        UserRead { db: self, caller }
    }

    /// Begins a system-scoped transaction.
    pub async fn system(&self) -> Result<SystemTx, sqlx::Error> {
        SystemTx::begin(&self.pool).await
    }

    /// Runs `statement` in system scope as one implicit transaction, in a single round trip, and
    /// returns its last row. The transaction commits without waiting for the disk, so this is only
    /// for checks and bookkeeping whose loss in a crash is harmless (the session check and the
    /// API rate-limit counter on every request).
    ///
    /// The text is sent as a simple query, which takes no parameters: build `statement` only from
    /// constants and [`SqlLiteral`] values, never from text a client sent.
    pub(crate) async fn system_oneshot(
        &self,
        statement: &str,
    ) -> Result<Option<sqlx::postgres::PgRow>, sqlx::Error> {
        // Statements in one simple query form one implicit transaction: the transaction-local
        // settings end with it, and an error rolls all of it back.
        let sql = format!(
            "select set_config('role', '{SYSTEM_ROLE}', true), set_config('app.user_id', '', true), \
             set_config('synchronous_commit', 'off', true); {statement}"
        );
        let rows = sqlx::raw_sql(&sql).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().last())
    }

    /// A connection that listens for notifications (it needs no table privileges).
    pub async fn listener(&self) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
        sqlx::postgres::PgListener::connect_with(&self.pool).await
    }

    /// Whether the database answers. Touches no table.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("select 1")
            .execute(&self.pool)
            .await
            .map(|_| ())
    }

    /// Closes every connection, waiting for those of the pool in use to be returned.
    pub async fn close(&self) {
        self.reads.close().await;
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn connections_are_split_between_the_pool_and_reads() {
        assert_eq!(super::split(10), (5, 5));
        assert_eq!(super::split(7), (4, 3));
        assert_eq!(super::split(3), (2, 1));
        for max in 3..200 {
            let (pool, reads) = super::split(max);
            assert_eq!(pool + reads, max);
            assert!(pool >= 2 && reads >= 1);
        }
    }
}
