//! Every query about conversations and turns. User scope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::{self, UserTx};

/// A message as stored and as clients see it.
#[derive(Debug, Clone, Serialize, ToSchema)]
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

impl db::FromRow for Message {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Message {
            id: row.try_get("id")?,
            role: row.try_get("role")?,
            content: row.try_get("content")?,
            metadata: row.try_get("metadata")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

crate::statement! {
    CONVERSATION_OF: User = "select id from conversations where aide_id = $1 and user_id = $2";
    LOCK_FOR_APPEND: User =
        "select c.content_bytes, u.tier from conversations c join users u on u.id = c.user_id
         where c.id = $1 and c.user_id = $2 for update of c";
    CONSUME_TURN: User = "select turn_count, turn_week_start from consume_turn($1)";
    USAGE: User = "select tier, turn_count, turn_week_start from users where id = $1";
    INSERT_MESSAGE: User =
        "insert into conversation_messages (conversation_id, user_id, role, content, metadata)
         values ($1, $2, $3, $4, $5)
         returning id, role, content, metadata, created_at";
    LIST_MESSAGES: User =
        "select id, role, content, metadata, created_at from conversation_messages
         where conversation_id = $1 and user_id = $2 and id > coalesce($3::int8, 0)
         order by id
         limit $4";
}

/// The conversation of the caller's aide `aide_id`, if that aide is theirs.
pub async fn conversation_of(tx: &UserTx, aide_id: Uuid) -> Result<Option<Uuid>, db::Error> {
    tx.value_opt(&CONVERSATION_OF, &[&aide_id, &tx.user_id()])
        .await
}

/// The bytes the conversation's messages hold, and the caller's tier, with the conversation locked
/// until the transaction ends (so concurrent appends are counted one after another).
pub async fn lock_for_append(tx: &UserTx, conversation: Uuid) -> Result<(i64, String), db::Error> {
    tx.row(&LOCK_FOR_APPEND, &[&conversation, &tx.user_id()])
        .await
}

/// Counts one turn (see `consume_turn` in migrations/0004). None: the free limit is reached and
/// nothing changed.
pub async fn consume_turn(
    tx: &UserTx,
    free_limit: u32,
) -> Result<Option<(i32, DateTime<Utc>)>, db::Error> {
    let free_limit = i32::try_from(free_limit).unwrap_or(i32::MAX);
    tx.row_opt(&CONSUME_TURN, &[&free_limit]).await
}

/// The caller's tier, turns used and the start of their current week.
pub async fn usage(tx: &UserTx) -> Result<(String, i32, DateTime<Utc>), db::Error> {
    tx.row(&USAGE, &[&tx.user_id()]).await
}

pub async fn insert_message(
    tx: &UserTx,
    conversation: Uuid,
    role: &str,
    content: &str,
    metadata: &serde_json::Value,
) -> Result<Message, db::Error> {
    tx.row(
        &INSERT_MESSAGE,
        &[&conversation, &tx.user_id(), &role, &content, metadata],
    )
    .await
}

/// Messages oldest first, after message `after`.
pub async fn list_messages(
    tx: &UserTx,
    conversation: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, db::Error> {
    tx.rows(
        &LIST_MESSAGES,
        &[&conversation, &tx.user_id(), &after, &limit],
    )
    .await
}
