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

/// Like [`begin_statement`] for a user, after checking as `aide_system` that `session` is a live
/// session of that user (`assert_session_live` raises SQLSTATE 28000 otherwise): one round trip
/// for the check and the scope.
fn begin_checked_statement(user: UserId, session: uuid::Uuid) -> String {
    let uid = user.0.hyphenated();
    format!(
        "select set_config('role', '{SYSTEM_ROLE}', true); \
         select assert_session_live('{}'::uuid, '{uid}'::uuid); \
         select set_config('role', '{USER_ROLE}', true), set_config('app.user_id', '{uid}', true); \
         begin",
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
    ) -> Result<Self, sqlx::Error> {
        let tx = pool
            .begin_with(begin_checked_statement(user, session))
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
