//! Removing objects nothing refers to any more, after the change that orphaned them commits: a
//! deleted aide's objects in both buckets, and workspace blobs that no file of their aide has.
//!
//! The `storage_cleanup` queue is filled by triggers: an aide's prefix (`aides/{id}/`) when its
//! row is deleted, a blob's key (`aides/{id}/blobs/{sha256}`) when the last file with those bytes
//! is deleted or replaced. This worker claims due entries (`for update skip locked`, with a lease,
//! so several servers share the work), deletes the objects, and retries failures with backoff.
//! A blob is deleted only while holding its aide's blob lock exclusively and after checking again
//! that no file refers to it and no upload or publish has it pending (see `files::guard`): an
//! upload of the same bytes may have come in since.

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
        let result = match blob_entry(&prefix) {
            Some((aide, sha256)) => remove_blob(db, storage, aide, &sha256).await,
            None => remove_prefix(storage, &prefix)
                .await
                .map_err(CleanupError::Storage),
        };
        let mut tx = db.system().await?;
        match result {
            Ok(objects) => {
                sqlx::query("delete from storage_cleanup where id = $1")
                    .bind(id)
                    .execute(tx.conn())
                    .await?;
                tracing::info!(storage.prefix = %prefix, objects, "deleted objects nothing refers to");
                done += 1;
            }
            Err(e) => {
                let wait = crate::email::outbox::backoff(attempts);
                tracing::warn!(storage.prefix = %prefix, attempts, error = %e, "could not delete objects; will retry");
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

/// Why an entry could not be handled this time.
#[derive(Debug, thiserror::Error)]
enum CleanupError {
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("an upload or publish of the aide is under way")]
    Busy,
}

/// The aide and the hex SHA-256 of a blob entry (`aides/{id}/blobs/{sha256}`); None for a prefix.
fn blob_entry(prefix: &str) -> Option<(uuid::Uuid, String)> {
    let rest = prefix.strip_prefix("aides/")?;
    let (aide, sha256) = rest.split_once("/blobs/")?;
    let aide = uuid::Uuid::parse_str(aide).ok()?;
    (sha256.len() == 64 && sha256.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (aide, sha256.to_string()))
}

/// Deletes a workspace blob unless a file refers to it again; returns how many objects went.
async fn remove_blob(
    db: &Db,
    storage: &Storage,
    aide: uuid::Uuid,
    sha256: &str,
) -> Result<usize, CleanupError> {
    let mut tx = db.system().await?;
    let locked: bool =
        sqlx::query_scalar("select pg_try_advisory_xact_lock($1, hashtext($2::text))")
            .bind(crate::files::BLOB_LOCK_CLASS)
            .bind(aide)
            .fetch_one(tx.conn())
            .await?;
    if !locked {
        return Err(CleanupError::Busy);
    }
    // A pending row means an upload or publish is about to refer to the blob or read it; if it
    // gives up instead, removing its row queues the blob again.
    let referenced: bool = sqlx::query_scalar(
        "select exists (select 1 from workspace_files where aide_id = $1 and sha256 = decode($2, 'hex'))
             or exists (select 1 from pending_blobs where aide_id = $1 and sha256 = decode($2, 'hex'))",
    )
    .bind(aide)
    .bind(sha256)
    .fetch_one(tx.conn())
    .await?;
    let mut count = 0;
    if !referenced {
        let key = object_store::path::Path::from(format!("aides/{aide}/blobs/{sha256}"));
        match storage.workspace.delete(&key).await {
            Ok(()) => count = 1,
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Ends the transaction, and with it the lock, only once the blob is gone.
    tx.commit().await?;
    Ok(count)
}

/// Removes pending-blob rows older than an hour: their requests died between storing bytes and
/// recording them. Removing a row queues its blob when nothing refers to it (a trigger).
pub async fn release_abandoned(tx: &mut crate::db::SystemTx) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("delete from pending_blobs where created_at < now() - interval '1 hour'")
            .execute(tx.conn())
            .await?;
    Ok(done.rows_affected())
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
