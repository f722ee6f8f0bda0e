//! Keeping workspace blobs in place while bytes move without a transaction open.
//!
//! An upload writes its blob, and a publish reads the aide's blobs, with no database connection
//! held (a slow client or a slow object store must not hold the pool). In between, the storage
//! worker must not delete those blobs. So the request first records them as pending (a
//! `pending_blobs` row each, see migrations/0011) in a short transaction holding the aide's blob
//! lock shared, which the worker takes exclusively to delete: once the rows commit, the worker
//! leaves the blobs alone. The rows are removed in the transaction that records the result, or
//! by [`BlobGuard::release`] when the request gives up; a trigger then queues any blob left
//! unreferenced.

use std::time::Duration;

use uuid::Uuid;

use super::repo;
use crate::auth::ApiUser;
use crate::db::{Db, UserId, UserTx};
use crate::error::AppError;

/// Who opens the transactions: a request (its session checked on each), or a turn running for
/// its user after the request that started it.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    Api(&'a ApiUser),
    Owner(UserId),
}

impl<'a> From<&'a ApiUser> for Caller<'a> {
    fn from(api: &'a ApiUser) -> Self {
        Caller::Api(api)
    }
}

impl Caller<'_> {
    async fn begin(self, db: &Db) -> Result<UserTx, AppError> {
        match self {
            Caller::Api(api) => api.begin(db).await,
            Caller::Owner(user) => Ok(db.user(user).await?),
        }
    }
}

/// Pending-blob rows a request holds.
#[must_use = "release the guard, or settle it in the transaction that records the blobs"]
#[derive(Debug)]
pub struct BlobGuard {
    ids: Vec<i64>,
}

/// How many times to try for the blob lock, and the wait between tries. The worker holds it only
/// while it deletes one blob.
const LOCK_TRIES: u32 = 100;
const LOCK_RETRY: Duration = Duration::from_millis(50);

/// Opens a transaction of the caller's that holds `aide`'s blob lock shared. While the storage
/// worker holds it, the transaction is given up and tried again after a moment, so no
/// connection is held while waiting.
pub async fn begin_sharing_blobs<'a>(
    db: &Db,
    caller: impl Into<Caller<'a>>,
    aide: Uuid,
) -> Result<UserTx, AppError> {
    let caller = caller.into();
    for _ in 0..LOCK_TRIES {
        let tx = caller.begin(db).await?;
        if repo::try_share_blobs(&tx, aide).await? {
            return Ok(tx);
        }
        tx.rollback();
        tokio::time::sleep(LOCK_RETRY).await;
    }
    Err(AppError::Unavailable(
        "This aide's files are being tidied up. Please try again in a moment.",
    ))
}

impl BlobGuard {
    /// Records `sha256s` of `aide` as pending in `tx`, which must hold the blob lock (see
    /// [`begin_sharing_blobs`]); they are protected once `tx` commits. 404 when the aide is not
    /// the caller's.
    pub async fn take(tx: &UserTx, aide: Uuid, sha256s: &[Vec<u8>]) -> Result<Self, AppError> {
        match repo::insert_pending(tx, aide, sha256s).await {
            Ok(ids) => Ok(BlobGuard { ids }),
            Err(e) if e.constraint() == Some("pending_blobs_aide_fkey") => {
                Err(AppError::not_found())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the rows in `tx`, the transaction that records what the blobs became.
    pub async fn settle(&self, tx: &UserTx) -> Result<(), crate::db::Error> {
        repo::delete_pending(tx, &self.ids).await
    }

    /// Removes the rows after a failure, in a transaction of its own. Best effort: rows left
    /// behind are removed by the cleanup job after an hour.
    pub async fn release<'a>(self, db: &Db, caller: impl Into<Caller<'a>>) {
        let caller = caller.into();
        let result = async {
            let tx = caller.begin(db).await?;
            futures_util::future::try_join(
                repo::delete_pending(&tx, &self.ids),
                tx.commit_queued(),
            )
            .await?;
            Ok::<_, AppError>(())
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = %e, "could not release pending blobs; the cleanup job will");
        }
    }
}
