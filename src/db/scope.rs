//! The two transaction scopes. See the parent module for why they exist.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use super::{SYSTEM_ROLE, USER_ROLE, UserId};

/// Sets the role and the user id for the rest of the transaction only, in one round trip.
/// `set_config(name, value, true)` is `SET LOCAL`, and unlike `SET LOCAL` it takes parameters.
const BEGIN_SCOPE: &str =
    "select set_config('role', $1, true), set_config('app.user_id', $2, true)";

/// A transaction confined by row-level security to one user's rows. Rolled back when dropped
/// without [`UserTx::commit`].
pub struct UserTx {
    tx: Transaction<'static, Postgres>,
    user: UserId,
}

impl UserTx {
    pub(super) async fn begin(pool: &PgPool, user: UserId) -> Result<Self, sqlx::Error> {
        let mut tx = pool.begin().await?;
        sqlx::query(BEGIN_SCOPE)
            .bind(USER_ROLE)
            .bind(user.0.to_string())
            .execute(&mut *tx)
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
        let mut tx = pool.begin().await?;
        sqlx::query(BEGIN_SCOPE)
            .bind(SYSTEM_ROLE)
            .bind("")
            .execute(&mut *tx)
            .await?;
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
