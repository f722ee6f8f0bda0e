//! Rate limits kept in PostgreSQL, so every server process shares one budget per key.
//!
//! Each key holds one row with a GCRA "theoretical arrival time" (tat): a request is allowed when
//! pushing tat forward by one emission interval (period / limit) keeps it within one period of
//! now. That allows `limit` requests in a burst, then one per interval, in one atomic statement.

mod in_flight;

use std::time::Duration;

use sqlx::Row;
use uuid::Uuid;

pub use in_flight::{InFlight, Slot};

use crate::db::{Caller, Db, SqlLiteral, SystemTx};

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

    fn interval_secs(&self) -> f64 {
        self.period.as_secs_f64() / f64::from(self.limit.max(1))
    }
}

/// Counts one request against `key`. Ok(()) when allowed; Err(retry_after) when over the limit
/// (and then nothing is counted).
pub async fn hit(
    tx: &mut SystemTx,
    key: &str,
    rate: Rate,
) -> Result<Result<(), Duration>, sqlx::Error> {
    let interval = rate.interval_secs();
    let period = rate.period.as_secs_f64();
    let allowed = sqlx::query_scalar::<_, i32>(
        "insert into rate_limits as r (key, tat)
         values ($1, now() + make_interval(secs => $2))
         on conflict (key) do update
             set tat = greatest(r.tat, now()) + make_interval(secs => $2)
             where greatest(r.tat, now()) + make_interval(secs => $2) - now()
                   <= make_interval(secs => $3)
         returning 1",
    )
    .bind(key)
    .bind(interval)
    .bind(period)
    .fetch_optional(tx.conn())
    .await?;
    if allowed.is_some() {
        return Ok(Ok(()));
    }
    // Over the limit: the next request fits once tat + interval - period has passed.
    let wait: f64 = sqlx::query_scalar(
        "select greatest(extract(epoch from (tat + make_interval(secs => $2) - make_interval(secs => $3) - now()))::float8, 0)
         from rate_limits where key = $1",
    )
    .bind(key)
    .bind(interval)
    .bind(period)
    .fetch_one(tx.conn())
    .await?;
    Ok(Err(Duration::from_secs_f64(wait)))
}

/// Counts one request against every key of `hits`, or against none of them: at the first key that
/// is over its limit, the charges already made to the earlier ones are undone (a savepoint) and
/// Err((index of that key, retry_after)) is returned. So a request that one budget refuses spends
/// nothing of the others. Put the cheapest-to-refuse, most specific keys first.
pub async fn hit_all(
    tx: &mut SystemTx,
    hits: &[(&str, Rate)],
) -> Result<Result<(), (usize, Duration)>, sqlx::Error> {
    sqlx::query("savepoint limits_hit_all")
        .execute(tx.conn())
        .await?;
    for (index, (key, rate)) in hits.iter().enumerate() {
        if let Err(wait) = hit(tx, key, *rate).await? {
            sqlx::query("rollback to savepoint limits_hit_all")
                .execute(tx.conn())
                .await?;
            return Ok(Err((index, wait)));
        }
    }
    sqlx::query("release savepoint limits_hit_all")
        .execute(tx.conn())
        .await?;
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
    tx: &mut SystemTx,
    key: &str,
    rate: Rate,
) -> Result<Result<Tentative, Duration>, sqlx::Error> {
    sqlx::query("savepoint limits_tentative")
        .execute(tx.conn())
        .await?;
    match hit(tx, key, rate).await? {
        Ok(()) => Ok(Ok(Tentative(()))),
        Err(wait) => {
            // Refused: nothing was charged, so there is nothing to keep or refund.
            sqlx::query("release savepoint limits_tentative")
                .execute(tx.conn())
                .await?;
            Ok(Err(wait))
        }
    }
}

impl Tentative {
    /// Makes the charge final.
    pub async fn keep(self, tx: &mut SystemTx) -> Result<(), sqlx::Error> {
        sqlx::query("release savepoint limits_tentative")
            .execute(tx.conn())
            .await
            .map(|_| ())
    }

    /// Undoes the charge (and anything else done in the transaction since it was made).
    pub async fn refund(self, tx: &mut SystemTx) -> Result<(), sqlx::Error> {
        sqlx::query("rollback to savepoint limits_tentative")
            .execute(tx.conn())
            .await?;
        sqlx::query("release savepoint limits_tentative")
            .execute(tx.conn())
            .await
            .map(|_| ())
    }
}

/// The API rate limit of one server process: per-user tokens leased in batches from the shared
/// GCRA row in PostgreSQL, then spent locally.
///
/// Leased tokens count as spent in the shared row the moment they are leased, so the limit holds
/// across any number of processes; a process only ever refuses early (tokens it leased and did not
/// use), never late. A lease is kept for the time its tokens stand for (size × interval) but at
/// least [`MIN_LEASE`], so unused tokens cannot pile up into a burst later: a process can run
/// ahead of the shared row by at most one lease per session (a twentieth of the limit, at most
/// 1,000 tokens). With small limits the lease is one token and every request is counted in
/// PostgreSQL.
///
/// Only a live session spends its user's budget: the statement that takes tokens first checks the
/// session (`assert_session_live`), and a dead one fails it before anything is charged. Leases are
/// held per session, so tokens leased to one session are never spent by another, and a revoked
/// token, once refused, gets no tokens at all.
#[derive(Debug, Default)]
pub struct ApiLimiter {
    local: std::sync::Mutex<std::collections::HashMap<Uuid, Lease>>,
}

#[derive(Debug, Clone, Copy)]
struct Lease {
    tokens: u32,
    until: std::time::Instant,
}

/// The shortest time a lease is kept. Without it, a high limit (say 1,000,000 a minute: 60 µs an
/// interval) would make a lease of 1,000 tokens expire after 60 ms, mostly unused, and a busy user
/// would cost a database round trip every few requests.
const MIN_LEASE: Duration = Duration::from_secs(1);

/// Leases above this many entries trigger a sweep of expired ones.
const SWEEP_AT: usize = 10_000;

impl ApiLimiter {
    /// Counts one request of `caller`. Err(retry_after) when over the limit. Fails with
    /// `assert_session_live`'s error (SQLSTATE 28000, see [`crate::db::SESSION_NOT_LIVE`]) when
    /// the caller's session is not live, having charged nothing.
    pub async fn check(
        &self,
        db: &Db,
        caller: Caller,
        rate: Rate,
    ) -> Result<Result<(), Duration>, sqlx::Error> {
        let now = std::time::Instant::now();
        if self.take_local(caller.session, now) {
            return Ok(Ok(()));
        }
        let size = lease_size(rate);
        let mut granted = size;
        let mut verdict = take(db, caller, rate, size).await?;
        if verdict.is_err() && size > 1 {
            granted = 1;
            verdict = take(db, caller, rate, 1).await?;
        }
        if verdict.is_ok() && granted > 1 {
            let lease = Lease {
                tokens: granted - 1,
                until: now
                    + Duration::from_secs_f64(rate.interval_secs() * f64::from(granted))
                        .max(MIN_LEASE),
            };
            if let Ok(mut local) = self.local.lock() {
                if local.len() >= SWEEP_AT {
                    local.retain(|_, l| l.until > now && l.tokens > 0);
                }
                local.insert(caller.session, lease);
            }
        }
        Ok(verdict)
    }

    fn take_local(&self, session: Uuid, now: std::time::Instant) -> bool {
        let Ok(mut local) = self.local.lock() else {
            return false;
        };
        match local.get_mut(&session) {
            Some(lease) if lease.tokens > 0 && lease.until > now => {
                lease.tokens -= 1;
                true
            }
            _ => false,
        }
    }
}

/// How many tokens one lease takes: a twentieth of the limit (at least 1, at most 1,000), so a
/// process runs ahead of the shared row by at most 5% of the limit.
fn lease_size(rate: Rate) -> u32 {
    (rate.limit / 20).clamp(1, 1_000)
}

/// Takes `cost` tokens from `api:user:<user>` in PostgreSQL, in one round trip (see
/// [`Db::system_oneshot`]; the statement holds only typed literals), after checking that the
/// caller's session is live. The statements form one implicit transaction, so when the check
/// raises, the charge after it never happens.
async fn take(
    db: &Db,
    caller: Caller,
    rate: Rate,
    cost: u32,
) -> Result<Result<(), Duration>, sqlx::Error> {
    let key = format!("'api:user:{}'", caller.user.0.hyphenated());
    let session = caller.session.sql();
    let user = caller.user.sql();
    let step = (rate.interval_secs() * f64::from(cost)).sql();
    let period = rate.period.as_secs_f64().sql();
    let interval = rate.interval_secs().sql();
    let statement = format!(
        "select assert_session_live({session}, {user});
         with hit as (
             insert into rate_limits as r (key, tat)
             values ({key}, now() + make_interval(secs => {step}))
             on conflict (key) do update
                 set tat = greatest(r.tat, now()) + make_interval(secs => {step})
                 where greatest(r.tat, now()) + make_interval(secs => {step}) - now()
                       <= make_interval(secs => {period})
             returning 1)
         select exists (select 1 from hit) as allowed,
                (select greatest(extract(epoch from (tat + make_interval(secs => {interval})
                                                    - make_interval(secs => {period}) - now()))::float8, 0)
                 from rate_limits where key = {key}) as wait"
    );
    let row = db
        .system_oneshot(&statement)
        .await?
        .ok_or_else(|| sqlx::Error::Protocol("the rate limit check returned no row".into()))?;
    let allowed: bool = row.try_get("allowed")?;
    let wait: Option<f64> = row.try_get("wait")?;
    Ok(if allowed {
        Ok(())
    } else {
        Err(Duration::from_secs_f64(wait.unwrap_or(1.0).max(0.0)))
    })
}

/// Deletes keys whose budget is full again (tat in the past): they behave exactly like absent keys.
pub async fn delete_idle(tx: &mut SystemTx) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from rate_limits where tat < now()")
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected())
}
