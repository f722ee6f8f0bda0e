//! The outbox: emails are rows, written in the same transaction as what they announce, and a
//! worker delivers them.
//!
//! Claiming a row moves its next attempt forward by a lease, under `for update skip locked`, so
//! several servers share the work without sending a message twice, and a worker that dies mid-send
//! leaves the message to be retried. The row id is the provider's idempotency key, so even a retry
//! after a lost answer sends once. After [`MAX_ATTEMPTS`] failures (or one permanent failure, or
//! when the message is no longer worth delivering) it is dead-lettered and logged.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{Mailer, NewEmail, QueuedEmail, SendError};
use crate::db::{self, Db, SystemTx};
use crate::retry::{MAX_BACKOFF, backoff};

/// Attempts before a message is dead-lettered.
pub const MAX_ATTEMPTS: i32 = 8;
/// How many messages a worker claims at once.
const BATCH: i64 = 10;
/// How often the worker looks for due messages when nothing wakes it.
const POLL: Duration = Duration::from_secs(2);

/// How long a claimed message is left to its worker before another may retry it (an interval
/// literal, spliced into [`CLAIM`]).
macro_rules! lease {
    () => {
        "2 minutes"
    };
}

/// The columns of a [`QueuedEmail`].
macro_rules! queued_columns {
    () => {
        "id, kind, to_address, subject, html_body, text_body, attempts, deliver_before"
    };
}

crate::statement! {
    /// Queues an email; returns its id.
    ENQUEUE: System = "insert into email_outbox (kind, to_address, subject, html_body, text_body, deliver_before) \
         values ($1, $2, $3, $4, $5, $6) returning id";
    /// Claims up to `$1` due messages for a lease.
    CLAIM: System = concat!(
        "update email_outbox \
         set attempts = attempts + 1, next_attempt_at = now() + interval '",
        lease!(),
        "' where id in ( \
             select id from email_outbox \
             where status = 'pending' and next_attempt_at <= now() \
             order by next_attempt_at \
             limit $1 \
             for update skip locked) \
         returning ",
        queued_columns!()
    );
    /// Marks message `$1` sent by the provider's id `$2`, and erases its bodies.
    MARK_SENT: System = "update email_outbox \
         set status = 'sent', sent_at = now(), provider_id = $2, last_error = null, \
             html_body = null, text_body = null \
         where id = $1";
    /// Schedules another attempt of message `$1` in `$2` seconds, for reason `$3`.
    MARK_RETRY: System = "update email_outbox \
         set next_attempt_at = now() + make_interval(secs => $2), last_error = $3 \
         where id = $1";
    /// Gives up on message `$1` for reason `$2`, and erases its bodies.
    MARK_DEAD: System = "update email_outbox \
         set status = 'dead', last_error = $2, html_body = null, text_body = null \
         where id = $1";
    /// Sent and dead-lettered emails (already without bodies) older than a week.
    DELETE_FINISHED: System =
        "delete from email_outbox where status <> 'pending' and created_at < now() - interval '7 days'";
}

/// Queues `email` in the caller's transaction: it is sent only if that transaction commits.
pub async fn enqueue(tx: &SystemTx, email: &NewEmail) -> Result<Uuid, db::Error> {
    tx.value(
        &ENQUEUE,
        &[
            &email.kind,
            &email.to,
            &email.subject,
            &email.html,
            &email.text,
            &email.deliver_before,
        ],
    )
    .await
}

/// Claims up to `BATCH` due messages.
async fn claim(db: &Db) -> Result<Vec<QueuedEmail>, db::Error> {
    let tx = db.system().await?;
    let (claimed, ()) = try_join(tx.rows(&CLAIM, &[&BATCH]), tx.commit_queued()).await?;
    Ok(claimed)
}

/// Marks a message sent and erases its bodies.
async fn mark_sent(db: &Db, id: Uuid, provider_id: Option<&str>) -> Result<(), db::Error> {
    let tx = db.system().await?;
    try_join(
        tx.execute(&MARK_SENT, &[&id, &provider_id]),
        tx.commit_queued(),
    )
    .await?;
    Ok(())
}

/// Schedules another attempt after `wait`.
async fn mark_retry(db: &Db, id: Uuid, wait: Duration, reason: &str) -> Result<(), db::Error> {
    let tx = db.system().await?;
    try_join(
        tx.execute(&MARK_RETRY, &[&id, &wait.as_secs_f64(), &reason]),
        tx.commit_queued(),
    )
    .await?;
    Ok(())
}

/// Gives up on a message and erases its bodies.
async fn mark_dead(db: &Db, id: Uuid, reason: &str) -> Result<(), db::Error> {
    let tx = db.system().await?;
    try_join(tx.execute(&MARK_DEAD, &[&id, &reason]), tx.commit_queued()).await?;
    Ok(())
}

/// Deletes sent and dead-lettered emails (already without bodies) after a week.
pub async fn delete_finished(tx: &SystemTx) -> Result<u64, db::Error> {
    tx.execute(&DELETE_FINISHED, &[]).await
}

/// The background worker that delivers the outbox.
#[derive(Debug, Clone)]
pub struct Worker {
    db: Db,
    mailer: Mailer,
    wake: Arc<Notify>,
    counts: Option<Arc<crate::alerts::OpsCounts>>,
}

impl Worker {
    pub fn new(db: Db, mailer: Mailer, wake: Arc<Notify>) -> Self {
        Worker {
            db,
            mailer,
            wake,
            counts: None,
        }
    }

    /// Counts dead-lettered emails in `counts`, for the alert on them.
    pub fn counting(mut self, counts: Arc<crate::alerts::OpsCounts>) -> Self {
        self.counts = Some(counts);
        self
    }

    /// Gives up on `email`: marks it dead, counts it and reports why.
    async fn give_up(&self, email: &QueuedEmail, reason: &str) -> Result<(), db::Error> {
        mark_dead(&self.db, email.id, reason).await?;
        if let Some(counts) = &self.counts {
            counts.add(crate::alerts::Counted::EmailDead);
        }
        crate::sentry::report(
            "warning",
            "email.dead_letter",
            &format!("a {} email was given up on: {reason}", email.kind),
        );
        Ok(())
    }

    /// Delivers until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            match self.deliver_due().await {
                Ok(0) => {}
                // More may be due right away.
                Ok(_) => continue,
                Err(e) => tracing::warn!(error = %e, "email outbox: could not reach the database"),
            }
            tokio::select! {
                () = self.wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }

    /// One pass: claims due messages and tries each once. Returns how many were claimed.
    pub async fn deliver_due(&self) -> Result<usize, db::Error> {
        let batch = claim(&self.db).await?;
        for email in &batch {
            self.deliver(email).await?;
        }
        Ok(batch.len())
    }

    async fn deliver(&self, email: &QueuedEmail) -> Result<(), db::Error> {
        if email
            .deliver_before
            .is_some_and(|deadline| deadline <= chrono::Utc::now())
        {
            tracing::warn!(email.id = %email.id, email.kind = %email.kind, "email outbox: expired before delivery; dead-lettered");
            return self
                .give_up(email, "expired before it could be delivered")
                .await;
        }
        match self.mailer.send(email).await {
            Ok(provider_id) => {
                tracing::info!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, "email sent");
                mark_sent(&self.db, email.id, provider_id.as_deref()).await
            }
            Err(SendError::Permanent(reason)) => {
                tracing::error!(email.id = %email.id, email.kind = %email.kind, reason = %reason, "email outbox: permanent failure; dead-lettered");
                self.give_up(email, &reason).await
            }
            Err(SendError::Retry { reason, .. }) if email.attempts >= MAX_ATTEMPTS => {
                tracing::error!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, reason = %reason, "email outbox: giving up; dead-lettered");
                self.give_up(email, &reason).await
            }
            Err(SendError::Retry { after, reason }) => {
                let wait = after.map_or_else(|| backoff(email.attempts), |a| a.min(MAX_BACKOFF));
                tracing::warn!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, retry_in_ms = wait.as_millis() as u64, reason = %reason, "email outbox: will retry");
                mark_retry(&self.db, email.id, wait, &reason).await
            }
        }
    }
}
