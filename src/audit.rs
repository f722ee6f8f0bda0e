//! The audit trail: rows written in the same transaction as the change they record. Details never
//! hold tokens, message content or email addresses.

use std::net::IpAddr;

use uuid::Uuid;

use crate::db::{self, SystemTx, UserId, UserTx};

mod routes;

pub use routes::{AuditEntry, router};

/// One audit row.
#[derive(Debug, Clone)]
pub struct Entry {
    pub user_id: Option<UserId>,
    /// Dotted, lower case: `auth.sign_in`, `aide.create`.
    pub action: &'static str,
    pub resource_type: &'static str,
    pub resource_id: Option<Uuid>,
    pub details: serde_json::Value,
    pub ip: Option<IpAddr>,
}

impl Entry {
    pub fn new(action: &'static str, resource_type: &'static str) -> Self {
        Entry {
            user_id: None,
            action,
            resource_type,
            resource_id: None,
            details: serde_json::json!({}),
            ip: None,
        }
    }

    pub fn user(mut self, user: UserId) -> Self {
        self.user_id = Some(user);
        self
    }

    pub fn maybe_user(mut self, user: Option<UserId>) -> Self {
        self.user_id = user;
        self
    }

    pub fn resource(mut self, id: Uuid) -> Self {
        self.resource_id = Some(id);
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }
}

/// One audit row; the same text for both scopes.
macro_rules! insert_audit_row {
    () => {
        "insert into audit_log (user_id, action, resource_type, resource_id, details, ip_address)
         values ($1, $2, $3, $4, $5, $6::inet)"
    };
}

crate::statement! {
    /// One audit row, from system scope.
    INSERT_SYSTEM: System = insert_audit_row!();
    /// The same, from user scope (the policy allows only the transaction's user).
    INSERT_USER: User = insert_audit_row!();
    /// The caller's own entries, newest first, before entry `$2` (none when null).
    LIST: User = "select id, action, resource_type, resource_id, details, host(ip_address) as ip_address, created_at
         from audit_log
         where user_id = $1 and id < coalesce($2, 9223372036854775807)
         order by id desc
         limit $3";
}

/// Records `entry` from system scope (sign-in, webhooks, background work).
pub async fn record_system(tx: &SystemTx, entry: &Entry) -> Result<(), db::Error> {
    tx.execute(
        &INSERT_SYSTEM,
        &[
            &entry.user_id,
            &entry.action,
            &entry.resource_type,
            &entry.resource_id,
            &entry.details,
            &entry.ip,
        ],
    )
    .await
    .map(|_| ())
}

/// Records `entry` from user scope, as the transaction's user (the policy allows no other).
pub async fn record_user(tx: &UserTx, entry: &Entry) -> Result<(), db::Error> {
    tx.execute(
        &INSERT_USER,
        &[
            &Some(tx.user_id()),
            &entry.action,
            &entry.resource_type,
            &entry.resource_id,
            &entry.details,
            &entry.ip,
        ],
    )
    .await
    .map(|_| ())
}

/// The caller's own entries, newest first, before entry `before`.
pub async fn list(
    tx: &UserTx,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<routes::AuditEntry>, db::Error> {
    tx.rows(&LIST, &[&tx.user_id(), &before, &limit]).await
}
