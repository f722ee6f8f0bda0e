//! Every query about turns. User scope, except the janitor's (system scope).

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::db::{self, SystemTx, UserTx};

/// A turn as stored and as clients see it. Never the prompt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TurnRow {
    pub id: Uuid,
    pub aide_id: Uuid,
    pub client_turn_id: String,
    /// `running`, `completed`, `failed` or `interrupted`.
    pub status: String,
    pub user_message_id: i64,
    pub assistant_message_id: Option<i64>,
    /// The revision the turn read, and the one it made.
    pub base_revision: i32,
    pub revision: Option<i32>,
    /// Whether it counts against the week's turns (false once given back).
    pub counted: bool,
    pub provider: String,
    pub model: String,
    /// A hash of the system prompt and tools.
    pub prompt_version: String,
    pub rounds: i32,
    pub tool_calls_applied: i32,
    pub tool_calls_failed: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    /// In millionths of a US dollar.
    pub cost_micros: i64,
    pub provider_request_ids: Vec<String>,
    pub provider_first_byte_ms: Option<i32>,
    pub first_event_ms: Option<i32>,
    pub duration_ms: Option<i32>,
    pub error_code: Option<String>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub finished_at: Option<DateTime<Utc>>,
}

macro_rules! turn_columns {
    () => {
        "id, aide_id, client_turn_id, status, user_message_id, assistant_message_id, base_revision,
         revision, counted, provider, model, prompt_version, rounds, tool_calls_applied,
         tool_calls_failed, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
         cost_micros, provider_request_ids, provider_first_byte_ms, first_event_ms, duration_ms,
         error_code, created_at, finished_at"
    };
}

impl db::FromRow for TurnRow {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(TurnRow {
            id: row.try_get("id")?,
            aide_id: row.try_get("aide_id")?,
            client_turn_id: row.try_get("client_turn_id")?,
            status: row.try_get("status")?,
            user_message_id: row.try_get("user_message_id")?,
            assistant_message_id: row.try_get("assistant_message_id")?,
            base_revision: row.try_get("base_revision")?,
            revision: row.try_get("revision")?,
            counted: row.try_get("counted")?,
            provider: row.try_get("provider")?,
            model: row.try_get("model")?,
            prompt_version: row.try_get("prompt_version")?,
            rounds: row.try_get("rounds")?,
            tool_calls_applied: row.try_get("tool_calls_applied")?,
            tool_calls_failed: row.try_get("tool_calls_failed")?,
            input_tokens: row.try_get("input_tokens")?,
            output_tokens: row.try_get("output_tokens")?,
            cache_read_tokens: row.try_get("cache_read_tokens")?,
            cache_write_tokens: row.try_get("cache_write_tokens")?,
            cost_micros: row.try_get("cost_micros")?,
            provider_request_ids: row.try_get("provider_request_ids")?,
            provider_first_byte_ms: row.try_get("provider_first_byte_ms")?,
            first_event_ms: row.try_get("first_event_ms")?,
            duration_ms: row.try_get("duration_ms")?,
            error_code: row.try_get("error_code")?,
            created_at: row.try_get("created_at")?,
            finished_at: row.try_get("finished_at")?,
        })
    }
}

/// A new turn's row.
pub struct NewTurn<'a> {
    pub aide: Uuid,
    pub client_turn_id: &'a str,
    pub user_message_id: i64,
    pub base_revision: i32,
    pub week_start: DateTime<Utc>,
    pub provider: &'a str,
    pub model: &'a str,
    pub prompt_version: &'a str,
    pub deadline_seconds: f64,
}

/// How a turn ended, with what it measured.
pub struct Finish<'a> {
    pub status: &'a str,
    pub assistant_message_id: Option<i64>,
    pub revision: Option<i32>,
    pub rounds: i32,
    pub applied: i32,
    pub failed: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub cache_read_tokens: i64,
    pub cache_write_tokens: i64,
    pub cost_micros: i64,
    pub request_ids: &'a [String],
    pub first_byte_ms: Option<i32>,
    pub first_event_ms: Option<i32>,
    pub duration_ms: i32,
    pub error_code: Option<&'a str>,
}

crate::statement! {
    INSERT: User = concat!(
        "insert into ai_turns (aide_id, user_id, client_turn_id, user_message_id, base_revision,
             week_start, provider, model, prompt_version, deadline)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, now() + make_interval(secs => $10))
         returning ", turn_columns!());
    FIND: User = concat!("select ", turn_columns!(), " from ai_turns where id = $1 and user_id = $2");
    FIND_IN_AIDE: User = concat!("select ", turn_columns!(),
        " from ai_turns where id = $1 and aide_id = $2 and user_id = $3");
    FIND_BY_CLIENT_ID: User = concat!("select ", turn_columns!(),
        " from ai_turns where user_id = $1 and client_turn_id = $2");
    LIST: User = concat!("select ", turn_columns!(),
        " from ai_turns where aide_id = $1 and user_id = $2
           and ($3::timestamptz is null or (created_at, id) < ($3::timestamptz, $4::uuid))
         order by created_at desc, id desc limit $5");
    FINISH: User = "update ai_turns set status = $3, assistant_message_id = $4, revision = $5,
             rounds = $6, tool_calls_applied = $7, tool_calls_failed = $8, input_tokens = $9,
             output_tokens = $10, cache_read_tokens = $11, cache_write_tokens = $12,
             cost_micros = $13, provider_request_ids = $14, provider_first_byte_ms = $15,
             first_event_ms = $16, duration_ms = $17, error_code = $18, finished_at = now()
         where id = $1 and user_id = $2 and status = 'running'
         returning id";
    REFUND: User = "select refund_turn($1)";
    /// Asks every process to stop the turn (see `notify::TURNS`).
    NOTIFY_CANCEL: System = "select pg_notify('aide_turns', $1::text)";
    LOCK_RUNNING: User = "select id from ai_turns
         where id = $1 and user_id = $2 and status = 'running' for update";
    /// The conversation before message `$3`, newest first.
    HISTORY: User = "select m.role, m.content from conversation_messages m
         join conversations c on c.id = m.conversation_id
         where c.aide_id = $1 and c.user_id = $2 and m.user_id = $2 and m.id < $3
         order by m.id desc limit 40";
    /// Turns left running past their deadline (a process died): failed, and given back when
    /// counted in their user's current week.
    EXPIRE: System = "with stale as (
             select id, user_id, week_start, counted from ai_turns
             where status = 'running' and deadline < now() - interval '1 minute'
             order by deadline limit 100 for update skip locked
         ), failed as (
             update ai_turns t set status = 'failed', error_code = 'TURN_ABANDONED',
                 counted = false, finished_at = now()
             from stale where t.id = stale.id
             returning t.id
         ), refunds as (
             select user_id, week_start, count(*) as n from stale where counted
             group by user_id, week_start
         ), refunded as (
             update users u set turn_count = greatest(u.turn_count - r.n, 0)
             from refunds r where u.id = r.user_id and u.turn_week_start = r.week_start
             returning u.id
         )
         select (select count(*) from failed), (select count(*) from refunded)";
}

pub async fn insert(tx: &UserTx, new: &NewTurn<'_>) -> Result<TurnRow, db::Error> {
    tx.row(
        &INSERT,
        &[
            &new.aide,
            &tx.user_id(),
            &new.client_turn_id,
            &new.user_message_id,
            &new.base_revision,
            &new.week_start,
            &new.provider,
            &new.model,
            &new.prompt_version,
            &new.deadline_seconds,
        ],
    )
    .await
}

pub async fn find(tx: &UserTx, id: Uuid) -> Result<Option<TurnRow>, db::Error> {
    tx.row_opt(&FIND, &[&id, &tx.user_id()]).await
}

pub async fn find_in_aide(tx: &UserTx, aide: Uuid, id: Uuid) -> Result<Option<TurnRow>, db::Error> {
    tx.row_opt(&FIND_IN_AIDE, &[&id, &aide, &tx.user_id()])
        .await
}

pub async fn find_by_client_id(
    tx: &UserTx,
    client_turn_id: &str,
) -> Result<Option<TurnRow>, db::Error> {
    tx.row_opt(&FIND_BY_CLIENT_ID, &[&tx.user_id(), &client_turn_id])
        .await
}

pub async fn list(
    tx: &UserTx,
    aide: Uuid,
    cursor: Option<crate::cursor::TimeCursor>,
    limit: i64,
) -> Result<Vec<TurnRow>, db::Error> {
    tx.rows(
        &LIST,
        &[
            &aide,
            &tx.user_id(),
            &cursor.map(|c| c.at),
            &cursor.map(|c| c.id),
            &limit,
        ],
    )
    .await
}

/// Records how the turn ended; false when it was no longer running (the janitor ended it).
pub async fn finish(tx: &UserTx, id: Uuid, f: &Finish<'_>) -> Result<bool, db::Error> {
    let row: Option<Uuid> = tx
        .value_opt(
            &FINISH,
            &[
                &id,
                &tx.user_id(),
                &f.status,
                &f.assistant_message_id,
                &f.revision,
                &f.rounds,
                &f.applied,
                &f.failed,
                &f.input_tokens,
                &f.output_tokens,
                &f.cache_read_tokens,
                &f.cache_write_tokens,
                &f.cost_micros,
                &f.request_ids,
                &f.first_byte_ms,
                &f.first_event_ms,
                &f.duration_ms,
                &f.error_code,
            ],
        )
        .await?;
    Ok(row.is_some())
}

/// Locks the turn's row while it is running; false when it is not (the janitor ended it).
pub async fn lock_running(tx: &UserTx, id: Uuid) -> Result<bool, db::Error> {
    let row: Option<Uuid> = tx.value_opt(&LOCK_RUNNING, &[&id, &tx.user_id()]).await?;
    Ok(row.is_some())
}

/// Gives the turn back (see `refund_turn` in migrations/0015).
pub async fn refund(tx: &UserTx, id: Uuid) -> Result<bool, db::Error> {
    tx.value(&REFUND, &[&id]).await
}

/// The conversation before message `before`, oldest first: (role, content).
pub async fn history(
    tx: &UserTx,
    aide: Uuid,
    before: i64,
) -> Result<Vec<(String, String)>, db::Error> {
    let mut rows: Vec<(String, String)> =
        tx.rows(&HISTORY, &[&aide, &tx.user_id(), &before]).await?;
    rows.reverse();
    Ok(rows)
}

/// Fails and gives back turns a dead process left running; returns how many.
pub async fn expire(tx: &SystemTx) -> Result<(i64, i64), db::Error> {
    tx.row(&EXPIRE, &[]).await
}

/// Asks the process running `turn` to stop it.
pub async fn notify_cancel(tx: &SystemTx, turn: Uuid) -> Result<(), db::Error> {
    tx.execute(&NOTIFY_CANCEL, &[&turn.to_string()]).await?;
    Ok(())
}
