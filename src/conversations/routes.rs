//! `/api/aides/{id}/conversation`: read the history, append a message.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repo::{self, Message};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::cursor::{decode_id_cursor, encode_id_cursor};
use crate::error::{AppError, Usage};
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::{IdPath, PageParams, QueryParams, page_size};
use crate::state::AppState;
use crate::tier::Tier;

/// Longest user message, in characters.
pub const MAX_USER_CHARS: usize = 10_000;
/// Longest assistant message, in characters (pages can be long).
pub const MAX_ASSISTANT_CHARS: usize = 100_000;
/// Largest metadata object, serialised.
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// A turn week.
pub(crate) const WEEK: chrono::Duration = chrono::Duration::days(7);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(read))
        .routes(routes!(append))
}

/// A page of a conversation, oldest message first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationPage {
    pub aide_id: Uuid,
    pub messages: Vec<Message>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"role": "user", "content": "add milk to the list"}))]
pub struct NewMessage {
    pub role: Role,
    /// Up to 10,000 characters for a user message, 100,000 for an assistant's; not blank.
    #[schema(min_length = 1, max_length = 100000)]
    pub content: String,
    /// Any JSON object (at most 16 KiB).
    pub metadata: Option<serde_json::Value>,
}

/// This week's turns after the message.
#[derive(Debug, Serialize, ToSchema)]
pub struct Turns {
    pub used: i32,
    /// Null when unlimited (Pro).
    pub limit: Option<u32>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub resets_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Appended {
    pub message: Message,
    /// Present when the message was the user's (and so used a turn).
    pub turns: Option<Turns>,
}

/// The conversation of an aide, oldest first.
#[utoipa::path(get, path = "/api/aides/{id}/conversation", tag = "conversations",
    params(("id" = Uuid, Path, description = "The aide's id"), PageParams),
    responses((status = 200, body = ConversationPage),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide_id): IdPath,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<ConversationPage>, AppError> {
    let after = params.cursor.as_deref().map(decode_id_cursor).transpose()?;
    let limit = page_size(params.limit)?;
    let tx = api.begin_read(&state.db).await?;
    // Both in one round trip: the first tells "not theirs" from "no messages".
    let (conversation, mut messages) = futures_util::future::try_join(
        repo::conversation_of(&tx, aide_id),
        repo::list_messages(&tx, aide_id, after, limit + 1),
    )
    .await?;
    tx.finish();
    if conversation.is_none() {
        return Err(AppError::not_found());
    }
    let next_cursor = crate::cursor::next_page(&mut messages, limit, |m| encode_id_cursor(m.id));
    Ok(Json(ConversationPage {
        aide_id,
        messages,
        next_cursor,
    }))
}

/// Appends a message. A user message uses one of the week's turns (free: 50 a week).
#[utoipa::path(post, path = "/api/aides/{id}/conversation/messages", tag = "conversations",
    params(("id" = Uuid, Path, description = "The aide's id")),
    request_body = NewMessage,
    responses((status = 201, body = Appended),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 413, description = "CONVERSATION_FULL: the conversation holds as much text as the plan keeps", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, description = "TURN_LIMIT_REACHED (with usage and Retry-After) or RATE_LIMITED", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn append(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide_id): IdPath,
    JsonBody(message): JsonBody<NewMessage>,
) -> Result<(StatusCode, Json<Appended>), AppError> {
    let (role, max_chars) = match message.role {
        Role::User => ("user", MAX_USER_CHARS),
        Role::Assistant => ("assistant", MAX_ASSISTANT_CHARS),
    };
    let chars = message.content.chars().count();
    if message.content.trim().is_empty() {
        return Err(AppError::invalid("content", "must not be empty"));
    }
    if message.content.contains('\0') {
        return Err(AppError::invalid(
            "content",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    if chars > max_chars {
        return Err(AppError::invalid(
            "content",
            format!(
                "a {role} message may be at most {max_chars} characters (this one has {chars})"
            ),
        ));
    }
    let metadata = message.metadata.unwrap_or_else(|| serde_json::json!({}));
    if !metadata.is_object() {
        return Err(AppError::invalid("metadata", "must be a JSON object"));
    }
    if !storable(&metadata) {
        return Err(AppError::invalid(
            "metadata",
            "must not contain the NUL character (\\u0000) in a key or a string",
        ));
    }
    if !numbers_are_safe(&metadata) {
        return Err(AppError::invalid(
            "metadata",
            "numbers must be within ±9007199254740991 (2^53 - 1, what every JSON reader keeps exactly), and not smaller than 1e-300 unless 0",
        ));
    }
    if metadata.to_string().len() > MAX_METADATA_BYTES {
        return Err(AppError::invalid("metadata", "must be at most 16 KiB"));
    }

    let limits = &state.config.limits;
    let free_limit = limits.free_turns_per_week;
    let new = repo::NewMessage {
        role,
        content: &message.content,
        metadata: &metadata,
        free_max_bytes: i64::try_from(limits.tier(Tier::Free).max_conversation_bytes)
            .unwrap_or(i64::MAX),
        pro_max_bytes: i64::try_from(limits.tier(Tier::Pro).max_conversation_bytes)
            .unwrap_or(i64::MAX),
    };
    let tx = api.begin(&state.db).await?;
    // One round trip: the session check, the turn (which locks the account row, so every append
    // takes the account before the conversation and two never wait on each other in opposite
    // orders), the caller's plan, and the insert, which locks the conversation and checks its
    // size. A refusal found afterwards rolls all of it back, the turn included.
    let (turn, stored) = if message.role == Role::User {
        let (turn, usage, stored) = futures_util::future::try_join3(
            repo::consume_turn(&tx, free_limit),
            repo::usage(&tx),
            repo::append(&tx, aide_id, &new),
        )
        .await?;
        (Some((turn, usage)), stored)
    } else {
        (None, repo::append(&tx, aide_id, &new).await?)
    };
    let full = match stored {
        Some(_) => None,
        None => Some(
            repo::conversation_state(&tx, aide_id)
                .await?
                .ok_or_else(AppError::not_found)?,
        ),
    };
    let turns = match turn {
        Some((None, (_, used, week_start))) => {
            return Err(turn_limit(used, free_limit, week_start + WEEK));
        }
        Some((Some((used, week_start)), (tier, _, _))) => Some(Turns {
            used,
            limit: (!tier.is_pro()).then_some(free_limit),
            resets_at: week_start + WEEK,
        }),
        None => None,
    };
    let stored = match (stored, full) {
        (Some(stored), _) => stored,
        (None, Some((held, tier))) => {
            return Err(conversation_full(
                held,
                limits.tier(tier).max_conversation_bytes,
                tier,
            ));
        }
        (None, None) => return Err(AppError::not_found()),
    };
    futures_util::future::try_join(
        audit::record_user(
            &tx,
            &Entry::new("conversation.message", "aide")
                .resource(aide_id)
                .details(serde_json::json!({"message_id": stored.id, "role": role, "chars": chars}))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Appended {
            message: stored,
            turns,
        }),
    ))
}

/// Whether every number in `value` reads back the same from the database: PostgreSQL keeps JSON
/// numbers as exact decimals and prints them without an exponent, and numbers near the edges of
/// a double (1.7e308, 5e-324) then no longer parse as one, so the message could never be read.
fn numbers_are_safe(value: &serde_json::Value) -> bool {
    const MAX: f64 = 9_007_199_254_740_991.0;
    match value {
        serde_json::Value::Number(n) => n
            .as_f64()
            .is_some_and(|x| x.abs() <= MAX && (x == 0.0 || x.abs() >= 1e-300)),
        serde_json::Value::Array(items) => items.iter().all(numbers_are_safe),
        serde_json::Value::Object(fields) => fields.values().all(numbers_are_safe),
        _ => true,
    }
}

/// Whether PostgreSQL can store `value` as `jsonb`: it refuses `\u0000` in keys and strings.
fn storable(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => !s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().all(storable),
        serde_json::Value::Object(fields) => fields
            .iter()
            .all(|(key, value)| !key.contains('\0') && storable(value)),
        _ => true,
    }
}

/// 413: the conversation holds `held` bytes of text, and `max` is the plan's most.
pub(crate) fn conversation_full(held: i64, max: u64, tier: Tier) -> AppError {
    AppError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "CONVERSATION_FULL",
        format!(
            "This aide's conversation holds {} of text, the most your plan keeps ({}). Start a new aide to go on{}.",
            crate::files::quota::human(held as u64),
            crate::files::quota::human(max),
            if tier.is_pro() {
                ""
            } else {
                ", or upgrade to Pro"
            }
        ),
    )
}

/// 429: the week's free turns are used.
pub(crate) fn turn_limit(used: i32, limit: u32, resets_at: DateTime<Utc>) -> AppError {
    let wait = (resets_at - Utc::now())
        .to_std()
        .unwrap_or(Duration::from_secs(1));
    AppError::RateLimited {
        code: "TURN_LIMIT_REACHED",
        detail: format!(
            "You have used all {limit} turns of this week's free allowance. They start again at {}. Upgrade to Pro for unlimited turns.",
            resets_at.format("%Y-%m-%d %H:%M UTC")
        ),
        retry_after: wait,
        usage: Some(Usage {
            used: i64::from(used),
            limit: i64::from(limit),
            resets_at,
        }),
    }
}
