//! The turn's routes: `POST /api/aides/{id}/turns` (answers `text/event-stream`), its events
//! again (`.../turns/{turn_id}/events`, honouring `Last-Event-ID`), its state, the list, and
//! `.../cancel`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::{try_join3, try_join5};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::hub::Channel;
use super::repo::{self, NewTurn, TurnRow};
use super::runner::{self, Started};
use super::terminal;
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::conversations::repo as messages;
use crate::cursor::TimeCursor;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::{IdPath, PageParams, QueryParams, page_size};
use crate::state::AppState;
use crate::tier::Tier;

/// A turn's message may be this long at most (characters), like a user message.
const MAX_CONTENT_CHARS: usize = 10_000;
/// A comment goes out when the stream has been silent this long.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The janitor may end a turn this long after its time is up.
const DEADLINE_MARGIN: Duration = Duration::from_secs(30);

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start, list))
        .routes(routes!(get))
        .routes(routes!(events))
        .routes(routes!(cancel))
}

/// A message to the aide.
#[derive(Debug, Deserialize, ToSchema)]
pub struct NewTurnBody {
    /// What the person asks, 1 to 10,000 characters.
    pub content: String,
    /// The client's key for this request (1 to 100 visible ASCII characters): sending it again
    /// returns the same turn, never a second one.
    pub client_turn_id: String,
}

/// The `{id}` and `{turn_id}` of a turn's route.
pub struct TurnPath {
    aide: Uuid,
    turn: Uuid,
}

impl<S: Send + Sync> FromRequestParts<S> for TurnPath {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        #[derive(Deserialize)]
        struct Params {
            id: String,
            turn_id: String,
        }
        let Path(params) = Path::<Params>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::invalid("turn_id", "missing from the path"))?;
        let aide = Uuid::parse_str(&params.id)
            .map_err(|_| AppError::invalid("id", "is not a valid id (a UUID is expected)"))?;
        let turn = Uuid::parse_str(&params.turn_id)
            .map_err(|_| AppError::invalid("turn_id", "is not a valid id (a UUID is expected)"))?;
        Ok(TurnPath { aide, turn })
    }
}

/// Sends a message that changes the page. The answer is a stream of server-sent events, each
/// with a sequence `id`: `turn.started`, then `text.delta`, `tool.started`, `tool.delta`,
/// `tool.applied`, `tool.failed`, `file.updated` (preview only) and `round.started` as they
/// happen, and last one of `turn.completed`, `turn.failed` (with `refunded`) or
/// `turn.interrupted`. The turn goes on if the connection drops: read it again from
/// `.../events`. Uses one of the week's turns (free: 50), given back when the turn fails
/// without changing the page.
#[utoipa::path(post, path = "/api/aides/{id}/turns", tag = "turns",
    params(("id" = Uuid, Path, description = "The aide's id")),
    request_body = NewTurnBody,
    responses((status = 200, description = "The turn's events (text/event-stream)", content_type = "text/event-stream", body = serde_json::Value),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "TURN_IN_PROGRESS: the aide is already running a turn", body = crate::error::ErrorBody),
              (status = 413, description = "CONVERSATION_FULL", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, description = "TURN_LIMIT_REACHED (with usage and Retry-After) or RATE_LIMITED", body = crate::error::ErrorBody),
              (status = 503, description = "AI_NOT_CONFIGURED, or UNAVAILABLE", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn start(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    JsonBody(body): JsonBody<NewTurnBody>,
) -> Result<Response, AppError> {
    let received = std::time::Instant::now();
    let content = body.content.trim();
    if content.is_empty() {
        return Err(AppError::invalid("content", "must not be empty"));
    }
    if content.contains('\0') {
        return Err(AppError::invalid(
            "content",
            "must not contain the NUL character (\\u0000)",
        ));
    }
    let chars = content.chars().count();
    if chars > MAX_CONTENT_CHARS {
        return Err(AppError::invalid(
            "content",
            format!("may be at most {MAX_CONTENT_CHARS} characters (this one has {chars})"),
        ));
    }
    let client_turn_id = body.client_turn_id.as_str();
    if client_turn_id.is_empty()
        || client_turn_id.len() > 100
        || !client_turn_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AppError::invalid(
            "client_turn_id",
            "must be 1 to 100 visible ASCII characters (a UUID, say)",
        ));
    }
    let (Some(provider), Some(ai)) = (state.ai.clone(), state.config.ai.clone()) else {
        return Err(AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "AI_NOT_CONFIGURED",
            "AI is not set up on this server, so messages cannot change pages yet. Its operator sets AI_PROVIDER (and AI_API_KEY); see the README.",
        ));
    };
    let limits = &state.config.limits;
    let free_limit = limits.free_turns_per_week;
    let metadata = serde_json::json!({"turn": true});
    let message = messages::NewMessage {
        role: "user",
        content,
        metadata: &metadata,
        free_max_bytes: i64::try_from(limits.tier(Tier::Free).max_conversation_bytes)
            .unwrap_or(i64::MAX),
        pro_max_bytes: i64::try_from(limits.tier(Tier::Pro).max_conversation_bytes)
            .unwrap_or(i64::MAX),
    };
    let tx = api.begin(&state.db).await?;
    // One round trip: a turn already made with this key, the week's turn, the plan, the user's
    // message (which locks the conversation and checks its size), the newest revision.
    let (existing, turn, usage, stored, base) = try_join5(
        repo::find_by_client_id(&tx, client_turn_id),
        messages::consume_turn(&tx, free_limit),
        messages::usage(&tx),
        messages::append(&tx, aide, &message),
        crate::revisions::repo::latest(&tx, aide),
    )
    .await?;
    if let Some(existing) = existing {
        // A second submit: nothing new is counted or stored (dropping the scope rolls back).
        drop(tx);
        if existing.aide_id != aide {
            return Err(AppError::conflict(
                "CLIENT_TURN_ID_REUSED",
                "This client_turn_id was already used for another aide; use a new one.",
            ));
        }
        return Ok(attach(&state, &existing, 0));
    }
    let stored = match stored {
        Some(stored) => stored,
        None => {
            let (held, tier) = messages::conversation_state(&tx, aide)
                .await?
                .ok_or_else(AppError::not_found)?;
            if turn.is_some() {
                return Err(crate::conversations::conversation_full(
                    held,
                    limits.tier(tier).max_conversation_bytes,
                    tier,
                ));
            }
            let (_, used, week_start) = usage;
            return Err(crate::conversations::turn_limit(
                used,
                free_limit,
                week_start + crate::conversations::WEEK,
            ));
        }
    };
    let (tier, _, _) = usage;
    let Some((used, week_start)) = turn else {
        let (_, used, week_start) = usage;
        return Err(crate::conversations::turn_limit(
            used,
            free_limit,
            week_start + crate::conversations::WEEK,
        ));
    };
    let new = NewTurn {
        aide,
        client_turn_id,
        user_message_id: stored.id,
        base_revision: base,
        week_start,
        provider: provider.name(),
        model: provider.model(),
        prompt_version: super::prompt::VERSION.as_str(),
        deadline_seconds: (ai.turn_timeout + DEADLINE_MARGIN).as_secs_f64(),
    };
    let inserted = try_join3(
        repo::insert(&tx, &new),
        audit::record_user(
            &tx,
            &Entry::new("turn.start", "aide")
                .resource(aide)
                .details(serde_json::json!({"message_id": stored.id}))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await;
    drop(tx);
    let row = match inserted {
        Ok((row, (), ())) => row,
        Err(e) if e.constraint() == Some("ai_turns_one_running") => {
            return Err(AppError::conflict(
                "TURN_IN_PROGRESS",
                "This aide is already working on a message. Wait for it to finish, or stop it.",
            ));
        }
        Err(e) if e.constraint() == Some("ai_turns_client_turn_id_key") => {
            // The same key, submitted at the same moment: answer with the turn that won.
            let tx = api.begin_read(&state.db).await?;
            let existing = repo::find_by_client_id(&tx, client_turn_id).await?;
            tx.finish();
            let existing = existing.ok_or_else(AppError::not_found)?;
            return Ok(attach(&state, &existing, 0));
        }
        Err(e) => return Err(e.into()),
    };
    let channel = state.turns.open(row.id);
    let (name, data) = terminal::started(
        row.id,
        stored.id,
        base,
        used,
        (!tier.is_pro()).then_some(free_limit),
        week_start + crate::conversations::WEEK,
    );
    channel.send(name, data.to_string());
    tracing::info!(turn.id = %row.id, aide.id = %aide, "turn started");
    runner::spawn(
        state.clone(),
        Started {
            turn: row.id,
            user: api.user_id(),
            aide,
            user_message_id: stored.id,
            base_revision: base,
            content: content.to_string(),
            tier,
            received,
        },
        channel.clone(),
    );
    Ok(stream(channel, 0))
}

/// The events of a turn this process runs (or just ran), from after `after`; for any other, its
/// start and, when it is over, its end, from the database.
fn attach(state: &AppState, row: &TurnRow, after: u64) -> Response {
    if let Some(channel) = state.turns.get(row.id) {
        return stream(channel, after);
    }
    let channel = Arc::new(Channel::closed());
    let (name, data) = (
        terminal::STARTED,
        serde_json::json!({
            "turn_id": row.id,
            "user_message_id": row.user_message_id,
            "base_revision": row.base_revision,
        }),
    );
    channel.send(name, data.to_string());
    let end = match row.status.as_str() {
        "completed" => Some((
            terminal::COMPLETED,
            serde_json::json!({
                "turn_id": row.id,
                "revision": row.revision,
                "assistant_message_id": row.assistant_message_id,
            }),
        )),
        "failed" => Some((
            terminal::FAILED,
            serde_json::json!({
                "turn_id": row.id,
                "code": row.error_code,
                "refunded": !row.counted,
            }),
        )),
        "interrupted" => Some((
            terminal::INTERRUPTED,
            serde_json::json!({
                "turn_id": row.id,
                "counted": row.counted,
                "assistant_message_id": row.assistant_message_id,
            }),
        )),
        // Running in another process: its events are there; its state is at GET .../turns/{id}.
        _ => None,
    };
    if let Some((name, data)) = end {
        channel.send(name, data.to_string());
    }
    channel.finish();
    stream(channel, after)
}

/// `channel`'s events after `after`, as `text/event-stream`, ending after the turn's last one.
/// A keep-alive comment goes out every [`KEEP_ALIVE`] (one timer per stream, not one per event).
fn stream(channel: Arc<Channel>, after: u64) -> Response {
    let keep_alive = Box::pin(tokio::time::sleep(KEEP_ALIVE));
    let events = futures_util::stream::unfold(
        (channel, after, false, keep_alive),
        |(channel, after, done, mut keep_alive)| async move {
            if done {
                return None;
            }
            let got = tokio::select! {
                got = channel.wait_after(after) => Some(got),
                () = &mut keep_alive => None,
            };
            let Some((events, finished)) = got else {
                keep_alive
                    .as_mut()
                    .reset(tokio::time::Instant::now() + KEEP_ALIVE);
                return Some((
                    Ok::<_, Infallible>(Bytes::from_static(b": keep-alive\n\n")),
                    (channel, after, false, keep_alive),
                ));
            };
            let mut out = String::new();
            let mut last = after;
            let mut end = false;
            for event in events {
                last = event.id;
                out.push_str(&format!(
                    "id: {}\nevent: {}\ndata: {}\n\n",
                    event.id, event.name, event.data
                ));
                end |= terminal::is_terminal(event.name);
            }
            let end = end || (finished && channel.after(last).0.is_empty());
            Some((Ok(Bytes::from(out)), (channel, last, end, keep_alive)))
        },
    );
    let mut response = Body::from_stream(events).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Events after this sequence id (the `Last-Event-ID` header says the same and wins).
    after: Option<u64>,
}

/// A turn's events again: all of them, or those after `Last-Event-ID`.
#[utoipa::path(get, path = "/api/aides/{id}/turns/{turn_id}/events", tag = "turns",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("turn_id" = Uuid, Path, description = "The turn's id"), EventParams),
    responses((status = 200, description = "The turn's events (text/event-stream)", content_type = "text/event-stream", body = serde_json::Value),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    api: ApiUser,
    path: TurnPath,
    headers: HeaderMap,
    QueryParams(params): QueryParams<EventParams>,
) -> Result<Response, AppError> {
    let after = match headers.get("last-event-id") {
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                AppError::invalid("Last-Event-ID", "must be an event id from this stream")
            })?,
        None => params.after.unwrap_or(0),
    };
    let row = find(&state, &api, &path).await?;
    Ok(attach(&state, &row, after))
}

async fn find(state: &AppState, api: &ApiUser, path: &TurnPath) -> Result<TurnRow, AppError> {
    let tx = api.begin_read(&state.db).await?;
    let row = repo::find_in_aide(&tx, path.aide, path.turn).await?;
    tx.finish();
    row.ok_or_else(AppError::not_found)
}

/// A turn's durable state: how it ended, what it changed, its tokens and cost (never the prompt).
#[utoipa::path(get, path = "/api/aides/{id}/turns/{turn_id}", tag = "turns",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("turn_id" = Uuid, Path, description = "The turn's id")),
    responses((status = 200, body = TurnRow),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    api: ApiUser,
    path: TurnPath,
) -> Result<Json<TurnRow>, AppError> {
    Ok(Json(find(&state, &api, &path).await?))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TurnPage {
    pub items: Vec<TurnRow>,
    pub next_cursor: Option<String>,
}

/// The aide's turns, newest first.
#[utoipa::path(get, path = "/api/aides/{id}/turns", tag = "turns",
    params(("id" = Uuid, Path, description = "The aide's id"), PageParams),
    responses((status = 200, body = TurnPage),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide): IdPath,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<TurnPage>, AppError> {
    let cursor = params
        .cursor
        .as_deref()
        .map(TimeCursor::decode)
        .transpose()?;
    let limit = page_size(params.limit)?;
    let tx = api.begin_read(&state.db).await?;
    let items =
        crate::aides::of_owned_aide(&tx, aide, repo::list(&tx, aide, cursor, limit + 1)).await;
    tx.finish();
    let mut items = items?;
    let next_cursor = crate::cursor::next_page(&mut items, limit, |t| {
        TimeCursor {
            at: t.created_at,
            id: t.id,
        }
        .encode()
    });
    Ok(Json(TurnPage { items, next_cursor }))
}

/// Whether a stop was asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub turn_id: Uuid,
    /// `stopping`: the turn ends with `turn.interrupted`; `finished`: it had already ended.
    pub status: &'static str,
}

/// Stops a running turn: the model's response is dropped at once, nothing of its edits is saved,
/// and the turn counts only if the model had already answered something.
#[utoipa::path(post, path = "/api/aides/{id}/turns/{turn_id}/cancel", tag = "turns",
    params(("id" = Uuid, Path, description = "The aide's id"),
           ("turn_id" = Uuid, Path, description = "The turn's id")),
    responses((status = 202, body = Cancelled),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    api: ApiUser,
    path: TurnPath,
) -> Result<(StatusCode, Json<Cancelled>), AppError> {
    let row = find(&state, &api, &path).await?;
    // Running here (even if the janitor has ended its row), or elsewhere, which hears of it
    // through the database.
    let status = if state.turns.cancel(row.id) {
        "stopping"
    } else if row.status == "running" {
        let tx = state.db.bookkeeping().await?;
        super::repo::notify_cancel(&tx, row.id).await?;
        tx.commit().await?;
        "stopping"
    } else {
        "finished"
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelled {
            turn_id: row.id,
            status,
        }),
    ))
}
