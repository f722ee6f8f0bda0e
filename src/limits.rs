//! Rate limits kept in PostgreSQL, so every server process shares one budget per key.
//!
//! Each key holds one row with a GCRA "theoretical arrival time" (tat): a request is allowed when
//! pushing tat forward by one emission interval (period / limit) keeps it within one period of
//! now. That allows `limit` requests in a burst, then one per interval, in one atomic statement.

mod api;
mod in_flight;

use std::time::Duration;

pub use api::ApiLimiter;
pub use in_flight::{InFlight, Slot};

use crate::db::{self, SystemTx};

/// `limit` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub period: Duration,
}

impl Rate {
    pub fn per_minute(limit: u32) -> Self {
        Rate {
            limit,
            period: Duration::from_secs(60),
        }
    }

    pub fn per_hour(limit: u32) -> Self {
        Rate {
            limit,
            period: Duration::from_secs(3600),
        }
    }

    pub fn per_day(limit: u32) -> Self {
        Rate {
            limit,
            period: Duration::from_secs(24 * 3600),
        }
    }

    pub(crate) fn interval_secs(&self) -> f64 {
        self.period.as_secs_f64() / f64::from(self.limit.max(1))
    }
}

crate::statement! {
    /// The GCRA update: counts one request against key `$1` (interval `$2` and period `$3`, in
    /// seconds), returning a row only when it is allowed.
    HIT: System = "insert into rate_limits as r (key, tat)
         values ($1, now() + make_interval(secs => $2))
         on conflict (key) do update
             set tat = greatest(r.tat, now()) + make_interval(secs => $2)
             where greatest(r.tat, now()) + make_interval(secs => $2) - now()
                   <= make_interval(secs => $3)
         returning 1";
    /// Over the limit: the next request fits once tat + interval - period has passed.
    WAIT: System = "select greatest(extract(epoch from (tat + make_interval(secs => $2) - make_interval(secs => $3) - now()))::float8, 0)
         from rate_limits where key = $1";
    SAVEPOINT_HIT_ALL: System = "savepoint limits_hit_all";
    ROLLBACK_TO_HIT_ALL: System = "rollback to savepoint limits_hit_all";
    RELEASE_HIT_ALL: System = "release savepoint limits_hit_all";
    SAVEPOINT_TENTATIVE: System = "savepoint limits_tentative";
    ROLLBACK_TO_TENTATIVE: System = "rollback to savepoint limits_tentative";
    RELEASE_TENTATIVE: System = "release savepoint limits_tentative";
    /// Keys whose budget is full again.
    DELETE_IDLE: System = "delete from rate_limits where tat < now()";
}

/// Counts one request against `key`. Ok(()) when allowed; Err(retry_after) when over the limit
/// (and then nothing is counted).
pub async fn hit(tx: &SystemTx, key: &str, rate: Rate) -> Result<Result<(), Duration>, db::Error> {
    let interval = rate.interval_secs();
    let period = rate.period.as_secs_f64();
    let allowed = tx
        .value_opt::<i32>(&HIT, &[&key, &interval, &period])
        .await?;
    if allowed.is_some() {
        return Ok(Ok(()));
    }
    let wait: f64 = tx.value(&WAIT, &[&key, &interval, &period]).await?;
    Ok(Err(Duration::from_secs_f64(wait)))
}

/// Counts one request against every key of `hits`, or against none of them: at the first key that
/// is over its limit, the charges already made to the earlier ones are undone (a savepoint) and
/// Err((index of that key, retry_after)) is returned. So a request that one budget refuses spends
/// nothing of the others. Put the cheapest-to-refuse, most specific keys first.
pub async fn hit_all(
    tx: &SystemTx,
    hits: &[(&str, Rate)],
) -> Result<Result<(), (usize, Duration)>, db::Error> {
    tx.execute(&SAVEPOINT_HIT_ALL, &[]).await?;
    for (index, (key, rate)) in hits.iter().enumerate() {
        if let Err(wait) = hit(tx, key, *rate).await? {
            tx.execute(&ROLLBACK_TO_HIT_ALL, &[]).await?;
            return Ok(Err((index, wait)));
        }
    }
    tx.execute(&RELEASE_HIT_ALL, &[]).await?;
    Ok(Ok(()))
}

/// A charge made with [`hit_tentatively`], not final until [`Tentative::keep`] or
/// [`Tentative::refund`] (dropping it keeps it, as committing releases the savepoint).
#[must_use = "keep or refund the charge"]
#[derive(Debug)]
pub struct Tentative(());

/// Like [`hit`], but the charge can be undone later in the same transaction (a savepoint): for a
/// budget of failures, charged before the attempt so that concurrent attempts cannot overspend
/// it, and refunded when the attempt turns out to succeed.
pub async fn hit_tentatively(
    tx: &SystemTx,
    key: &str,
    rate: Rate,
) -> Result<Result<Tentative, Duration>, db::Error> {
    tx.execute(&SAVEPOINT_TENTATIVE, &[]).await?;
    match hit(tx, key, rate).await? {
        Ok(()) => Ok(Ok(Tentative(()))),
        Err(wait) => {
            // Refused: nothing was charged, so there is nothing to keep or refund.
            tx.execute(&RELEASE_TENTATIVE, &[]).await?;
            Ok(Err(wait))
        }
    }
}

impl Tentative {
    /// Makes the charge final.
    pub async fn keep(self, tx: &SystemTx) -> Result<(), db::Error> {
        tx.execute(&RELEASE_TENTATIVE, &[]).await.map(|_| ())
    }

    /// Undoes the charge (and anything else done in the transaction since it was made).
    pub async fn refund(self, tx: &SystemTx) -> Result<(), db::Error> {
        futures_util::future::try_join(
            tx.execute(&ROLLBACK_TO_TENTATIVE, &[]),
            tx.execute(&RELEASE_TENTATIVE, &[]),
        )
        .await
        .map(|_| ())
    }
}

/// Deletes keys whose budget is full again (tat in the past): they behave exactly like absent keys.
pub async fn delete_idle(tx: &SystemTx) -> Result<u64, db::Error> {
    tx.execute(&DELETE_IDLE, &[]).await
}
