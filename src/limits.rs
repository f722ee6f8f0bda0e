//! Rate limits kept in PostgreSQL, so every server process shares one budget per key.
//!
//! Each key holds one row with a GCRA "theoretical arrival time" (tat): a request is allowed when
//! pushing tat forward by one emission interval (period / limit) keeps it within one period of
//! now. That allows `limit` requests in a burst, then one per interval, in one atomic statement.

use std::time::Duration;

use crate::db::{SqlLiteral, SystemTx, UserId};

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

/// The same GCRA step as [`hit`], as a CTE (`name`) for [`crate::db::Db::system_oneshot`]: it
/// counts one request against `api:user:<user>` when `condition` holds, and returns a row when
/// allowed. `user` and the numbers are typed literals, so the text carries nothing else.
pub(crate) fn api_hit_cte(user: UserId, rate: Rate, condition: &str) -> (String, String) {
    let key = format!("'api:user:{}'", user.0.hyphenated());
    let interval = rate.interval_secs().sql();
    let period = rate.period.as_secs_f64().sql();
    let cte = format!(
        "insert into rate_limits as r (key, tat)
         select {key}, now() + make_interval(secs => {interval}) where {condition}
         on conflict (key) do update
             set tat = greatest(r.tat, now()) + make_interval(secs => {interval})
             where greatest(r.tat, now()) + make_interval(secs => {interval}) - now()
                   <= make_interval(secs => {period})
         returning 1"
    );
    // Seconds until the next request fits, from the row as it was before this statement.
    let wait = format!(
        "(select greatest(extract(epoch from (tat + make_interval(secs => {interval}) - make_interval(secs => {period}) - now()))::float8, 0)
          from rate_limits where key = {key})"
    );
    (cte, wait)
}

/// Deletes keys whose budget is full again (tat in the past): they behave exactly like absent keys.
pub async fn delete_idle(tx: &mut SystemTx) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("delete from rate_limits where tat < now()")
        .execute(tx.conn())
        .await?;
    Ok(done.rows_affected())
}
