//! The two transaction scopes. See the parent module for why they exist.
//!
//! A scope is opened lazily: taking one from [`super::Db`] only takes a pooled connection. Its
//! first statement goes out behind `BEGIN`, the session check and the role and user id settings,
//! all in the same round trip, and every value among them is bound. Statements issued together
//! (joined futures, see [`super::in_order`] and [`UserTx::commit_queued`]) share a round trip
//! too: the connection sends each request when its future is first polled, and answers them in
//! that order.
//!
//! Dropping a scope that was opened and not committed queues a `ROLLBACK` on its connection
//! without waiting for it; the next transaction on that connection goes out behind it.

use std::sync::atomic::{AtomicU8, Ordering};

use deadpool::managed::Object;
use futures_util::FutureExt;
use tokio_postgres::Row;
use tokio_postgres::types::FromSqlOwned;
use uuid::Uuid;

use super::pool::{Manager, in_order};
use super::statement::{FromRow, Login, Params, Sql, Support, System, User, Value};
use super::{Error, UserId};

crate::statement! {
    BEGIN: Login = "begin";
    BEGIN_READ_ONLY: Login = "begin read only";
    COMMIT: Login = "commit";
    ROLLBACK: Login = "rollback";
    /// The system scope: role `aide_system`, no user, for the rest of the transaction.
    ENTER_SYSTEM: Login =
        "select set_config('role', 'aide_system', true), set_config('app.user_id', '', true)";
    /// [`ENTER_SYSTEM`], committing without waiting for the disk (see [`super::Db::bookkeeping`]).
    ENTER_BOOKKEEPING: Login = "select set_config('role', 'aide_system', true), \
         set_config('app.user_id', '', true), set_config('synchronous_commit', 'off', true)";
    /// Raises SQLSTATE 28000 ([`SESSION_NOT_LIVE`]) unless `$1` is a live session of user `$2`,
    /// then enters that user's scope (migration 0014). Run as the login role, before any other
    /// scope is entered.
    ENTER_CHECKED_USER: Login = "select enter_user_scope($1, $2)";
    /// The user scope: role `aide_user` and `app.user_id` for the rest of the transaction.
    ENTER_USER: Login =
        "select set_config('role', 'aide_user', true), set_config('app.user_id', $1, true)";
    /// The support scope, after checking the operator's session (migration 0022).
    ENTER_SUPPORT: Login = "select enter_support_scope($1, $2)";
    /// The transaction's id, if it wrote anything (sent just before `COMMIT`).
    XACT_ID: Login = "select pg_current_xact_id_if_assigned()::text";
}

/// How long a commit whose answer was lost waits for the database to come back and say whether
/// it happened.
const OUTCOME_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// SQLSTATE raised by `assert_session_live`.
pub const SESSION_NOT_LIVE: &str = "28000";

/// How a scope opens.
#[derive(Debug, Clone, Copy)]
pub(super) enum Opening {
    User {
        user: UserId,
        /// Checked as `aide_system` before the scope is entered.
        session: Option<Uuid>,
        read_only: bool,
    },
    System {
        bookkeeping: bool,
    },
    Support {
        operator: UserId,
        session: Uuid,
    },
}

const NOT_BEGUN: u8 = 0;
const OPEN: u8 = 1;
const FINISHED: u8 = 2;

/// What both scopes share: a pooled connection and the state of its transaction.
struct Tx {
    conn: Object<Manager>,
    opening: Opening,
    state: AtomicU8,
}

impl Tx {
    fn new(conn: Object<Manager>, opening: Opening) -> Self {
        Tx {
            conn,
            opening,
            state: AtomicU8::new(NOT_BEGUN),
        }
    }

    /// Sends the opening statements (on its first poll) and waits for their answers.
    async fn open(&self) -> Result<(), Error> {
        let client = &self.conn.client;
        let run =
            |sql: &'static Sql<Login>,
             params: Vec<Box<dyn tokio_postgres::types::ToSql + Sync + Send>>| {
                let statement = self.conn.statement(sql.text());
                async move {
                    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                        params.iter().map(|p| p.as_ref() as _).collect();
                    client.execute(statement?, &refs).await?;
                    Ok::<(), Error>(())
                }
                .boxed()
            };
        let steps = match self.opening {
            Opening::System { bookkeeping } => vec![
                run(&BEGIN, vec![]),
                run(
                    if bookkeeping {
                        &ENTER_BOOKKEEPING
                    } else {
                        &ENTER_SYSTEM
                    },
                    vec![],
                ),
            ],
            Opening::Support { operator, session } => vec![
                run(&BEGIN, vec![]),
                run(
                    &ENTER_SUPPORT,
                    vec![Box::new(session), Box::new(operator.0)],
                ),
            ],
            Opening::User {
                user,
                session,
                read_only,
            } => {
                let begin = run(if read_only { &BEGIN_READ_ONLY } else { &BEGIN }, vec![]);
                let enter = match session {
                    Some(session) => run(
                        &ENTER_CHECKED_USER,
                        vec![Box::new(session), Box::new(user.0)],
                    ),
                    None => run(&ENTER_USER, vec![Box::new(user.0.hyphenated().to_string())]),
                };
                vec![begin, enter]
            }
        };
        in_order(steps).await.map(|_| ())
    }

    /// Runs one statement, behind the opening statements if it is the first.
    async fn rows(&self, text: &'static str, params: Params<'_>) -> Result<Vec<Row>, Error> {
        let statement = self.conn.statement(text)?;
        let query = async { Ok::<_, Error>(self.conn.client.query(statement, params).await?) };
        match self
            .state
            .compare_exchange(NOT_BEGUN, OPEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => futures_util::future::try_join(self.open(), query)
                .await
                .map(|((), rows)| rows),
            Err(OPEN) => query.await,
            Err(_) => Err(Error::Finished),
        }
    }

    async fn execute(&self, text: &'static str, params: Params<'_>) -> Result<u64, Error> {
        let statement = self.conn.statement(text)?;
        let execute = async { Ok::<_, Error>(self.conn.client.execute(statement, params).await?) };
        match self
            .state
            .compare_exchange(NOT_BEGUN, OPEN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => futures_util::future::try_join(self.open(), execute)
                .await
                .map(|((), n)| n),
            Err(OPEN) => execute.await,
            Err(_) => Err(Error::Finished),
        }
    }

    /// Sends `COMMIT` now (behind whatever was sent before, and behind asking for the
    /// transaction's id) and waits for its answer. A scope that never ran a statement has nothing
    /// to commit.
    ///
    /// When the connection breaks before the answer to `COMMIT` arrives (the database crashed or
    /// was shut down), the transaction may have committed or not. Rather than answer an error for
    /// a write that happened, it asks again, on another connection once the database is back,
    /// whether the transaction committed ([`OUTCOME_WAIT`] at most).
    async fn commit(&self) -> Result<(), Error> {
        match self.state.swap(FINISHED, Ordering::AcqRel) {
            // Bookkeeping may be lost by design (see `Db::bookkeeping`): no need to ask.
            OPEN if matches!(self.opening, Opening::System { bookkeeping: true }) => {
                let statement = self.conn.statement(COMMIT.text())?;
                self.conn.client.execute(statement, &[]).await?;
                Ok(())
            }
            OPEN => {
                let client = &self.conn.client;
                let id = self.conn.statement(XACT_ID.text())?;
                let commit = self.conn.statement(COMMIT.text())?;
                let id = async { Ok::<_, Error>(client.query_opt(id, &[]).await?) };
                let commit = async { Ok::<_, Error>(client.execute(commit, &[]).await?) };
                // Polled in order: the id's request goes out before COMMIT.
                match futures_util::future::join(id, commit).await {
                    (_, Ok(_)) => Ok(()),
                    (Ok(Some(row)), Err(e)) if e.is_unavailable() => {
                        match row.try_get::<_, Option<String>>(0).ok().flatten() {
                            Some(xact) => self.outcome(&xact, e).await,
                            // It wrote nothing: nothing to lose.
                            None => Err(e),
                        }
                    }
                    (_, Err(e)) => Err(e),
                }
            }
            NOT_BEGUN => Ok(()),
            _ => Err(Error::Finished),
        }
    }

    /// Whether transaction `xact`, whose `COMMIT` failed with `failure`, committed after all:
    /// asked on a connection of its own (not from the pool, which the broken connections may
    /// fill) until the database answers or [`OUTCOME_WAIT`] passes.
    ///
    /// Known limit: after a crash, PostgreSQL may hand out again the ids of transactions none of
    /// whose log reached the disk. If such an id is reused and its new transaction commits before
    /// this asks, a write that was lost would be reported as done. It needs this transaction's
    /// whole log to be lost while a later one commits within the same fraction of a second.
    async fn outcome(&self, xact: &str, failure: Error) -> Result<(), Error> {
        let Some(pool) = Object::pool(&self.conn) else {
            return Err(failure);
        };
        let config = pool.manager().config.clone();
        let ask = async {
            loop {
                let status = async {
                    let client = super::pool::connect(&config).await?;
                    let row = client
                        .query_one("select pg_xact_status($1::text::xid8)", &[&xact])
                        .await?;
                    Ok::<Option<String>, Error>(row.try_get(0)?)
                }
                .await;
                match status.as_ref().map(Option::as_deref) {
                    Ok(Some("committed")) => return true,
                    Ok(Some("aborted") | None) => return false,
                    // Still in progress (recovery), or the database is not back yet.
                    _ => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                }
            }
        };
        match tokio::time::timeout(OUTCOME_WAIT, ask).await {
            Ok(true) => {
                tracing::warn!("a commit's answer was lost with the connection; it had committed");
                Ok(())
            }
            Ok(false) => Err(failure),
            Err(_) => {
                tracing::warn!(
                    "a commit's outcome is unknown: the database did not come back in time"
                );
                Err(failure)
            }
        }
    }
}

impl Drop for Tx {
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) == OPEN
            && let Ok(statement) = self.conn.statement(ROLLBACK.text())
        {
            // The first poll sends the request; its answer is read and dropped by the
            // connection's task. The connection goes back to the pool at once.
            let _ = self.conn.client.execute(statement, &[]).now_or_never();
        }
    }
}

macro_rules! scope_methods {
    ($scope:ident) => {
        /// Runs a statement and returns how many rows it changed.
        pub async fn execute(&self, sql: &Sql<$scope>, params: Params<'_>) -> Result<u64, Error> {
            self.tx.execute(sql.text(), params).await
        }

        /// Runs a statement and reads every row it returns.
        pub async fn rows<R: FromRow>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<Vec<R>, Error> {
            let rows = self.tx.rows(sql.text(), params).await?;
            rows.iter().map(R::from_row).collect()
        }

        /// Runs a statement that returns at most one row (the first is read if it returns more).
        pub async fn row_opt<R: FromRow>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<Option<R>, Error> {
            let rows = self.tx.rows(sql.text(), params).await?;
            rows.first().map(R::from_row).transpose()
        }

        /// Runs a statement that returns a row.
        pub async fn row<R: FromRow>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<R, Error> {
            self.row_opt(sql, params).await?.ok_or(Error::NoRow)
        }

        /// Runs a statement that returns a row of one column, and reads that column.
        pub async fn value<T: FromSqlOwned>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<T, Error> {
            self.row::<Value<T>>(sql, params).await.map(|v| v.0)
        }

        /// Runs a statement that returns rows of one column, and reads that column of each.
        pub async fn values<T: FromSqlOwned>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<Vec<T>, Error> {
            Ok(self
                .rows::<Value<T>>(sql, params)
                .await?
                .into_iter()
                .map(|v| v.0)
                .collect())
        }

        /// Like [`Self::value`], for a statement that may return no row.
        pub async fn value_opt<T: FromSqlOwned>(
            &self,
            sql: &Sql<$scope>,
            params: Params<'_>,
        ) -> Result<Option<T>, Error> {
            Ok(self.row_opt::<Value<T>>(sql, params).await?.map(|v| v.0))
        }

        /// Commits, one round trip.
        pub async fn commit(self) -> Result<(), Error> {
            self.tx.commit().await
        }

        /// Sends `COMMIT` behind the statements already sent, for joining with them so a whole
        /// transaction takes one round trip:
        /// `try_join(repo::insert(&tx, ..), tx.commit_queued())`. Poll it after them (join it
        /// last). The scope takes no statement after it, but keeps its pooled connection until it
        /// is dropped: drop it before awaiting anything else (above all, another scope).
        pub async fn commit_queued(&self) -> Result<(), Error> {
            self.tx.commit().await
        }

        /// Rolls back (queued; nothing to wait for). Dropping the scope does the same.
        pub fn rollback(self) {
            drop(self);
        }

        /// Runs text that is not a registered statement, prepared on the spot (an extra round
        /// trip). For tests, which probe scopes with statements of their own; code under `src/`
        /// uses registered statements only (the statement test checks that).
        #[doc(hidden)]
        pub async fn unregistered(
            &self,
            text: &str,
            params: Params<'_>,
        ) -> Result<Vec<Row>, Error> {
            if self.tx.state.load(Ordering::Acquire) == NOT_BEGUN {
                // Open the scope with a harmless registered statement first.
                self.tx.execute(ENTER_NOTHING.text(), &[]).await?;
            }
            let statement = self.tx.conn.client.prepare(text).await?;
            Ok(self.tx.conn.client.query(&statement, params).await?)
        }
    };
}

crate::statement! {
    /// Does nothing: opens a scope before an unregistered statement (tests only).
    ENTER_NOTHING: Login = "select 1";
}

/// A transaction confined by row-level security to one user's rows. Rolled back when dropped
/// without [`UserTx::commit`].
pub struct UserTx {
    tx: Tx,
    user: UserId,
}

impl UserTx {
    pub(super) fn new(
        conn: Object<Manager>,
        user: UserId,
        session: Option<Uuid>,
        read_only: bool,
    ) -> Self {
        UserTx {
            tx: Tx::new(
                conn,
                Opening::User {
                    user,
                    session,
                    read_only,
                },
            ),
            user,
        }
    }

    /// The user this transaction is confined to.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    scope_methods!(User);
}

/// A read-only [`UserTx`] (`begin read only`: PostgreSQL refuses any write in it). Repository
/// functions take it as a `&UserTx`.
///
/// [`ReadTx::finish`] ends it without waiting for the database: the `ROLLBACK` is queued on the
/// connection, so a read costs one round trip. Rolling back and committing are the same thing for
/// a transaction that cannot write.
pub struct ReadTx(UserTx);

impl ReadTx {
    pub(super) fn new(tx: UserTx) -> Self {
        ReadTx(tx)
    }

    /// Ends the transaction (see the type's documentation).
    pub fn finish(self) {
        drop(self);
    }
}

impl std::ops::Deref for ReadTx {
    type Target = UserTx;

    fn deref(&self) -> &UserTx {
        &self.0
    }
}

/// A system-scoped transaction, for sign-in, webhooks and background work. Rolled back when
/// dropped without [`SystemTx::commit`].
pub struct SystemTx {
    tx: Tx,
}

impl SystemTx {
    pub(super) fn new(conn: Object<Manager>, bookkeeping: bool) -> Self {
        SystemTx {
            tx: Tx::new(conn, Opening::System { bookkeeping }),
        }
    }

    scope_methods!(System);
}

/// A staff-access transaction: role `aide_support`, which holds no table privileges and can only
/// call the staff-access functions. Rolled back when dropped without [`SupportTx::commit`].
pub struct SupportTx {
    tx: Tx,
}

impl SupportTx {
    pub(super) fn new(conn: Object<Manager>, operator: UserId, session: Uuid) -> Self {
        SupportTx {
            tx: Tx::new(conn, Opening::Support { operator, session }),
        }
    }

    scope_methods!(Support);
}
