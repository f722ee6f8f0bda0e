//! The two transaction scopes. See the parent module for why they exist.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{SYSTEM_ROLE, USER_ROLE, UserId};

/// The statement that opens a scoped transaction: `BEGIN`, then the role and the user id for the
/// rest of the transaction only (`set_config(name, value, true)` is `SET LOCAL`), sent as one
/// simple query so a scope costs one round trip to open.
///
/// Values are formatted into the text rather than bound, because the simple-query protocol takes
/// no parameters: the role names are constants and a [`UserId`] prints as hex digits and dashes
/// only, so nothing here can carry SQL.
fn begin_statement(role: &'static str, user: Option<UserId>) -> String {
    let user = user
        .map(|u| u.0.hyphenated().to_string())
        .unwrap_or_default();
    format!(
        "begin; select set_config('role', '{role}', true), set_config('app.user_id', '{user}', true)"
    )
}

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
            "begin; select set_config('role', 'aide_user', true), set_config('app.user_id', '00000000-0000-0000-0000-000000000000', true)"
        );
        assert!(
            begin_statement(SYSTEM_ROLE, None).ends_with("set_config('app.user_id', '', true)")
        );
    }
}
