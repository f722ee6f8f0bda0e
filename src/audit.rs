//! The audit trail: rows written in the same transaction as the change they record. Details never
//! hold tokens, message content or email addresses.

use std::net::IpAddr;

use uuid::Uuid;

use crate::db::{SystemTx, UserId, UserTx};

mod routes;

pub use routes::router;

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

const INSERT: &str =
    "insert into audit_log (user_id, action, resource_type, resource_id, details, ip_address)
                      values ($1, $2, $3, $4, $5, $6::inet)";

/// Records `entry` from system scope (sign-in, webhooks, background work).
pub async fn record_system(tx: &mut SystemTx, entry: &Entry) -> Result<(), sqlx::Error> {
    bind(entry).execute(tx.conn()).await.map(|_| ())
}

/// Records `entry` from user scope, as the transaction's user (the policy allows no other).
pub async fn record_user(tx: &mut UserTx, entry: &Entry) -> Result<(), sqlx::Error> {
    let entry = entry.clone().user(tx.user_id());
    bind(&entry).execute(tx.conn()).await.map(|_| ())
}

fn bind(entry: &Entry) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(INSERT)
        .bind(entry.user_id.map(|u| u.0))
        .bind(entry.action)
        .bind(entry.resource_type)
        .bind(entry.resource_id)
        .bind(&entry.details)
        .bind(entry.ip.map(|ip| ip.to_string()))
}

/// The caller's own entries, newest first, before entry `before`.
pub async fn list(
    tx: &mut UserTx,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<routes::AuditEntry>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select id, action, resource_type, resource_id, details, host(ip_address) as ip_address, created_at
         from audit_log
         where user_id = $1 and id < coalesce($2, 9223372036854775807)
         order by id desc
         limit $3",
    )
    .bind(user.0)
    .bind(before)
    .bind(limit)
    .fetch_all(tx.conn())
    .await
}
