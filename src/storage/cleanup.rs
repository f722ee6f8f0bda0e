//! Removing objects nothing refers to any more, after the change that orphaned them commits: a
//! deleted aide's objects in both buckets, and workspace blobs that no file of their aide has.
//!
//! The `storage_cleanup` queue is filled by triggers: an aide's prefix (`aides/{id}/`) when its
//! row is deleted, a blob's key (`aides/{id}/blobs/{sha256}`) when the last file with those bytes
//! is deleted or replaced. This worker claims due entries (`for update skip locked`, with a lease,
//! so several servers share the work), deletes the objects, and retries failures with backoff.
//! A blob is deleted only while holding its aide's blob lock exclusively and after checking again
//! that no file or revision refers to it and no upload or publish has it pending (see `files::guard`): an
//! upload of the same bytes may have come in since.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::try_join;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use tokio::sync::{Notify, watch};

use super::Storage;
use crate::db::{self, Db, SystemTx};

const BATCH: i64 = 20;
/// Entries of a batch handled at once: object stores answer in tens of milliseconds, so one at a
/// time fell behind a burst of deletions (the soak's 50 a second); more would crowd the pool.
const CONCURRENCY: usize = 4;
const POLL: Duration = Duration::from_secs(30);

crate::statement! {
    /// Claims up to `$1` due entries for a lease of five minutes.
    CLAIM: System = "update storage_cleanup \
         set attempts = attempts + 1, next_attempt_at = now() + interval '5 minutes' \
         where id in (select id from storage_cleanup where next_attempt_at <= now() \
                      order by id limit $1 for update skip locked) \
         returning id, prefix, attempts";
    /// Entry `$1` is done.
    DELETE_ENTRY: System = "delete from storage_cleanup where id = $1";
    /// Schedules another attempt of entry `$1` in `$2` seconds, for reason `$3`.
    RETRY_ENTRY: System = "update storage_cleanup \
         set next_attempt_at = now() + make_interval(secs => $2), last_error = $3 \
         where id = $1";
    /// Takes the blob lock of aide `$2` (class `$1`) exclusively, if it is free, until the
    /// transaction ends. The object is `hashtext` of the aide id's text, as `files::guard` has it.
    TRY_LOCK_BLOBS: System = "select pg_try_advisory_xact_lock($1, hashtext($2::uuid::text))";
    /// Whether a file of aide `$1`, or an upload or publish under way, refers to the blob of hex
    /// SHA-256 `$2`.
    BLOB_REFERENCED: System = "select exists (select 1 from workspace_files where aide_id = $1 and sha256 = decode($2, 'hex')) \
             or exists (select 1 from workspace_revision_files where aide_id = $1 and sha256 = decode($2, 'hex')) \
             or exists (select 1 from pending_blobs where aide_id = $1 and sha256 = decode($2, 'hex'))";
    /// Pending-blob rows older than an hour.
    RELEASE_ABANDONED: System =
        "delete from pending_blobs where created_at < now() - interval '1 hour'";
}

/// One pass over the due entries. Returns how many prefixes were emptied.
pub async fn cleanup_due(db: &Db, storage: &Storage) -> Result<usize, db::Error> {
    let tx = db.system().await?;
    let (due, ()) = try_join(
        tx.rows::<(i64, String, i32)>(&CLAIM, &[&BATCH]),
        tx.commit_queued(),
    )
    .await?;
    drop(tx);

    let outcomes: Vec<Result<bool, db::Error>> = futures_util::stream::iter(due)
        .map(|(id, prefix, attempts)| handle(db, storage, id, prefix, attempts))
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut done = 0;
    for outcome in outcomes {
        if outcome? {
            done += 1;
        }
    }
    Ok(done)
}

/// Handles one claimed entry: true when its objects are gone and the entry with them.
async fn handle(
    db: &Db,
    storage: &Storage,
    id: i64,
    prefix: String,
    attempts: i32,
) -> Result<bool, db::Error> {
    let result = match super::keys::parse_blob(&prefix) {
        Some((aide, sha256)) => remove_blob(db, storage, aide, &sha256).await,
        None => remove_prefix(storage, &prefix)
            .await
            .map_err(CleanupError::Storage),
    };
    let tx = db.system().await?;
    match result {
        Ok(objects) => {
            try_join(tx.execute(&DELETE_ENTRY, &[&id]), tx.commit_queued()).await?;
            tracing::info!(storage.prefix = %prefix, objects, "deleted objects nothing refers to");
            Ok(true)
        }
        Err(e) => {
            let wait = crate::retry::backoff(attempts);
            tracing::warn!(storage.prefix = %prefix, attempts, error = %e, "could not delete objects; will retry");
            try_join(
                tx.execute(&RETRY_ENTRY, &[&id, &wait.as_secs_f64(), &e.to_string()]),
                tx.commit_queued(),
            )
            .await?;
            Ok(false)
        }
    }
}

/// Why an entry could not be handled this time.
#[derive(Debug, thiserror::Error)]
enum CleanupError {
    #[error("storage: {0}")]
    Storage(#[from] object_store::Error),
    #[error("database: {0}")]
    Database(#[from] db::Error),
    #[error("an upload or publish of the aide is under way")]
    Busy,
}

/// Deletes a workspace blob unless a file refers to it again; returns how many objects went.
async fn remove_blob(
    db: &Db,
    storage: &Storage,
    aide: uuid::Uuid,
    sha256: &str,
) -> Result<usize, CleanupError> {
    let tx = db.system().await?;
    // Both in one round trip: the check runs after the lock is taken, and counts only if it was.
    // A pending row means an upload or publish is about to refer to the blob or read it; if it
    // gives up instead, removing its row queues the blob again.
    let (locked, referenced): (bool, bool) = try_join(
        tx.value(&TRY_LOCK_BLOBS, &[&crate::files::BLOB_LOCK_CLASS, &aide]),
        tx.value(&BLOB_REFERENCED, &[&aide, &sha256]),
    )
    .await?;
    if !locked {
        return Err(CleanupError::Busy);
    }
    let mut count = 0;
    if !referenced {
        let key =
            object_store::path::Path::from(format!("{}{sha256}", super::keys::blob_folder(aide)));
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
pub async fn release_abandoned(tx: &SystemTx) -> Result<u64, db::Error> {
    tx.execute(&RELEASE_ABANDONED, &[]).await
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
    // Listed and deleted as one stream: S3 deletes up to a thousand keys a request.
    let listed = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .boxed();
    let mut deleted = store.delete_stream(listed);
    let mut count = 0;
    while let Some(result) = deleted.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => count += 1,
            Err(e) => return Err(e),
        }
    }
    Ok(count)
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
        match cleanup_due(&db, &storage).await {
            // A full batch: more may be due right away (unless the server is stopping).
            Ok(done) if done == BATCH as usize && !*shutdown.borrow() => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "storage cleanup: could not reach the database"),
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
