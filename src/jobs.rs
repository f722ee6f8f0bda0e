//! Background work besides email: removing what can no longer be used.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{self, Db};

/// How often the cleanup runs.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// One cleanup pass: dead links and sessions, idle rate-limit keys, old finished emails, uploads
/// abandoned part-way.
pub async fn cleanup(db: &Db) -> Result<(), db::Error> {
    let (links, sessions) = crate::auth::delete_stale(db).await?;
    let tx = db.system().await?;
    // Independent deletes: one round trip, commit included.
    let (rate_keys, emails, pending, ()) = futures_util::future::try_join4(
        crate::limits::delete_idle(&tx),
        crate::email::outbox::delete_finished(&tx),
        crate::storage::release_abandoned(&tx),
        tx.commit_queued(),
    )
    .await?;
    tracing::info!(
        deleted.magic_links = links,
        deleted.sessions = sessions,
        deleted.rate_limit_keys = rate_keys,
        deleted.emails = emails,
        deleted.pending_blobs = pending,
        "cleanup done"
    );
    Ok(())
}

/// Runs [`cleanup`] now and every [`CLEANUP_EVERY`] until `shutdown` turns true, closing the
/// pool's idle connections each round.
pub async fn run_cleanup(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        db.close_idle();
        if let Err(e) = cleanup(&db).await {
            tracing::warn!(error = %e, "cleanup failed; will try again");
        }
        tokio::select! {
            () = tokio::time::sleep(CLEANUP_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// How often turns left running by a dead process are looked for.
pub const TURN_JANITOR_EVERY: Duration = Duration::from_secs(30);

/// Fails and gives back turns left running past their deadline (the process running them died),
/// now and every [`TURN_JANITOR_EVERY`], until `shutdown` turns true. Frees their aides for new
/// turns.
pub async fn run_turn_janitor(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        match crate::turns::expire_abandoned(&db).await {
            Ok((0, _)) => {}
            Ok((failed, refunded)) => {
                tracing::warn!(
                    turns.failed = failed,
                    turns.refunded = refunded,
                    "abandoned turns failed and given back"
                );
            }
            Err(e) => tracing::warn!(error = %e, "turn janitor failed; will try again"),
        }
        tokio::select! {
            () = tokio::time::sleep(TURN_JANITOR_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
