//! Background work besides email: removing what can no longer be used.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;

/// How often the cleanup runs.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// One cleanup pass: dead links and sessions, idle rate-limit keys, old finished emails, uploads
/// abandoned part-way.
pub async fn cleanup(db: &Db) -> Result<(), sqlx::Error> {
    let (links, sessions) = crate::auth::delete_stale(db).await?;
    let mut tx = db.system().await?;
    let rate_keys = crate::limits::delete_idle(&mut tx).await?;
    let emails = crate::email::outbox::delete_finished(&mut tx).await?;
    let pending = crate::storage::release_abandoned(&mut tx).await?;
    tx.commit().await?;
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

/// Runs [`cleanup`] now and every [`CLEANUP_EVERY`] until `shutdown` turns true.
pub async fn run_cleanup(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
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
