//! Every query about conversations and turns. User scope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::UserTx;

/// A message as stored and as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
pub struct Message {
    /// Increases with every message: also the order of the conversation.
    pub id: i64,
    /// `user` or `assistant`.
    pub role: String,
    pub content: String,
    pub metadata: serde_json::Value,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

/// The conversation of the caller's aide `aide_id`, if that aide is theirs.
pub async fn conversation_of(tx: &mut UserTx, aide_id: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_scalar("select id from conversations where aide_id = $1 and user_id = $2")
        .bind(aide_id)
        .bind(user.0)
        .fetch_optional(tx.conn())
        .await
}

/// The bytes the conversation's messages hold, and the caller's tier, with the conversation locked
/// until the transaction ends (so concurrent appends are counted one after another).
pub async fn lock_for_append(
    tx: &mut UserTx,
    conversation: Uuid,
) -> Result<(i64, String), sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select c.content_bytes, u.tier from conversations c join users u on u.id = c.user_id
         where c.id = $1 and c.user_id = $2 for update of c",
    )
    .bind(conversation)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
}

/// Counts one turn (see `consume_turn` in migrations/0004). None: the free limit is reached and
/// nothing changed.
pub async fn consume_turn(
    tx: &mut UserTx,
    free_limit: u32,
) -> Result<Option<(i32, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("select turn_count, turn_week_start from consume_turn($1)")
        .bind(i32::try_from(free_limit).unwrap_or(i32::MAX))
        .fetch_optional(tx.conn())
        .await
}

/// The caller's tier, turns used and the start of their current week.
pub async fn usage(tx: &mut UserTx) -> Result<(String, i32, DateTime<Utc>), sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as("select tier, turn_count, turn_week_start from users where id = $1")
        .bind(user.0)
        .fetch_one(tx.conn())
        .await
}

pub async fn insert_message(
    tx: &mut UserTx,
    conversation: Uuid,
    role: &str,
    content: &str,
    metadata: &serde_json::Value,
) -> Result<Message, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "insert into conversation_messages (conversation_id, user_id, role, content, metadata)
         values ($1, $2, $3, $4, $5)
         returning id, role, content, metadata, created_at",
    )
    .bind(conversation)
    .bind(user.0)
    .bind(role)
    .bind(content)
    .bind(metadata)
    .fetch_one(tx.conn())
    .await
}

/// Messages oldest first, after message `after`.
pub async fn list_messages(
    tx: &mut UserTx,
    conversation: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, sqlx::Error> {
    let user = tx.user_id();
    sqlx::query_as(
        "select id, role, content, metadata, created_at from conversation_messages
         where conversation_id = $1 and user_id = $2 and id > coalesce($3, 0)
         order by id
         limit $4",
    )
    .bind(conversation)
    .bind(user.0)
    .bind(after)
    .bind(limit)
    .fetch_all(tx.conn())
    .await
}
