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

use rand::Rng;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

use super::{Mailer, NewEmail, QueuedEmail, SendError};
use crate::db::{Db, SystemTx};

/// Attempts before a message is dead-lettered.
pub const MAX_ATTEMPTS: i32 = 8;
/// How long a claimed message is left to its worker before another may retry it.
const LEASE: &str = "2 minutes";
/// How many messages a worker claims at once.
const BATCH: i64 = 10;
/// How often the worker looks for due messages when nothing wakes it.
const POLL: Duration = Duration::from_secs(2);
/// The longest wait between attempts, whatever the provider asks.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Queues `email` in the caller's transaction: it is sent only if that transaction commits.
pub async fn enqueue(tx: &mut SystemTx, email: &NewEmail) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "insert into email_outbox (kind, to_address, subject, html_body, text_body, deliver_before)
         values ($1, $2, $3, $4, $5, $6) returning id",
    )
    .bind(email.kind)
    .bind(&email.to)
    .bind(&email.subject)
    .bind(&email.html)
    .bind(&email.text)
    .bind(email.deliver_before)
    .fetch_one(tx.conn())
    .await
}

/// Claims up to `BATCH` due messages.
async fn claim(db: &Db) -> Result<Vec<QueuedEmail>, sqlx::Error> {
    let mut tx = db.system().await?;
    let claimed = sqlx::query_as::<_, QueuedEmail>(&format!(
        "update email_outbox
         set attempts = attempts + 1, next_attempt_at = now() + interval '{LEASE}'
         where id in (
             select id from email_outbox
             where status = 'pending' and next_attempt_at <= now()
             order by next_attempt_at
             limit $1
             for update skip locked)
         returning id, kind, to_address, subject, html_body, text_body, attempts, deliver_before"
    ))
    .bind(BATCH)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    Ok(claimed)
}

/// Marks a message sent and erases its bodies.
async fn mark_sent(db: &Db, id: Uuid, provider_id: Option<&str>) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    sqlx::query(
        "update email_outbox
         set status = 'sent', sent_at = now(), provider_id = $2, last_error = null,
             html_body = null, text_body = null
         where id = $1",
    )
    .bind(id)
    .bind(provider_id)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Schedules another attempt after `wait`.
async fn mark_retry(db: &Db, id: Uuid, wait: Duration, reason: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    sqlx::query(
        "update email_outbox
         set next_attempt_at = now() + make_interval(secs => $2), last_error = $3
         where id = $1",
    )
    .bind(id)
    .bind(wait.as_secs_f64())
    .bind(reason)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Gives up on a message and erases its bodies.
async fn mark_dead(db: &Db, id: Uuid, reason: &str) -> Result<(), sqlx::Error> {
    let mut tx = db.system().await?;
    sqlx::query(
        "update email_outbox
         set status = 'dead', last_error = $2, html_body = null, text_body = null
         where id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    tx.commit().await
}

/// Deletes sent and dead-lettered emails (already without bodies) after a week.
pub async fn delete_finished(tx: &mut SystemTx) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "delete from email_outbox where status <> 'pending' and created_at < now() - interval '7 days'",
    )
    .execute(tx.conn())
    .await
    .map(|done| done.rows_affected())
}

/// Exponential backoff with jitter: about 2s, 4s, 8s... capped at an hour.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(1, 20) - 1;
    let base = Duration::from_secs(2).saturating_mul(1u32 << exp.min(16));
    let capped = base.min(MAX_BACKOFF);
    let jitter = rand::rng().random_range(0.8..1.2);
    capped.mul_f64(jitter).min(MAX_BACKOFF)
}

/// The background worker that delivers the outbox.
#[derive(Debug, Clone)]
pub struct Worker {
    db: Db,
    mailer: Mailer,
    wake: Arc<Notify>,
}

impl Worker {
    pub fn new(db: Db, mailer: Mailer, wake: Arc<Notify>) -> Self {
        Worker { db, mailer, wake }
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
    pub async fn deliver_due(&self) -> Result<usize, sqlx::Error> {
        let batch = claim(&self.db).await?;
        for email in &batch {
            self.deliver(email).await?;
        }
        Ok(batch.len())
    }

    async fn deliver(&self, email: &QueuedEmail) -> Result<(), sqlx::Error> {
        if email
            .deliver_before
            .is_some_and(|deadline| deadline <= chrono::Utc::now())
        {
            tracing::warn!(email.id = %email.id, email.kind = %email.kind, "email outbox: expired before delivery; dead-lettered");
            return mark_dead(&self.db, email.id, "expired before it could be delivered").await;
        }
        match self.mailer.send(email).await {
            Ok(provider_id) => {
                tracing::info!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, "email sent");
                mark_sent(&self.db, email.id, provider_id.as_deref()).await
            }
            Err(SendError::Permanent(reason)) => {
                tracing::error!(email.id = %email.id, email.kind = %email.kind, reason = %reason, "email outbox: permanent failure; dead-lettered");
                mark_dead(&self.db, email.id, &reason).await
            }
            Err(SendError::Retry { reason, .. }) if email.attempts >= MAX_ATTEMPTS => {
                tracing::error!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, reason = %reason, "email outbox: giving up; dead-lettered");
                mark_dead(&self.db, email.id, &reason).await
            }
            Err(SendError::Retry { after, reason }) => {
                let wait = after.map_or_else(|| backoff(email.attempts), |a| a.min(MAX_BACKOFF));
                tracing::warn!(email.id = %email.id, email.kind = %email.kind, attempts = email.attempts, retry_in_ms = wait.as_millis() as u64, reason = %reason, "email outbox: will retry");
                mark_retry(&self.db, email.id, wait, &reason).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let first = backoff(1);
        assert!(first >= Duration::from_millis(1600) && first <= Duration::from_millis(2400));
        let third = backoff(3);
        assert!(third >= Duration::from_millis(6400) && third <= Duration::from_millis(9600));
        assert!(backoff(30) <= MAX_BACKOFF);
    }
}
