//! User-scoped reads in one round trip, for the hottest read endpoints (the aide list and
//! `/auth/me`).
//!
//! A read through [`super::ReadTx`] costs two round trips before its answer (the one that checks
//! the session and opens the scope, then the query) and a third when its connection goes back to
//! the pool. Here everything goes out as one simple query, which PostgreSQL runs as one implicit
//! transaction, so the settings end with it and an error anywhere rolls all of it back:
//!
//! ```sql
//! execute enter_system_scope;                       -- role aide_system
//! execute enter_checked_user_scope('<session>', '<user>');
//!                                                   -- assert_session_live, then role aide_user,
//!                                                   -- app.user_id and read-only, all
//!                                                   -- transaction-local
//! execute aides_list('<user>'::uuid, null, ...)     -- the read itself
//! ```
//!
//! All three are statements prepared with SQL `PREPARE` on the connection the first time they are
//! needed there (an `EXECUTE` of a missing one fails with SQLSTATE 26000, which is answered by
//! preparing what is missing and running the read again), so PostgreSQL parses and analyses them
//! once per connection rather than on every request, and settles on a cached generic plan once it
//! finds it as good as planning each time (for the aide list, after its first five executions).
//! Prepared statements belong to the server session, so this does not work behind a proxy that
//! hands out server connections per transaction (such as PgBouncer in transaction mode). Row-level
//! security applies as to any other user-scoped statement: the plan depends on the role, which is
//! `aide_user` on every execution, and the policies read `app.user_id` when they run.
//!
//! The simple-query protocol takes no parameters, so the arguments are SQL literals built only
//! from [`SqlLiteral`] values: nothing a client sent is ever pasted in as text. Rows arrive in
//! text form; [`crate::time::PgTimestamp`] reads their timestamps quickly.
//!
//! These reads run on connections of their own ([`ReadConnections`]), not the pool's.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgDatabaseError, PgRow, PgSeverity};
use sqlx::{Connection, Either, PgConnection};
use tokio::sync::Semaphore;

use super::{Caller, SqlLiteral};

/// The connections one-round-trip reads run on, apart from the pool.
///
/// sqlx's pool sends a `Sync` and waits for the answer each time a connection is returned, which
/// here would be a second round trip for every read. A read leaves nothing behind on its
/// connection (one implicit transaction, ended by the time the answer arrives), so these
/// connections need no such check: a read that fails because its connection broke while idle (a
/// server restart, an idle timeout) is simply run again, once, on a new one. Reads are safe to
/// repeat.
pub(super) struct ReadConnections {
    options: PgConnectOptions,
    idle: Mutex<Vec<Idle>>,
    permits: Semaphore,
}

/// A connection waiting for its next read.
struct Idle {
    conn: PgConnection,
    opened: Instant,
    since: Instant,
}

/// How long a read waits for a free connection and for a new one to open, as the pool's acquire
/// timeout.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read connections are closed after this long, and when idle for [`IDLE_TIMEOUT`], as the pool's
/// are: so that after a failover reads move to the new server, and an idle server process does not
/// hold connections.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);
const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);

impl ReadConnections {
    /// At most `size` connections, opened when first needed.
    pub(super) fn new(options: PgConnectOptions, size: u32) -> Self {
        ReadConnections {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(size as usize),
        }
    }

    pub(super) async fn user_read(
        &self,
        caller: Caller,
        statement: &Prepared,
        args: &Args,
    ) -> Result<Vec<PgRow>, sqlx::Error> {
        let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
        let _permit = tokio::time::timeout_at(deadline, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let (mut conn, mut opened, was_reused) = match self.take_idle().await {
            Some(idle) => (idle.conn, idle.opened, true),
            None => (self.open(deadline).await?, Instant::now(), false),
        };
        let mut result = user_read(&mut conn, caller, statement, args).await;
        if was_reused && result.as_ref().is_err_and(is_broken) {
            tracing::info!("a read connection broke while idle; reading on a new one");
            let deadline = tokio::time::Instant::now() + ACQUIRE_TIMEOUT;
            conn = self.open(deadline).await?;
            opened = Instant::now();
            result = user_read(&mut conn, caller, statement, args).await;
        }
        if keeps_connection(&result) && !self.permits.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                idle.push(Idle {
                    conn,
                    opened,
                    since: Instant::now(),
                });
                return result;
            }
        }
        // Anything else (and a read that ends after close): the connection is closed.
        let _ = conn.close().await;
        result
    }

    /// The most recently used idle connection that is still fresh; stale ones are closed.
    async fn take_idle(&self) -> Option<Idle> {
        loop {
            let idle = self.idle.lock().ok()?.pop()?;
            if idle.opened.elapsed() < MAX_LIFETIME && idle.since.elapsed() < IDLE_TIMEOUT {
                return Some(idle);
            }
            let _ = idle.conn.close().await;
        }
    }

    async fn open(&self, deadline: tokio::time::Instant) -> Result<PgConnection, sqlx::Error> {
        tokio::time::timeout_at(deadline, PgConnection::connect_with(&self.options))
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
    }

    /// Refuses new reads and closes the idle connections; reads in flight close theirs when they
    /// end.
    pub(super) async fn close(&self) {
        self.permits.close();
        let idle = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        for idle in idle {
            let _ = idle.conn.close().await;
        }
    }
}

/// Whether a connection may serve the next read after this result: after success, and after the
/// errors a read expects (a dead session). Any other error is rare, and some stick to a connection
/// (a cached plan whose result type changed under it, say), so the connection is replaced.
fn keeps_connection(result: &Result<Vec<PgRow>, sqlx::Error>) -> bool {
    match result {
        Ok(_) => true,
        Err(sqlx::Error::Database(e)) => e.code().as_deref() == Some(super::SESSION_NOT_LIVE),
        Err(_) => false,
    }
}

/// Whether an error leaves the connection unusable: anything but an ordinary database error. (A
/// dead session, say, is answered in the protocol, after which the connection is idle and fine;
/// a FATAL one, such as the server terminating the connection, is its last word.)
fn is_broken(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(e) => e
            .try_downcast_ref::<PgDatabaseError>()
            .is_none_or(|e| matches!(e.severity(), PgSeverity::Fatal | PgSeverity::Panic)),
        _ => true,
    }
}

/// SQLSTATE for "prepared statement does not exist".
const NO_SUCH_STATEMENT: &str = "26000";

/// A statement run by name in [`super::Db::user_read`].
#[derive(Debug)]
pub struct Prepared {
    name: &'static str,
    params: &'static str,
    sql: &'static str,
}

impl Prepared {
    /// `name` must be a plain identifier, unique among prepared statements; `params` lists the
    /// parameter types in order (`"uuid, int8"`); `sql` uses `$1`, `$2`... for them.
    pub const fn new(name: &'static str, params: &'static str, sql: &'static str) -> Self {
        Prepared { name, params, sql }
    }

    fn prepare_statement(&self) -> String {
        if self.params.is_empty() {
            format!("prepare {} as {}", self.name, self.sql)
        } else {
            format!("prepare {} ({}) as {}", self.name, self.params, self.sql)
        }
    }
}

/// The arguments of one execution of a [`Prepared`] statement, as SQL literals.
#[derive(Debug, Default)]
pub struct Args(Vec<String>);

impl Args {
    pub fn new() -> Self {
        Args::default()
    }

    /// Appends the next argument.
    pub fn arg(mut self, value: impl SqlLiteral) -> Self {
        self.0.push(value.sql());
        self
    }

    /// `(a, b, ...)`, or nothing when there are none (`execute name()` is a syntax error).
    fn list(&self) -> String {
        if self.0.is_empty() {
            String::new()
        } else {
            format!("({})", self.0.join(", "))
        }
    }
}

/// [`super::scope`]'s checked begin as two prepared statements: the switch to `aide_system`, then the
/// session check and the switch to the user's scope. (Two, because PostgreSQL checks the right to
/// call `assert_session_live` when a statement starts, and only `aide_system` has it.) Within the
/// second, the target list runs in order; were it ever not to, the check would run as
/// `aide_user`, which may not read sessions, and fail.
const SYSTEM_SCOPE: Prepared = Prepared::new(
    "enter_system_scope",
    "",
    "select set_config('role', 'aide_system', true)",
);
const CHECKED_USER_SCOPE: Prepared = Prepared::new(
    "enter_checked_user_scope",
    "uuid, uuid",
    "select assert_session_live($1, $2),
            set_config('role', 'aide_user', true), set_config('app.user_id', $2::text, true),
            set_config('transaction_read_only', 'on', true)",
);

/// The text of one user-scoped read: the session check, the scope, and the `EXECUTE`.
fn read_text(caller: Caller, statement: &Prepared, args: &Args) -> String {
    format!(
        "execute {}; execute {}({}, {}); execute {}{}",
        SYSTEM_SCOPE.name,
        CHECKED_USER_SCOPE.name,
        caller.session.sql(),
        caller.user.sql(),
        statement.name,
        args.list()
    )
}

/// Runs a user-scoped read on `conn`; see the module documentation.
async fn user_read(
    conn: &mut PgConnection,
    caller: Caller,
    statement: &Prepared,
    args: &Args,
) -> Result<Vec<PgRow>, sqlx::Error> {
    let text = read_text(caller, statement, args);
    match last_rows(conn, &text).await {
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some(NO_SUCH_STATEMENT) => {
            // A connection some of these statements have not run on yet. The failed attempt was
            // rolled back whole (it was one implicit transaction): prepare what is missing and
            // run it again.
            prepare_missing(conn, &[&SYSTEM_SCOPE, &CHECKED_USER_SCOPE, statement]).await?;
            last_rows(conn, &text).await
        }
        other => other,
    }
}

/// Prepares those of `statements` that are not yet prepared on `conn`.
async fn prepare_missing(
    conn: &mut PgConnection,
    statements: &[&Prepared],
) -> Result<(), sqlx::Error> {
    let prepared: Vec<String> = sqlx::query_scalar("select name from pg_prepared_statements")
        .fetch_all(&mut *conn)
        .await?;
    let missing: Vec<String> = statements
        .iter()
        .filter(|s| !prepared.iter().any(|name| name == s.name))
        .map(|s| s.prepare_statement())
        .collect();
    if !missing.is_empty() {
        // Through `Executor::execute` with a `&str`, a simple query (`raw_sql(..).execute` here
        // makes the future not provably `Send`).
        sqlx::Executor::execute(&mut *conn, missing.join("; ").as_str()).await?;
    }
    Ok(())
}

/// The rows of the last statement of a multi-statement simple query.
async fn last_rows(conn: &mut PgConnection, text: &str) -> Result<Vec<PgRow>, sqlx::Error> {
    let mut results = sqlx::raw_sql(text).fetch_many(conn);
    let mut finished = Vec::new();
    let mut current = Vec::new();
    while let Some(step) = results.try_next().await? {
        match step {
            // The end of one statement's results.
            Either::Left(_) => finished = std::mem::take(&mut current),
            Either::Right(row) => current.push(row),
        }
    }
    Ok(finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::UserId;
    use uuid::Uuid;

    #[test]
    fn the_read_text_holds_the_check_the_scope_and_literal_arguments() {
        const STATEMENT: Prepared = Prepared::new("things_list", "uuid, int8", "select $1, $2");
        let user = UserId(Uuid::from_u128(2));
        let session = Uuid::from_u128(1);
        let args = Args::new().arg(user).arg(Option::<i64>::None).arg(21_i64);
        let text = read_text(Caller { user, session }, &STATEMENT, &args);
        assert_eq!(
            text,
            "execute enter_system_scope; \
             execute enter_checked_user_scope('00000000-0000-0000-0000-000000000001'::uuid, \
             '00000000-0000-0000-0000-000000000002'::uuid); \
             execute things_list('00000000-0000-0000-0000-000000000002'::uuid, null, '21'::int8)"
        );
        let none = read_text(Caller { user, session }, &STATEMENT, &Args::new());
        assert!(none.ends_with("; execute things_list"), "{none}");
        assert_eq!(
            STATEMENT.prepare_statement(),
            "prepare things_list (uuid, int8) as select $1, $2"
        );
    }
}
