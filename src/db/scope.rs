//! The two transaction scopes. See the parent module for why they exist.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{SYSTEM_ROLE, USER_ROLE, UserId};

/// The statement that opens a scoped transaction: the role and the user id for the rest of the
/// transaction only (`set_config(name, value, true)` is `SET LOCAL`), then `BEGIN`, sent as one
/// simple query so a scope costs one round trip to open.
///
/// `BEGIN` comes last on purpose. Statements of one simple query form one implicit transaction,
/// which `BEGIN` turns into a regular one, keeping the settings. Anything that fails before it
/// rolls the implicit transaction back, so a failed begin leaves the pooled connection idle and
/// clean rather than inside an aborted transaction.
///
/// Values are formatted into the text rather than bound, because the simple-query protocol takes
/// no parameters: the role names are constants and a [`UserId`] prints as hex digits and dashes
/// only, so nothing here can carry SQL.
fn begin_statement(role: &'static str, user: Option<UserId>) -> String {
    let user = user
        .map(|u| u.0.hyphenated().to_string())
        .unwrap_or_default();
    format!(
        "select set_config('role', '{role}', true), set_config('app.user_id', '{user}', true); begin"
    )
}

/// Read-only (`begin read only`) or read-write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    ReadWrite,
    ReadOnly,
}

impl Access {
    fn begin(self) -> &'static str {
        match self {
            Access::ReadWrite => "begin",
            Access::ReadOnly => "begin read only",
        }
    }
}

/// Like [`begin_statement`] for a user, after checking as `aide_system` that `session` is a live
/// session of that user (`assert_session_live` raises SQLSTATE 28000 otherwise): one round trip
/// for the check and the scope.
fn begin_checked_statement(user: UserId, session: uuid::Uuid, access: Access) -> String {
    format!("{}; {}", checked_scope(user, session), access.begin())
}

/// The statements that check `session` as `aide_system` and then enter `user`'s scope, all
/// transaction-local. Values are formatted in as for [`begin_statement`].
fn checked_scope(user: UserId, session: uuid::Uuid) -> String {
    let uid = user.0.hyphenated();
    format!(
        "select set_config('role', '{SYSTEM_ROLE}', true); \
         select assert_session_live('{}'::uuid, '{uid}'::uuid); \
         select set_config('role', '{USER_ROLE}', true), set_config('app.user_id', '{uid}', true)",
        session.hyphenated()
    )
}

/// SQLSTATE raised by `assert_session_live`.
pub const SESSION_NOT_LIVE: &str = "28000";

/// A transaction confined by row-level security to one user's rows. Rolled back when dropped
/// without [`UserTx::commit`].
pub struct UserTx {
    tx: Transaction<'static, Postgres>,
    user: UserId,
}

impl UserTx {
    pub(super) async fn begin(pool: &PgPool, user: UserId) -> Result<Self, sqlx::Error> {
        let tx = pool
            .begin_with(begin_statement(USER_ROLE, Some(user)))
            .await?;
        Ok(UserTx { tx, user })
    }

    pub(super) async fn begin_checked(
        pool: &PgPool,
        user: UserId,
        session: uuid::Uuid,
        access: Access,
    ) -> Result<Self, sqlx::Error> {
        let tx = pool
            .begin_with(begin_checked_statement(user, session, access))
            .await?;
        Ok(UserTx { tx, user })
    }

    /// The user this transaction is confined to.
    pub fn user_id(&self) -> UserId {
        self.user
    }

    /// The connection, for repository functions. Everything run on it stays inside the scope.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

/// A read-only [`UserTx`] (`begin read only`: PostgreSQL refuses any write in it). Repository
/// functions take it as a `&mut UserTx`.
///
/// [`ReadTx::finish`] ends it without waiting for the database: the `ROLLBACK` is queued on the
/// connection and goes out with the pool's check when the connection is returned, so a read
/// costs one round trip less than a committed transaction. Rolling back and committing are the
/// same thing for a transaction that cannot write.
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

impl std::ops::DerefMut for ReadTx {
    fn deref_mut(&mut self) -> &mut UserTx {
        &mut self.0
    }
}

/// A system-scoped transaction, for sign-in, webhooks and background work. Rolled back when
/// dropped without [`SystemTx::commit`].
pub struct SystemTx {
    tx: Transaction<'static, Postgres>,
}

impl SystemTx {
    pub(super) async fn begin(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let tx = pool.begin_with(begin_statement(SYSTEM_ROLE, None)).await?;
        Ok(SystemTx { tx })
    }

    /// The connection, for repository functions. Everything run on it stays inside the scope.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    pub async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checked_begin_statement_ends_with_the_chosen_begin() {
        let user = UserId(uuid::Uuid::nil());
        let session = uuid::Uuid::from_u128(1);
        let read = begin_checked_statement(user, session, Access::ReadOnly);
        assert!(read.ends_with("; begin read only"), "{read}");
        assert!(read.contains("assert_session_live('00000000-0000-0000-0000-000000000001'::uuid"));
        let write = begin_checked_statement(user, session, Access::ReadWrite);
        assert!(write.ends_with("; begin"), "{write}");
    }

    #[test]
    fn the_begin_statement_holds_only_constants_and_a_uuid() {
        let user = UserId(uuid::Uuid::nil());
        assert_eq!(
            begin_statement(USER_ROLE, Some(user)),
            "select set_config('role', 'aide_user', true), set_config('app.user_id', '00000000-0000-0000-0000-000000000000', true); begin"
        );
        assert!(
            begin_statement(SYSTEM_ROLE, None)
                .ends_with("set_config('app.user_id', '', true); begin")
        );
    }
}
