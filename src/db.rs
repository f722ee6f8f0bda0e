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
//! Repository functions take `&UserTx` or `&SystemTx`, and run only statements declared with
//! [`statement!`](crate::statement) for that scope (see [`statement`]): a user-scoped statement
//! cannot be run in system scope, nor the other way round. The pool is private to this module, so
//! a query outside a scope does not compile, and PostgreSQL refuses it anyway.
//!
//! Everything goes through tokio-postgres, which pipelines: a scope opens in the round trip of its
//! first statement (see [`scope`]), and statements joined together share a round trip.

mod error;
mod listen;
pub mod managed;
pub mod migrate;
pub mod operators;
mod pool;
mod scope;
mod statement;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use deadpool::managed::{Pool, PoolError, Timeouts};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[doc(hidden)]
pub use bytes::BytesMut;
pub use error::Error;
#[doc(hidden)]
pub use inventory;
pub use listen::Listener;
pub use pool::connect;
pub use scope::{ReadTx, SESSION_NOT_LIVE, SupportTx, SystemTx, UserTx};
pub use statement::{
    FromRow, Login, Params, Registered, Scope, Sql, Support, System, User, Value, all as statements,
};
pub use tokio_postgres::Config as ConnectOptions;
pub use tokio_postgres::Row;
pub use tokio_postgres::types::{FromSql, IsNull, Json, ToSql, Type, to_sql_checked};

/// The role user-scoped transactions run as.
pub const USER_ROLE: &str = "aide_user";
/// The role system-scoped transactions run as.
pub const SYSTEM_ROLE: &str = "aide_system";
/// The role staff-access transactions run as.
pub const SUPPORT_ROLE: &str = "aide_support";
/// The role the server logs in as.
pub const LOGIN_ROLE: &str = "aide_app";
/// The role that owns the schema.
pub const OWNER_ROLE: &str = "aide_owner";

/// A user's id. A newtype so a user id cannot be passed where an aide id is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
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

impl tokio_postgres::types::ToSql for UserId {
    fn to_sql(
        &self,
        ty: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.0.to_sql(ty, out)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <Uuid as tokio_postgres::types::ToSql>::accepts(ty)
    }

    tokio_postgres::types::to_sql_checked!();
}

impl<'a> tokio_postgres::types::FromSql<'a> for UserId {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Uuid::from_sql(ty, raw).map(UserId)
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        <Uuid as tokio_postgres::types::FromSql>::accepts(ty)
    }
}

/// How long a transaction waits for a pooled connection, and for a new one to open.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection pool. Cheap to clone; the only ways to reach the database are the scopes:
/// [`Db::user`], [`Db::user_with_session`], [`Db::user_read_with_session`], [`Db::system`] and
/// [`Db::bookkeeping`].
#[derive(Clone)]
pub struct Db {
    pool: Pool<pool::Manager>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.pool.status();
        f.debug_struct("Db")
            .field("size", &status.size)
            .field("available", &status.available)
            .finish()
    }
}

impl Db {
    /// A pool of at most `max_connections`, opened as they are needed: the server starts (and
    /// answers `/ready` with 503) even while the database is down.
    pub fn new(options: ConnectOptions, max_connections: u32) -> Self {
        let manager = pool::Manager { config: options };
        let pool = Pool::builder(manager)
            .max_size(max_connections.max(1) as usize)
            .timeouts(Timeouts {
                wait: Some(ACQUIRE_TIMEOUT),
                create: Some(ACQUIRE_TIMEOUT),
                recycle: Some(ACQUIRE_TIMEOUT),
            })
            .runtime(deadpool::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and a size builds");
        Db { pool }
    }

    /// [`Db::new`], then checks that one connection opens (every statement prepared on it).
    pub async fn connect(options: ConnectOptions, max_connections: u32) -> Result<Self, Error> {
        let db = Self::new(options, max_connections);
        drop(db.conn().await?);
        Ok(db)
    }

    /// Opens every connection of the pool now (each prepares every statement as it opens), so
    /// that the first requests after a start do not pay for it; returns how many opened.
    pub async fn warm(&self) -> usize {
        let size = self.pool.status().max_size;
        let opened = futures_util::future::join_all((0..size).map(|_| self.conn())).await;
        opened.iter().filter(|c| c.is_ok()).count()
    }

    async fn conn(&self) -> Result<deadpool::managed::Object<pool::Manager>, Error> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => e,
            PoolError::PostCreateHook(e) => Error::Unavailable(e.to_string()),
            other => Error::Unavailable(other.to_string()),
        })
    }

    /// A staff-access transaction for `operator`, whose `session` is checked live in the round trip
    /// of its first statement; it can only call the staff-access functions.
    pub async fn support(&self, operator: UserId, session: Uuid) -> Result<SupportTx, Error> {
        Ok(SupportTx::new(self.conn().await?, operator, session))
    }

    /// A transaction confined to `user`'s rows.
    pub async fn user(&self, user: UserId) -> Result<UserTx, Error> {
        Ok(UserTx::new(self.conn().await?, user, None, false))
    }

    /// A transaction confined to `user`'s rows, which checks, in the round trip of its first
    /// statement, that `session` is one of their live sessions. A dead session fails that
    /// statement with SQLSTATE [`SESSION_NOT_LIVE`].
    pub async fn user_with_session(&self, user: UserId, session: Uuid) -> Result<UserTx, Error> {
        Ok(UserTx::new(self.conn().await?, user, Some(session), false))
    }

    /// Like [`Db::user_with_session`], for a transaction that only reads (see [`ReadTx`]).
    pub async fn user_read_with_session(
        &self,
        user: UserId,
        session: Uuid,
    ) -> Result<ReadTx, Error> {
        Ok(ReadTx::new(UserTx::new(
            self.conn().await?,
            user,
            Some(session),
            true,
        )))
    }

    /// A system-scoped transaction.
    pub async fn system(&self) -> Result<SystemTx, Error> {
        Ok(SystemTx::new(self.conn().await?, false))
    }

    /// A system-scoped transaction that commits without waiting for the disk: only for checks and
    /// bookkeeping whose loss in a crash is harmless (the API rate-limit counter on every
    /// request).
    pub async fn bookkeeping(&self) -> Result<SystemTx, Error> {
        Ok(SystemTx::new(self.conn().await?, true))
    }

    /// A connection that listens for notifications, apart from the pool.
    pub async fn listener(&self) -> Result<Listener, Error> {
        Listener::connect(&self.pool.manager().config).await
    }

    /// Whether the database answers. Touches no table.
    pub async fn ping(&self) -> Result<(), Error> {
        let conn = self.conn().await?;
        conn.client.simple_query("").await?;
        Ok(())
    }

    /// How many connections the pool holds, and how many of them are idle.
    pub fn pool_status(&self) -> deadpool::managed::Status {
        self.pool.status()
    }

    /// Closes connections idle for longer than the pool keeps them (run now and then).
    pub fn close_idle(&self) {
        self.pool.retain(|_, metrics| {
            metrics.last_used() < pool::MAX_IDLE && metrics.age() < pool::MAX_LIFETIME
        });
    }

    /// Closes the pool: connections in use close when they are returned.
    pub fn close(&self) {
        self.pool.close();
    }
}
