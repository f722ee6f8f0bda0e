//! The events that begin and end a turn, as sent on its stream: `turn.started`, then one of
//! `turn.completed`, `turn.failed` or `turn.interrupted`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use super::engine::Outcome;
use super::repo::Finish;

pub const STARTED: &str = "turn.started";
pub const COMPLETED: &str = "turn.completed";
pub const FAILED: &str = "turn.failed";
pub const INTERRUPTED: &str = "turn.interrupted";

/// Whether an event ends the stream.
pub fn is_terminal(name: &str) -> bool {
    matches!(name, COMPLETED | FAILED | INTERRUPTED)
}

pub fn started(
    turn: Uuid,
    user_message_id: i64,
    base_revision: i32,
    used: i32,
    limit: Option<u32>,
    resets_at: DateTime<Utc>,
) -> (&'static str, Value) {
    (
        STARTED,
        json!({
            "turn_id": turn,
            "user_message_id": user_message_id,
            "base_revision": base_revision,
            "turns": {"used": used, "limit": limit, "resets_at": crate::time::rfc3339_string(&resets_at)},
        }),
    )
}

pub fn completed(
    turn: Uuid,
    revision: Option<i32>,
    assistant_message_id: Option<i64>,
    outcome: &Outcome,
    cost_micros: u64,
    finish: &Finish<'_>,
) -> (&'static str, Value) {
    (
        COMPLETED,
        json!({
            "turn_id": turn,
            "revision": revision,
            "assistant_message_id": assistant_message_id,
            "files_changed": outcome.changed.iter().collect::<Vec<_>>(),
            "usage": {
                "input_tokens": outcome.usage.input,
                "output_tokens": outcome.usage.output,
                "cache_read_tokens": outcome.usage.cache_read,
                "cache_write_tokens": outcome.usage.cache_write,
            },
            "cost_micros": cost_micros,
            "rounds": outcome.rounds,
            "timings": {
                "provider_first_byte_ms": finish.first_byte_ms,
                "first_event_ms": finish.first_event_ms,
                "duration_ms": finish.duration_ms,
            },
        }),
    )
}

pub fn failed(
    turn: Uuid,
    code: &str,
    message: &str,
    refunded: bool,
    retry_after: Option<Duration>,
) -> (&'static str, Value) {
    (
        FAILED,
        json!({
            "turn_id": turn,
            "code": code,
            "message": message,
            "refunded": refunded,
            "retry_after_seconds": retry_after.map(|d| d.as_secs_f64().ceil() as u64),
        }),
    )
}

pub fn interrupted(
    turn: Uuid,
    counted: bool,
    assistant_message_id: Option<i64>,
) -> (&'static str, Value) {
    (
        INTERRUPTED,
        json!({
            "turn_id": turn,
            "counted": counted,
            "assistant_message_id": assistant_message_id,
        }),
    )
}
