//! Every query about conversations and turns. User scope.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::{self, UserTx};
use crate::tier::Tier;

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
    CONVERSATION_STATE: User =
        "select c.content_bytes, u.tier from conversations c join users u on u.id = c.user_id
         where c.aide_id = $1 and c.user_id = $2";
    CONSUME_TURN: User = "select turn_count, turn_week_start from consume_turn($1)";
    USAGE: User = "select tier, turn_count, turn_week_start from users where id = $1";
    // The conversation's row is locked (so concurrent appends are counted one after another) and
    // its size checked against the plan's limit in the statement that inserts.
    APPEND: User =
        "insert into conversation_messages (conversation_id, user_id, role, content, metadata)
         select c.id, $2, $3, $4, $5
         from conversations c join users u on u.id = c.user_id
         where c.aide_id = $1 and c.user_id = $2
           and c.content_bytes + octet_length($4) <= case u.tier when 'pro' then $7::int8 else $6::int8 end
         for update of c
         returning id, role, content, metadata, created_at";
    LIST_MESSAGES: User =
        "select m.id, m.role, m.content, m.metadata, m.created_at
         from conversation_messages m join conversations c on c.id = m.conversation_id
         where c.aide_id = $1 and c.user_id = $2 and m.user_id = $2
           and m.id > coalesce($3::int8, 0)
         order by m.id
         limit $4";
}

/// The conversation of the caller's aide `aide_id`, if that aide is theirs.
pub async fn conversation_of(tx: &UserTx, aide_id: Uuid) -> Result<Option<Uuid>, db::Error> {
    tx.value_opt(&CONVERSATION_OF, &[&aide_id, &tx.user_id()])
        .await
}

/// The bytes the conversation of the caller's aide `aide_id` holds, and the caller's tier; None
/// when the aide is not theirs.
pub async fn conversation_state(
    tx: &UserTx,
    aide_id: Uuid,
) -> Result<Option<(i64, Tier)>, db::Error> {
    tx.row_opt(&CONVERSATION_STATE, &[&aide_id, &tx.user_id()])
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
pub async fn usage(tx: &UserTx) -> Result<(Tier, i32, DateTime<Utc>), db::Error> {
    tx.row(&USAGE, &[&tx.user_id()]).await
}

/// A message to append, and the most text the conversation may then hold on each plan.
pub struct NewMessage<'a> {
    pub role: &'a str,
    pub content: &'a str,
    pub metadata: &'a serde_json::Value,
    pub free_max_bytes: i64,
    pub pro_max_bytes: i64,
}

/// Appends a message to the conversation of the caller's aide `aide_id`. None when the aide is not
/// theirs, or the message would take the conversation past the caller's plan's limit (see
/// [`conversation_state`] for which). The conversation stays locked until the transaction ends.
pub async fn append(
    tx: &UserTx,
    aide_id: Uuid,
    message: &NewMessage<'_>,
) -> Result<Option<Message>, db::Error> {
    tx.row_opt(
        &APPEND,
        &[
            &aide_id,
            &tx.user_id(),
            &message.role,
            &message.content,
            message.metadata,
            &message.free_max_bytes,
            &message.pro_max_bytes,
        ],
    )
    .await
}

/// The messages of the conversation of the caller's aide `aide_id`, oldest first, after message
/// `after` (none when the aide is not theirs: see [`conversation_of`]).
pub async fn list_messages(
    tx: &UserTx,
    aide_id: Uuid,
    after: Option<i64>,
    limit: i64,
) -> Result<Vec<Message>, db::Error> {
    tx.rows(&LIST_MESSAGES, &[&aide_id, &tx.user_id(), &after, &limit])
        .await
}
