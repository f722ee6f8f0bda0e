//! The per-user API rate limit (API_REQUESTS_PER_USER_PER_MINUTE), exact in both directions:
//! never more than the limit across all server processes, and never a refusal while the user is
//! under it.
//!
//! The budget is one GCRA row per user in PostgreSQL (`api:user:<id>`), shared by every process.
//! Asking PostgreSQL on every request would cost a round trip each, so a process takes tokens in
//! batches (a *lease*: a twentieth of the limit, at most 1,000) and spends them locally. Tokens
//! count as spent in the shared row from the moment they are leased, so all processes together
//! never pass the limit. For a process never to refuse early:
//!
//! * refills are single-flight per user: when the local tokens run out, one request takes the
//!   next lease while the others wait for it, instead of each taking one and dropping the rest;
//! * a refusal is only ever PostgreSQL's answer while this process holds no tokens of the user's;
//! * a lease lives for the time its tokens stand for (but at least [`MIN_LEASE`]), so unused
//!   tokens cannot be banked into a later burst; when it expires with tokens left, they are given
//!   back to the shared row in the statement that takes the next lease.
//!
//! Only a live session spends its user's budget: every statement that takes tokens first checks
//! the caller's session (`assert_session_live`; a dead one fails before anything is charged), and
//! a session may draw local tokens only for [`MIN_LEASE`] after such a check. So a revoked token
//! spends at most that moment's worth, and then nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::Rate;
use crate::db::{self, Db, UserId};
use crate::error::AppError;

/// The shortest time a lease is kept, and how long a session's check lets it draw local tokens.
/// Without it, a high limit (say 1,000,000 a minute: 60 µs an interval) would make a lease of
/// 1,000 tokens expire after 60 ms, and a busy user would cost a round trip every few requests.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// Users above this many entries trigger a sweep of those that need nothing more.
const SWEEP_AT: usize = 10_000;

/// Whose request is counted: the user, and the session that must be live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Caller {
    user: UserId,
    session: Uuid,
}

#[derive(Debug, Default)]
pub struct ApiLimiter {
    users: Mutex<HashMap<UserId, UserTokens>>,
}

/// One user's tokens in this process.
#[derive(Debug)]
struct UserTokens {
    tokens: u32,
    /// When the lease expires; tokens left then are given back.
    until: Instant,
    /// Sessions checked live, and until when each may draw local tokens.
    sessions: Vec<(Uuid, Instant)>,
    /// Held by the one request taking the next lease.
    refill: Arc<tokio::sync::Mutex<()>>,
}

impl UserTokens {
    fn new(now: Instant) -> Self {
        UserTokens {
            tokens: 0,
            until: now,
            sessions: Vec::new(),
            refill: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    fn session_checked(&self, session: Uuid, now: Instant) -> bool {
        self.sessions
            .iter()
            .any(|(s, until)| *s == session && *until > now)
    }

    /// Spends one local token for `session`, when it has one to spend.
    fn draw(&mut self, session: Uuid, now: Instant) -> bool {
        if self.tokens > 0 && self.until > now && self.session_checked(session, now) {
            self.tokens -= 1;
            return true;
        }
        false
    }

    fn mark_checked(&mut self, session: Uuid, now: Instant) {
        self.sessions
            .retain(|(s, until)| *s != session && *until > now);
        self.sessions.push((session, now + MIN_LEASE));
    }
}

/// What the one request holding a user's refill lock asks PostgreSQL for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ask {
    /// Tokens of an expired lease to give back first.
    refund: u32,
    /// Tokens to take: 0 when the local lease still has some and only the session needs checking.
    take: u32,
}

impl ApiLimiter {
    /// Counts one request of `user` in `session`. Err(retry_after) when over the limit. Fails
    /// with 401 (`assert_session_live`'s SQLSTATE 28000, see [`crate::db::SESSION_NOT_LIVE`])
    /// when the session is not live, having charged nothing.
    pub async fn check(
        &self,
        db: &Db,
        user: UserId,
        session: Uuid,
        rate: Rate,
    ) -> Result<Result<(), Duration>, AppError> {
        let caller = Caller { user, session };
        let refill = {
            let Ok(mut users) = self.users.lock() else {
                return Err(poisoned());
            };
            let now = Instant::now();
            if users.len() >= SWEEP_AT {
                sweep(&mut users, now, rate.period);
            }
            let user = users
                .entry(caller.user)
                .or_insert_with(|| UserTokens::new(now));
            if user.draw(caller.session, now) {
                return Ok(Ok(()));
            }
            user.refill.clone()
        };
        let _refilling = refill.lock().await;
        // Two rounds at most: a first that only checks the session finds the lease spent by the
        // user's other sessions at worst, and then the second asks for tokens, which are
        // granted or refused.
        loop {
            let Some(ask) = self.plan(caller, Instant::now(), rate) else {
                return Ok(Ok(()));
            };
            let granted = take(db, caller, rate, ask).await?;
            let now = Instant::now();
            let Ok(mut users) = self.users.lock() else {
                return Err(poisoned());
            };
            let user = users
                .entry(caller.user)
                .or_insert_with(|| UserTokens::new(now));
            user.tokens = user.tokens.saturating_sub(ask.refund);
            user.mark_checked(caller.session, now);
            match granted {
                Granted::Refused(wait) => return Ok(Err(wait)),
                Granted::Tokens(n) if n > 0 => {
                    user.tokens = n - 1;
                    user.until = now + lease_life(rate, n);
                    return Ok(Ok(()));
                }
                Granted::Tokens(_) => {
                    if user.draw(caller.session, now) {
                        return Ok(Ok(()));
                    }
                }
            }
        }
    }

    /// Under the refill lock: None when the caller can now draw a local token (another request
    /// just refilled); otherwise what to ask PostgreSQL for.
    fn plan(&self, caller: Caller, now: Instant, rate: Rate) -> Option<Ask> {
        let Ok(mut users) = self.users.lock() else {
            return Some(Ask {
                refund: 0,
                take: lease_size(rate),
            });
        };
        let user = users
            .entry(caller.user)
            .or_insert_with(|| UserTokens::new(now));
        if user.draw(caller.session, now) {
            return None;
        }
        let live = user.until > now && user.tokens > 0;
        Some(Ask {
            refund: if user.until <= now { user.tokens } else { 0 },
            take: if live { 0 } else { lease_size(rate) },
        })
    }
}

fn poisoned() -> AppError {
    AppError::internal(anyhow::anyhow!("the rate limiter's lock is poisoned"))
}

/// Forgets users whose lease expired more than a period ago: their unused tokens have come back
/// in the shared row by themselves, so there is nothing left to give back.
fn sweep(users: &mut HashMap<UserId, UserTokens>, now: Instant, period: Duration) {
    users.retain(|_, user| user.until + period > now || Arc::strong_count(&user.refill) > 1);
}

/// How many tokens one lease takes: a twentieth of the limit (at least 1, at most 1,000), so a
/// process runs ahead of the shared row by at most 5% of the limit.
fn lease_size(rate: Rate) -> u32 {
    (rate.limit / 20).clamp(1, 1_000)
}

/// How long a lease of `tokens` lives: the time they stand for, but at least [`MIN_LEASE`].
fn lease_life(rate: Rate, tokens: u32) -> Duration {
    Duration::from_secs_f64(rate.interval_secs() * f64::from(tokens)).max(MIN_LEASE)
}

/// PostgreSQL's answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Granted {
    /// This many tokens were taken (0 when none were asked for).
    Tokens(u32),
    /// None could be taken; the next fits after this long.
    Refused(Duration),
}

crate::statement! {
    /// Raises SQLSTATE 28000 unless session `$1` is a live session of user `$2`.
    CHECK_SESSION: System = "select assert_session_live(session_id => $1, owner => $2)";
    /// Makes sure key `$1` has a row, and gives back `$2` seconds of an expired lease.
    ENSURE_AND_REFUND: System = "insert into rate_limits as r (key, tat) values ($1, now())
         on conflict (key) do update set tat = r.tat - make_interval(secs => $2)";
    /// Takes as many of `$2` tokens as key `$1`'s budget holds (period `$3`, interval `$4`, in
    /// seconds); returns how many, and when none were, how long until one fits.
    TAKE: System = "with cur as (select greatest(tat, now()) as t from rate_limits where key = $1 for update),
              n as (select greatest(least($2::int8,
                        floor(extract(epoch from (now() + make_interval(secs => $3) - t))::float8
                              / $4::float8))::int8, 0::int8) as granted
                    from cur),
              upd as (update rate_limits
                      set tat = (select t from cur)
                                + make_interval(secs => $4::float8 * (select granted from n))
                      where key = $1
                      returning tat)
         select (select granted from n) as granted,
                (select greatest(extract(epoch from (tat + make_interval(secs => $4)
                                                    - make_interval(secs => $3) - now()))::float8, 0)
                 from upd) as wait";
}

/// Checks the caller's session, gives back `ask.refund` tokens, then takes as many of
/// `ask.take` tokens as the user's budget holds, in one round trip (the statements are pipelined
/// with the scope's opening and its commit). When the session check raises, the rest of the
/// transaction fails and nothing is charged. The row is locked while it is read and written, so
/// processes taking at once are counted one after another.
async fn take(db: &Db, caller: Caller, rate: Rate, ask: Ask) -> Result<Granted, db::Error> {
    let key = format!("api:user:{}", caller.user.0.hyphenated());
    let interval = rate.interval_secs();
    let period = rate.period.as_secs_f64();
    let refund = rate.interval_secs() * f64::from(ask.refund);
    let want = i64::from(ask.take);
    let tx = db.bookkeeping().await?;
    let ((), _, (granted, wait), ()) = futures_util::future::try_join4(
        async {
            tx.execute(&CHECK_SESSION, &[&caller.session, &caller.user])
                .await
                .map(|_| ())
        },
        tx.execute(&ENSURE_AND_REFUND, &[&key, &refund]),
        tx.row::<(Option<i64>, Option<f64>)>(&TAKE, &[&key, &want, &period, &interval]),
        tx.commit_queued(),
    )
    .await?;
    let granted = granted.unwrap_or(0);
    Ok(if granted > 0 || ask.take == 0 {
        Granted::Tokens(u32::try_from(granted).unwrap_or(0))
    } else {
        Granted::Refused(Duration::from_secs_f64(wait.unwrap_or(1.0).max(0.0)))
    })
}
