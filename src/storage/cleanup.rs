//! Removing a deleted aide's objects from both buckets, after the deletion commits.
//!
//! The `storage_cleanup` queue is filled by a trigger when an aide row is deleted. This worker
//! claims due entries (`for update skip locked`, with a lease, so several servers share the work),
//! deletes every object under the prefix, and retries failures with backoff.

use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::ObjectStore;
use tokio::sync::{Notify, watch};

use super::Storage;
use crate::db::Db;

const BATCH: i64 = 20;
const POLL: Duration = Duration::from_secs(30);

/// One pass over the due entries. Returns how many prefixes were emptied.
pub async fn cleanup_due(db: &Db, storage: &Storage) -> Result<usize, sqlx::Error> {
    let mut tx = db.system().await?;
    let due: Vec<(i64, String, i32)> = sqlx::query_as(
        "update storage_cleanup
         set attempts = attempts + 1, next_attempt_at = now() + interval '5 minutes'
         where id in (select id from storage_cleanup where next_attempt_at <= now()
                      order by id limit $1 for update skip locked)
         returning id, prefix, attempts",
    )
    .bind(BATCH)
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;

    let mut done = 0;
    for (id, prefix, attempts) in due {
        let result = remove_prefix(storage, &prefix).await;
        let mut tx = db.system().await?;
        match result {
            Ok(objects) => {
                sqlx::query("delete from storage_cleanup where id = $1")
                    .bind(id)
                    .execute(tx.conn())
                    .await?;
                tracing::info!(storage.prefix = %prefix, objects, "deleted aide's objects");
                done += 1;
            }
            Err(e) => {
                let wait = crate::email::outbox::backoff(attempts);
                tracing::warn!(storage.prefix = %prefix, attempts, error = %e, "could not delete aide's objects; will retry");
                sqlx::query(
                    "update storage_cleanup
                     set next_attempt_at = now() + make_interval(secs => $2), last_error = $3
                     where id = $1",
                )
                .bind(id)
                .bind(wait.as_secs_f64())
                .bind(e.to_string())
                .execute(tx.conn())
                .await?;
            }
        }
        tx.commit().await?;
    }
    Ok(done)
}

/// Deletes every object under `prefix` in both buckets; returns how many.
async fn remove_prefix(storage: &Storage, prefix: &str) -> Result<usize, object_store::Error> {
    let mut count = 0;
    for store in [&storage.workspace, &storage.published] {
        count += remove_from(store.as_ref(), prefix).await?;
    }
    Ok(count)
}

async fn remove_from(store: &dyn ObjectStore, prefix: &str) -> Result<usize, object_store::Error> {
    let prefix = object_store::path::Path::from(prefix);
    let locations: Vec<object_store::path::Path> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .try_collect()
        .await?;
    for location in &locations {
        store.delete(location).await?;
    }
    Ok(locations.len())
}

/// Runs [`cleanup_due`] when woken (after an aide is deleted) and every [`POLL`], until
/// `shutdown` turns true.
pub async fn run_cleanup(
    db: Db,
    storage: Storage,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(e) = cleanup_due(&db, &storage).await {
            tracing::warn!(error = %e, "storage cleanup: could not reach the database");
        }
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
