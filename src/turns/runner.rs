//! A turn after its start committed: it runs in a task of its own, so a client that goes away
//! neither stops nor loses it. It reads the page, talks to the model, and then records the
//! outcome in one final transaction: the new files, a revision, the reply and the turn's row, or
//! (failed, or stopped before the model said anything) the turn given back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{try_join, try_join_all, try_join3, try_join4, try_join5};
use serde_json::json;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::engine::{self, End, Outcome, Progress};
use super::hub::Channel;
use super::repo::{self, Finish};
use super::workspace::{Bounds, Content, Workspace};
use super::{prompt, terminal};
use crate::audit::{self, Entry};
use crate::config::TierLimits;
use crate::db::UserId;
use crate::error::AppError;
use crate::files::guard::{BlobGuard, Caller, begin_sharing_blobs};
use crate::files::{FilePath, content_type_for};
use crate::state::AppState;
use crate::storage::keys;
use crate::tier::Tier;

/// A turn whose start committed.
pub struct Started {
    pub turn: Uuid,
    pub user: UserId,
    pub aide: Uuid,
    pub user_message_id: i64,
    pub base_revision: i32,
    pub content: String,
    pub tier: Tier,
    /// When the request arrived: the turn's timings count from here.
    pub received: Instant,
}

/// Runs the turn in a task of its own.
pub fn spawn(state: AppState, started: Started, channel: Arc<Channel>) {
    state.metrics.add("aide_turns_started_total", &[], 1.0);
    tokio::spawn(async move {
        let t0 = started.received;
        let (name, data) = settle(&state, &started, &channel, t0).await;
        let result = name.strip_prefix("turn.").unwrap_or(name);
        let given_back = if data["refunded"].as_bool() == Some(true) {
            "true"
        } else {
            "false"
        };
        state.metrics.add(
            "aide_turns_total",
            &[("result", result), ("given_back", given_back)],
            1.0,
        );
        channel.send(name, data.to_string());
        channel.finish();
    });
}

async fn settle(
    state: &AppState,
    started: &Started,
    channel: &Channel,
    t0: Instant,
) -> (&'static str, serde_json::Value) {
    let (Some(provider), Some(ai)) = (state.ai.clone(), state.config.ai.clone()) else {
        return fail(
            state,
            started,
            None,
            "AI_NOT_CONFIGURED",
            "AI is not configured.",
            None,
            t0,
        )
        .await;
    };
    let limits = state.config.limits.tier(started.tier);
    let (workspace, history) = match load(state, started, &limits).await {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(turn.id = %started.turn, error = %e, "a turn could not read its page");
            return fail(
                state,
                started,
                None,
                "UNAVAILABLE",
                "The page could not be read. Please try again.",
                None,
                t0,
            )
            .await;
        }
    };
    let turn = engine::Turn {
        provider: provider.as_ref(),
        system: prompt::SYSTEM.to_string(),
        messages: prompt::messages(&history, &started.content, &workspace),
        max_rounds: ai.max_rounds,
        max_tokens: ai.max_output_tokens,
        started: t0,
        deadline: t0 + ai.turn_timeout,
    };
    let before = workspace.clone();
    let outcome = engine::run(
        turn,
        workspace,
        &mut |progress: Progress| send_progress(channel, &progress),
        channel.cancelled(),
    )
    .await;
    let cost = ai.prices.cost_micros(
        outcome.usage.input,
        outcome.usage.output,
        outcome.usage.cache_read,
        outcome.usage.cache_write,
    );
    for (kind, tokens) in [
        ("input", outcome.usage.input),
        ("output", outcome.usage.output),
        ("cache_read", outcome.usage.cache_read),
        ("cache_write", outcome.usage.cache_write),
    ] {
        state.metrics.add(
            "aide_model_tokens_total",
            &[("model", &ai.model), ("kind", kind)],
            tokens as f64,
        );
    }
    state.metrics.add(
        "aide_model_cost_microdollars_total",
        &[("model", &ai.model)],
        cost as f64,
    );
    match outcome.end.clone() {
        End::Completed => {
            let mut outcome = outcome;
            let mut result = commit(
                state,
                started,
                &outcome,
                &limits,
                cost,
                t0,
                started.base_revision,
            )
            .await;
            if let Err(("CONFLICT", _)) = result {
                // The person changed the page meanwhile: the turn's edits again, on what it is
                // now. When they still apply, that is what is saved; otherwise, the conflict.
                if let Some(head) = replay(state, started, &limits, &before, &mut outcome).await {
                    result = commit(state, started, &outcome, &limits, cost, t0, head).await;
                }
            }
            match result {
                Ok(done) => done,
                Err((code, message)) => {
                    fail(
                        state,
                        started,
                        Some((&outcome, cost)),
                        code,
                        &message,
                        None,
                        t0,
                    )
                    .await
                }
            }
        }
        End::Interrupted if outcome.produced_output() => {
            match record_interrupted(state, started, &outcome, cost, t0).await {
                Ok(done) => done,
                Err(e) => {
                    tracing::warn!(turn.id = %started.turn, error = %e, "could not record an interrupted turn");
                    terminal::interrupted(started.turn, false, None)
                }
            }
        }
        End::Interrupted => {
            let (_, data) = fail(
                state,
                started,
                Some((&outcome, cost)),
                "INTERRUPTED",
                "Stopped before the model answered.",
                None,
                t0,
            )
            .await;
            let refunded = data["refunded"].as_bool().unwrap_or(false);
            terminal::interrupted(started.turn, !refunded, None)
        }
        End::Failed {
            code,
            error,
            retry_after,
        } => {
            fail(
                state,
                started,
                Some((&outcome, cost)),
                code,
                &error,
                retry_after,
                t0,
            )
            .await
        }
    }
}

fn send_progress(channel: &Channel, progress: &Progress) {
    if let Ok(data) = serde_json::to_string(progress) {
        channel.send(progress.name(), data);
    }
}

/// The page's files (text read from storage) and the conversation before the turn.
async fn load(
    state: &AppState,
    started: &Started,
    limits: &TierLimits,
) -> Result<(Workspace, Vec<(String, String)>), AppError> {
    let tx = state.db.user(started.user).await?;
    let (rows, history) = try_join(
        crate::files::repo::list(&tx, started.aide),
        repo::history(&tx, started.aide, started.user_message_id),
    )
    .await?;
    tx.rollback();
    let mut files = BTreeMap::new();
    for row in rows {
        let text = match FilePath::parse(&row.path) {
            Ok(path) if super::workspace::is_text(&path) => {
                let bytes = state
                    .storage
                    .workspace
                    .get(&keys::blob(started.aide, &row.sha256))
                    .await
                    .map_err(|e| AppError::Internal(e.into()))?
                    .bytes()
                    .await
                    .map_err(|e| AppError::Internal(e.into()))?;
                String::from_utf8(bytes.to_vec()).ok()
            }
            _ => None,
        };
        let content = match text {
            Some(text) => Content::Text(text),
            None => Content::Binary {
                size: row.size_bytes as u64,
            },
        };
        files.insert(row.path, content);
    }
    let bounds = Bounds {
        max_file_bytes: limits.max_file_bytes,
        max_total_bytes: limits.max_aide_bytes,
        max_files: limits.max_files_per_aide,
    };
    Ok((Workspace::new(files, bounds), history))
}

fn millis(d: Option<Duration>) -> Option<i32> {
    d.map(|d| i32::try_from(d.as_millis()).unwrap_or(i32::MAX))
}

fn finish_of<'a>(
    status: &'a str,
    outcome: Option<(&'a Outcome, u64)>,
    t0: Instant,
    error_code: Option<&'a str>,
) -> Finish<'a> {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let (usage, rounds, applied, failed, ids, first_byte, first_event, cost) = match outcome {
        Some((o, cost)) => (
            o.usage,
            o.rounds,
            o.applied,
            o.failed,
            o.request_ids.as_slice(),
            o.first_byte,
            o.first_visible,
            cost,
        ),
        None => (Default::default(), 0, 0, 0, &[][..], None, None, 0),
    };
    Finish {
        status,
        assistant_message_id: None,
        revision: None,
        rounds: rounds as i32,
        applied: applied as i32,
        failed: failed as i32,
        input_tokens: n(usage.input),
        output_tokens: n(usage.output),
        cache_read_tokens: n(usage.cache_read),
        cache_write_tokens: n(usage.cache_write),
        cost_micros: n(cost),
        request_ids: ids,
        first_byte_ms: millis(first_byte),
        first_event_ms: millis(first_event),
        duration_ms: millis(Some(t0.elapsed())).unwrap_or(i32::MAX),
        error_code,
    }
}

/// Applies the turn's edits to the page as it is now (`before` is the page the turn read); the
/// revision they then apply to, or None when one of them no longer does. Exact replacements and
/// insertions are applied again where they still match; a whole file written or deleted by the
/// turn is a conflict when the person changed that file meanwhile, never an overwrite.
async fn replay(
    state: &AppState,
    started: &Started,
    limits: &TierLimits,
    before: &Workspace,
    outcome: &mut Outcome,
) -> Option<i32> {
    let head = async {
        let tx = state.db.user(started.user).await?;
        let head = crate::revisions::repo::latest(&tx, started.aide).await?;
        tx.rollback();
        Ok::<_, crate::db::Error>(head)
    }
    .await
    .ok()?;
    let (mut workspace, _) = load(state, started, limits).await.ok()?;
    let mut changed = std::collections::BTreeSet::new();
    for (name, input) in &outcome.edits {
        let whole = name == super::workspace::DELETE || input["command"].as_str() == Some("create");
        if whole {
            let path = input["path"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/');
            if workspace.files().get(path) != before.files().get(path) {
                return None;
            }
        }
        let applied = workspace.apply(name, input).ok()?;
        changed.extend(applied.changed);
    }
    tracing::info!(turn.id = %started.turn, edits = outcome.edits.len(), "turn replayed on the changed page");
    outcome.workspace = workspace;
    outcome.changed = changed;
    Some(head)
}

/// The reply as stored: what the model wrote, or a line naming the files it changed.
fn reply_text(outcome: &Outcome) -> String {
    let reply = outcome.reply.trim();
    let text = if reply.is_empty() && !outcome.changed.is_empty() {
        let names: Vec<&str> = outcome.changed.iter().map(String::as_str).collect();
        format!("Updated {}.", names.join(", "))
    } else {
        reply.to_string()
    };
    text.chars().take(100_000).collect()
}

/// Records a failed turn and gives it back; the terminal event.
async fn fail(
    state: &AppState,
    started: &Started,
    outcome: Option<(&Outcome, u64)>,
    code: &'static str,
    message: &str,
    retry_after: Option<Duration>,
    t0: Instant,
) -> (&'static str, serde_json::Value) {
    let status = if code == "INTERRUPTED" {
        "interrupted"
    } else {
        "failed"
    };
    let result = async {
        let tx = state.db.user(started.user).await?;
        let finish = finish_of(status, outcome, t0, Some(code));
        let (finished, refunded, (), ()) = try_join4(
            repo::finish(&tx, started.turn, &finish),
            repo::refund(&tx, started.turn),
            audit::record_user(
                &tx,
                &Entry::new("turn.failed", "aide")
                    .resource(started.aide)
                    .details(json!({"turn_id": started.turn, "code": code})),
            ),
            tx.commit_queued(),
        )
        .await?;
        Ok::<_, crate::db::Error>(finished && refunded)
    }
    .await;
    let refunded = match result {
        Ok(refunded) => refunded,
        Err(e) => {
            tracing::error!(turn.id = %started.turn, error = %e, "could not record a failed turn; the janitor will");
            false
        }
    };
    tracing::info!(turn.id = %started.turn, turn.code = code, refunded, "turn failed");
    terminal::failed(started.turn, code, message, refunded, retry_after)
}

async fn record_interrupted(
    state: &AppState,
    started: &Started,
    outcome: &Outcome,
    cost: u64,
    t0: Instant,
) -> Result<(&'static str, serde_json::Value), crate::db::Error> {
    let limits = &state.config.limits;
    let reply = reply_text(outcome);
    let tx = state.db.user(started.user).await?;
    let message = if reply.is_empty() {
        None
    } else {
        let metadata = json!({"turn_id": started.turn, "interrupted": true});
        crate::conversations::repo::append(
            &tx,
            started.aide,
            &assistant_message(&reply, &metadata, limits),
        )
        .await?
    };
    let mut finish = finish_of("interrupted", Some((outcome, cost)), t0, None);
    finish.assistant_message_id = message.as_ref().map(|m| m.id);
    try_join3(
        repo::finish(&tx, started.turn, &finish),
        audit::record_user(
            &tx,
            &Entry::new("turn.interrupted", "aide")
                .resource(started.aide)
                .details(json!({"turn_id": started.turn})),
        ),
        tx.commit_queued(),
    )
    .await?;
    Ok(terminal::interrupted(
        started.turn,
        true,
        message.map(|m| m.id),
    ))
}

fn assistant_message<'a>(
    reply: &'a str,
    metadata: &'a serde_json::Value,
    limits: &crate::config::Limits,
) -> crate::conversations::repo::NewMessage<'a> {
    crate::conversations::repo::NewMessage {
        role: "assistant",
        content: reply,
        metadata,
        free_max_bytes: i64::try_from(limits.tier(Tier::Free).max_conversation_bytes)
            .unwrap_or(i64::MAX),
        pro_max_bytes: i64::try_from(limits.tier(Tier::Pro).max_conversation_bytes)
            .unwrap_or(i64::MAX),
    }
}

/// A blob the turn wrote.
struct Written {
    path: FilePath,
    bytes: bytes::Bytes,
    sha256: Vec<u8>,
    content_type: String,
}

/// Stores the changed files and records everything in one transaction.
#[allow(clippy::too_many_arguments)]
async fn commit(
    state: &AppState,
    started: &Started,
    outcome: &Outcome,
    limits: &TierLimits,
    cost: u64,
    t0: Instant,
    base: i32,
) -> Result<(&'static str, serde_json::Value), (&'static str, String)> {
    let unavailable = |e: &dyn std::fmt::Display| {
        tracing::warn!(turn.id = %started.turn, error = %e, "a turn could not save its changes");
        (
            "UNAVAILABLE",
            "The changes could not be saved. Please try again.".to_string(),
        )
    };
    let mut written = Vec::new();
    let mut deleted = Vec::new();
    for path in &outcome.changed {
        let Ok(parsed) = FilePath::parse(path) else {
            continue;
        };
        match outcome.workspace.text(path) {
            Some(text) => {
                let bytes = bytes::Bytes::copy_from_slice(text.as_bytes());
                written.push(Written {
                    content_type: content_type_for(&parsed, None),
                    sha256: Sha256::digest(&bytes).to_vec(),
                    path: parsed,
                    bytes,
                });
            }
            None => deleted.push(parsed),
        }
    }
    let caller = Caller::Owner(started.user);
    // Protect the blobs, store them with no transaction open, then record them.
    let guard = if written.is_empty() {
        None
    } else {
        let tx = begin_sharing_blobs(&state.db, caller, started.aide)
            .await
            .map_err(|e| unavailable(&e))?;
        let shas: Vec<Vec<u8>> = written.iter().map(|w| w.sha256.clone()).collect();
        let guard = BlobGuard::take(&tx, started.aide, &shas)
            .await
            .map_err(|e| unavailable(&e))?;
        tx.commit().await.map_err(|e| unavailable(&e))?;
        Some(guard)
    };
    let stored = async {
        for w in &written {
            state
                .storage
                .workspace
                .put(&keys::blob(started.aide, &w.sha256), w.bytes.clone().into())
                .await?;
        }
        Ok::<_, object_store::Error>(())
    }
    .await;
    if let Err(e) = stored {
        if let Some(guard) = guard {
            guard.release(&state.db, caller).await;
        }
        return Err(unavailable(&e));
    }
    let recorded = record(
        state,
        started,
        outcome,
        limits,
        cost,
        t0,
        base,
        &written,
        &deleted,
        guard.as_ref(),
    )
    .await;
    match recorded {
        Ok(done) => {
            state.storage_cleanup_wake.notify_one();
            Ok(done)
        }
        Err(e) => {
            if let Some(guard) = guard {
                guard.release(&state.db, caller).await;
            }
            Err(e)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn record(
    state: &AppState,
    started: &Started,
    outcome: &Outcome,
    limits: &TierLimits,
    cost: u64,
    t0: Instant,
    base: i32,
    written: &[Written],
    deleted: &[FilePath],
    guard: Option<&BlobGuard>,
) -> Result<(&'static str, serde_json::Value), (&'static str, String)> {
    let db_error = |e: crate::db::Error| {
        tracing::warn!(turn.id = %started.turn, error = %e, "a turn could not record its changes");
        (
            "UNAVAILABLE",
            "The changes could not be saved. Please try again.".to_string(),
        )
    };
    let tx = state.db.user(started.user).await.map_err(db_error)?;
    let aide = started.aide;
    // One round trip: the turn and the aide locked (the janitor skips a locked turn), the newest
    // revision, the files written and deleted, and what the account then stores.
    let (running, (tier, head, _, _, account)) = try_join(
        repo::lock_running(&tx, started.turn),
        try_join5(
            crate::files::repo::lock_aide(&tx, aide),
            crate::revisions::repo::latest(&tx, aide),
            try_join_all(written.iter().map(|w| {
                crate::files::repo::upsert(
                    &tx,
                    aide,
                    &w.path,
                    w.bytes.len() as i64,
                    &w.content_type,
                    &w.sha256,
                )
            })),
            try_join_all(
                deleted
                    .iter()
                    .map(|p| crate::files::repo::delete(&tx, aide, p)),
            ),
            crate::files::repo::account_bytes_after(&tx, aide, None, &[]),
        ),
    )
    .await
    .map_err(db_error)?;
    if !running {
        return Err((
            "TURN_ABANDONED",
            "The turn ran past its time and was given back.".to_string(),
        ));
    }
    if tier.is_none() {
        return Err(("NOT_FOUND", "The aide is gone.".to_string()));
    }
    if head != base {
        return Err((
            "CONFLICT",
            "The page changed while the turn ran (a file was uploaded or restored), so its edits were not applied. Send the message again.".to_string(),
        ));
    }
    if let Err(e) = crate::files::quota::check_account(limits, account) {
        return Err(("ACCOUNT_STORAGE_FULL", e.to_string()));
    }
    let reply = reply_text(outcome);
    let metadata = json!({"turn_id": started.turn});
    let settle_guard = async {
        match guard {
            Some(guard) => guard.settle(&tx).await,
            None => Ok(()),
        }
    };
    let (revision, message, (), ()) = try_join4(
        crate::revisions::record(
            &tx,
            aide,
            crate::revisions::Cause::Turn,
            Some(started.turn),
            None,
            limits.revisions_kept,
        ),
        crate::conversations::repo::append(
            &tx,
            aide,
            &assistant_message(&reply, &metadata, &state.config.limits),
        ),
        settle_guard,
        audit::record_user(
            &tx,
            &Entry::new("turn.completed", "aide")
                .resource(aide)
                .details(json!({"turn_id": started.turn, "files": outcome.changed.len()})),
        ),
    )
    .await
    .map_err(db_error)?;
    let mut finish = finish_of("completed", Some((outcome, cost)), t0, None);
    finish.revision = Some(revision);
    finish.assistant_message_id = message.as_ref().map(|m| m.id);
    // The turn is locked and running (checked above), so this finishes it.
    try_join(repo::finish(&tx, started.turn, &finish), tx.commit_queued())
        .await
        .map_err(db_error)?;
    Ok(terminal::completed(
        started.turn,
        Some(revision),
        message.map(|m| m.id),
        outcome,
        cost,
        &finish,
    ))
}
