//! Alerts to Slack. Every server counts what alerts need ([`OpsCounts`]) and adds it to the
//! database each minute; then one of them (whichever takes the advisory lock, at most once a
//! minute for the whole deployment) reads the last minutes, applies the [`rules`], and posts what
//! fired. An alert still firing is posted again only after ALERT_COOLDOWN_MINUTES, as
//! "still firing ×N"; the daily digest once a day after ALERT_DIGEST_HOUR (UTC).
//!
//! The one alert that cannot go through the database is the database being unreachable: each
//! server posts that itself ([`Readiness`]), once per cooldown.
//!
//! Messages carry numbers and fixed sentences only: never an email address, a token or anything
//! a user wrote. Any value put into one goes through [`slack::escape`]. Staff-access grants are
//! posted when they open and when they end (see [`crate::support`]).

pub mod slack;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::{DateTime, Timelike, Utc};
use futures_util::future::try_join;
use tokio::sync::watch;

use crate::config::OpsConfig;
use crate::db::{self, Db};
use crate::state::AppState;
pub use slack::{Slack, escape};

/// How often each server adds its counts and the alerts are looked at.
pub const EVERY: Duration = Duration::from_secs(60);

/// Fewest requests in the window for the 5xx ratio to mean something.
pub const MIN_REQUESTS: i64 = 20;
/// Fewest finished turns in the window for the provider error ratio to mean something.
pub const MIN_TURNS: i64 = 5;
/// The oldest pending email may wait this long before it is an alert.
pub const OUTBOX_STUCK_SECONDS: f64 = 600.0;

/// Arbitrary, fixed key of the advisory lock one evaluation holds ("AIde_alr").
const LOCK_KEY: i64 = 0x41_49_64_65_5f_61_6c_72;

/// What a server counts between two flushes to `ops_counts`.
#[derive(Debug, Default)]
pub struct OpsCounts {
    requests: AtomicI64,
    server_errors: AtomicI64,
    signature_refusals: AtomicI64,
    webhook_failures: AtomicI64,
    emails_dead: AtomicI64,
}

/// Something counted for alerts besides requests.
#[derive(Debug, Clone, Copy)]
pub enum Counted {
    /// A Stripe webhook delivery refused for its signature.
    SignatureRefused,
    /// A signed Stripe event whose handling failed (Stripe will send it again).
    WebhookFailed,
    /// An email given up on.
    EmailDead,
}

impl OpsCounts {
    /// Counts one answered request.
    pub fn request(&self, status: StatusCode) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            self.server_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn add(&self, what: Counted) {
        self.counter(what).fetch_add(1, Ordering::Relaxed);
    }

    fn counter(&self, what: Counted) -> &AtomicI64 {
        match what {
            Counted::SignatureRefused => &self.signature_refusals,
            Counted::WebhookFailed => &self.webhook_failures,
            Counted::EmailDead => &self.emails_dead,
        }
    }

    fn all(&self) -> [(&'static str, &AtomicI64); 5] {
        [
            ("http.requests", &self.requests),
            ("http.5xx", &self.server_errors),
            ("stripe.signature_refused", &self.signature_refusals),
            ("stripe.webhook_failed", &self.webhook_failures),
            ("email.dead", &self.emails_dead),
        ]
    }

    /// Adds what was counted since the last flush to `ops_counts`; on failure keeps it for the
    /// next one.
    pub async fn flush(&self, db: &Db) -> Result<(), db::Error> {
        let taken: Vec<(&'static str, i64)> = self
            .all()
            .iter()
            .map(|(name, counter)| (*name, counter.swap(0, Ordering::AcqRel)))
            .filter(|(_, n)| *n > 0)
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = taken.iter().map(|(name, _)| *name).collect();
        let counts: Vec<i64> = taken.iter().map(|(_, n)| *n).collect();
        let written = async {
            let tx = db.system().await?;
            try_join(tx.execute(&FLUSH, &[&names, &counts]), tx.commit_queued()).await?;
            Ok::<(), db::Error>(())
        }
        .await;
        if written.is_err() {
            for ((_, counter), (_, n)) in self
                .all()
                .iter()
                .filter(|(name, _)| names.contains(name))
                .zip(taken.iter())
            {
                counter.fetch_add(*n, Ordering::AcqRel);
            }
        }
        written
    }
}

crate::statement! {
    FLUSH: System = "insert into ops_counts (minute, name, count)
         select date_trunc('minute', now()), n, c from unnest($1::text[], $2::bigint[]) as t(n, c)
         on conflict (minute, name) do update set count = ops_counts.count + excluded.count";
    LOCK: System = "select pg_try_advisory_xact_lock($1)";
    /// Counts of about the last five minutes (the current minute and the five before it).
    RECENT: System = "select name, sum(count)::bigint from ops_counts
         where minute >= date_trunc('minute', now()) - interval '5 minutes' group by name";
    /// Finished turns of the last fifteen minutes, and those the model provider failed.
    TURNS: System = "select count(*),
            count(*) filter (where status = 'failed' and error_code like 'AI\\_%')
         from ai_turns where created_at >= now() - interval '15 minutes' and status <> 'running'";
    PAYMENTS_FAILED: System = "select count(*) from stripe_events
         where type = 'invoice.payment_failed' and received_at >= now() - interval '5 minutes'";
    OUTBOX_OLDEST: System = "select coalesce(extract(epoch from now() - min(created_at)), 0)::float8
         from email_outbox where status = 'pending'";
    STATES: System = "select key, firing, last_sent_at, suppressed from alert_state";
    SAVE: System = "insert into alert_state (key, firing, last_sent_at, suppressed)
         values ($1, $2, $3, $4)
         on conflict (key) do update set firing = excluded.firing,
             last_sent_at = excluded.last_sent_at, suppressed = excluded.suppressed";
    DIGEST_FIGURES: System = "select sign_ups, pro_started, pro_ended, turns, turns_failed, cost_micros
         from ops_digest($1)";
    PRUNE: System = "delete from ops_counts where minute < now() - interval '2 days'";
    /// Staff-access grants that ran out since the last evaluation (closed ones are posted when
    /// closed).
    GRANTS_ENDED: System = "update support_grants set end_posted = true
         where not end_posted and expires_at <= now()
         returning id, category";
}

/// What the rules look at: the deployment's last minutes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Situation {
    /// Requests and 5xx answers (503 excepted) of about the last five minutes.
    pub requests: i64,
    pub server_errors: i64,
    pub signature_refusals: i64,
    pub webhook_failures: i64,
    pub emails_dead: i64,
    /// `invoice.payment_failed` events of the last five minutes.
    pub payments_failed: i64,
    /// Finished turns of the last fifteen minutes, and those failed by the model provider.
    pub turns: i64,
    pub turns_provider_failed: i64,
    /// How long the oldest pending email has waited.
    pub outbox_oldest_seconds: f64,
}

/// An alert that fired: its key (for deduplication) and its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub key: &'static str,
    pub text: String,
}

/// Every rule's key, in the order messages are posted.
pub const KEYS: [&str; 7] = [
    "http.5xx",
    "ai.provider_errors",
    "email.outbox_stuck",
    "email.dead_letter",
    "stripe.signature",
    "stripe.webhook_failed",
    "stripe.payment_failed",
];

fn percent(part: i64, whole: i64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

/// The alerts `situation` fires.
pub fn rules(s: &Situation, config: &OpsConfig) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let mut fire = |key: &'static str, text: String| alerts.push(Alert { key, text });
    if s.requests >= MIN_REQUESTS
        && s.server_errors * 100 > i64::from(config.alert_5xx_percent) * s.requests
    {
        fire(
            "http.5xx",
            format!(
                ":rotating_light: *Errors:* {} of {} requests ({:.1}%) answered 5xx in the last 5 minutes (threshold {}%). Sentry has each one with its route; check `/ready` and the database.",
                s.server_errors,
                s.requests,
                percent(s.server_errors, s.requests),
                config.alert_5xx_percent
            ),
        );
    }
    if s.turns >= MIN_TURNS
        && s.turns_provider_failed * 100 > i64::from(config.alert_ai_error_percent) * s.turns
    {
        fire(
            "ai.provider_errors",
            format!(
                ":robot_face: *Model provider failing:* {} of {} turns ({:.1}%) failed at the model provider in the last 15 minutes (threshold {}%); they were given back. Check the provider's status page, AI_API_KEY and its spending limit.",
                s.turns_provider_failed,
                s.turns,
                percent(s.turns_provider_failed, s.turns),
                config.alert_ai_error_percent
            ),
        );
    }
    if s.outbox_oldest_seconds > OUTBOX_STUCK_SECONDS {
        fire(
            "email.outbox_stuck",
            format!(
                ":envelope: *Email delayed:* the oldest pending email has waited {} minutes. Sign-in links are not arriving: check Resend's status and RESEND_API_KEY.",
                (s.outbox_oldest_seconds / 60.0).floor()
            ),
        );
    }
    if s.emails_dead > 0 {
        fire(
            "email.dead_letter",
            format!(
                ":envelope: *Email given up on:* {} email(s) dead-lettered in the last 5 minutes. Sentry has the reason; check EMAIL_FROM's domain and Resend.",
                s.emails_dead
            ),
        );
    }
    if s.signature_refusals > 0 {
        fire(
            "stripe.signature",
            format!(
                ":lock: *Stripe webhook signature refused* {} time(s) in the last 5 minutes: STRIPE_WEBHOOK_SECRET may not match the endpoint's signing secret, or someone is posting forged events.",
                s.signature_refusals
            ),
        );
    }
    if s.webhook_failures > 0 {
        fire(
            "stripe.webhook_failed",
            format!(
                ":credit_card: *Stripe webhook failed* {} time(s) in the last 5 minutes; Stripe sends them again. Sentry has the errors; plans may be out of date until one succeeds.",
                s.webhook_failures
            ),
        );
    }
    if s.payments_failed > 0 {
        fire(
            "stripe.payment_failed",
            format!(
                ":credit_card: *Payments failed:* {} in the last 5 minutes. Each customer was emailed; a burst may mean a problem with Stripe or the card network.",
                s.payments_failed
            ),
        );
    }
    alerts
}

/// An alert's state as last saved.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub firing: bool,
    pub last_sent_at: Option<DateTime<Utc>>,
    pub suppressed: i32,
}

/// What to do with a rule this evaluation: its new state and, when a message goes out, its
/// prefix ("" the first time, "Still firing ×N" after a cooldown).
pub fn decide(
    state: &State,
    fired: bool,
    now: DateTime<Utc>,
    cooldown: Duration,
) -> (State, Option<String>) {
    if !fired {
        return (
            State {
                firing: false,
                last_sent_at: state.last_sent_at,
                suppressed: 0,
            },
            None,
        );
    }
    let cooled = state
        .last_sent_at
        .is_none_or(|at| now.signed_duration_since(at).to_std().unwrap_or_default() >= cooldown);
    if cooled {
        let prefix = if state.firing && state.suppressed > 0 {
            format!(
                "Still firing (×{} checks since the last message): ",
                state.suppressed + 1
            )
        } else {
            String::new()
        };
        (
            State {
                firing: true,
                last_sent_at: Some(now),
                suppressed: 0,
            },
            Some(prefix),
        )
    } else {
        (
            State {
                firing: true,
                last_sent_at: state.last_sent_at,
                suppressed: state.suppressed.saturating_add(1),
            },
            None,
        )
    }
}

/// The daily digest's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Digest {
    pub sign_ups: i64,
    pub pro_started: i64,
    pub pro_ended: i64,
    pub turns: i64,
    pub turns_failed: i64,
    pub cost_micros: i64,
}

impl Digest {
    pub fn text(&self) -> String {
        format!(
            ":bar_chart: *Daily digest*, last 24 hours: {} sign-up(s), {} Pro conversion(s), {} Pro cancellation(s), {} turn(s) ({} failed), model cost ${:.2}.",
            self.sign_ups,
            self.pro_started,
            self.pro_ended,
            self.turns,
            self.turns_failed,
            self.cost_micros as f64 / 1e6
        )
    }
}

/// Whether the digest is due at `now`: past the digest hour, and not yet sent today (UTC).
pub fn digest_due(state: &State, now: DateTime<Utc>, hour: u32) -> bool {
    now.hour() >= hour
        && state
            .last_sent_at
            .is_none_or(|at| at.date_naive() < now.date_naive())
}

/// Key of the digest's state, and of the evaluation's own (when it last ran).
const DIGEST: &str = "digest";
const EVALUATED: &str = "evaluated";

/// One evaluation for the whole deployment, as of `now`: unless another server holds the lock or
/// evaluated less than 50 seconds ago, reads the situation, decides, saves the states and then
/// posts. Returns the messages posted (and not).
pub async fn evaluate(
    db: &Db,
    config: &OpsConfig,
    slack: &Slack,
    now: DateTime<Utc>,
) -> Result<Vec<(String, bool)>, db::Error> {
    let tx = db.system().await?;
    let locked: bool = tx.value(&LOCK, &[&LOCK_KEY]).await?;
    if !locked {
        tx.rollback();
        return Ok(Vec::new());
    }
    let states: Vec<(String, bool, Option<DateTime<Utc>>, i32)> = tx.rows(&STATES, &[]).await?;
    let state_of = |key: &str| {
        states
            .iter()
            .find(|(k, ..)| k == key)
            .map(|(_, firing, last_sent_at, suppressed)| State {
                firing: *firing,
                last_sent_at: *last_sent_at,
                suppressed: *suppressed,
            })
            .unwrap_or_default()
    };
    let evaluated = state_of(EVALUATED);
    if evaluated
        .last_sent_at
        .is_some_and(|at| now.signed_duration_since(at) < chrono::Duration::seconds(50))
    {
        tx.rollback();
        return Ok(Vec::new());
    }
    let recent: Vec<(String, i64)> = tx.rows(&RECENT, &[]).await?;
    let count = |name: &str| {
        recent
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    };
    let (turns, turns_provider_failed): (i64, i64) = tx.row(&TURNS, &[]).await?;
    let situation = Situation {
        requests: count("http.requests"),
        server_errors: count("http.5xx"),
        signature_refusals: count("stripe.signature_refused"),
        webhook_failures: count("stripe.webhook_failed"),
        emails_dead: count("email.dead"),
        payments_failed: tx.value(&PAYMENTS_FAILED, &[]).await?,
        turns,
        turns_provider_failed,
        outbox_oldest_seconds: tx.value(&OUTBOX_OLDEST, &[]).await?,
    };
    let fired = rules(&situation, config);
    let cooldown = Duration::from_secs(u64::from(config.alert_cooldown_minutes) * 60);
    let mut messages = Vec::new();
    for key in KEYS {
        let alert = fired.iter().find(|a| a.key == key);
        let before = state_of(key);
        let (after, prefix) = decide(&before, alert.is_some(), now, cooldown);
        if let (Some(prefix), Some(alert)) = (prefix, alert) {
            messages.push(format!("{prefix}{}", alert.text));
        }
        if after != before {
            save(&tx, key, &after).await?;
        }
    }
    let digest = state_of(DIGEST);
    if digest_due(&digest, now, config.alert_digest_hour) {
        let since = now - chrono::Duration::hours(24);
        let (sign_ups, pro_started, pro_ended, turns, turns_failed, cost_micros) =
            tx.row(&DIGEST_FIGURES, &[&since]).await?;
        messages.push(
            Digest {
                sign_ups,
                pro_started,
                pro_ended,
                turns,
                turns_failed,
                cost_micros,
            }
            .text(),
        );
        save(
            &tx,
            DIGEST,
            &State {
                firing: false,
                last_sent_at: Some(now),
                suppressed: 0,
            },
        )
        .await?;
    }
    let ended: Vec<(uuid::Uuid, String)> = tx.rows(&GRANTS_ENDED, &[]).await?;
    for (id, category) in ended {
        messages.push(format!(
            ":white_check_mark: *Staff access ended*: grant `{id}` ({}) ran out its time.",
            escape(&category)
        ));
    }
    save(
        &tx,
        EVALUATED,
        &State {
            firing: false,
            last_sent_at: Some(now),
            suppressed: 0,
        },
    )
    .await?;
    tx.execute(&PRUNE, &[]).await?;
    tx.commit().await?;
    // After the commit: a server evaluating next sees these as sent.
    let mut posted = Vec::with_capacity(messages.len());
    for message in messages {
        let ok = slack.post(&message).await;
        posted.push((message, ok));
    }
    Ok(posted)
}

async fn save(tx: &db::SystemTx, key: &str, state: &State) -> Result<(), db::Error> {
    tx.execute(
        &SAVE,
        &[&key, &state.firing, &state.last_sent_at, &state.suppressed],
    )
    .await?;
    Ok(())
}

/// This server's own view of whether it can reach the database, for the one alert that cannot
/// be agreed through it.
#[derive(Debug, Default)]
pub struct Readiness {
    failing_since: Option<Instant>,
    last_sent: Option<Instant>,
    checks_failed: u32,
}

/// Readiness must fail this long (two checks a minute apart) before it is an alert.
pub const NOT_READY_FOR: Duration = Duration::from_secs(60);

impl Readiness {
    /// After a readiness check at `now`: the message to post, if any.
    pub fn observe(&mut self, ready: bool, now: Instant, cooldown: Duration) -> Option<String> {
        if ready {
            self.failing_since = None;
            self.checks_failed = 0;
            return None;
        }
        let since = *self.failing_since.get_or_insert(now);
        self.checks_failed += 1;
        let long_enough = now.duration_since(since) >= NOT_READY_FOR;
        let cooled = self
            .last_sent
            .is_none_or(|at| now.duration_since(at) >= cooldown);
        if long_enough && cooled {
            self.last_sent = Some(now);
            Some(format!(
                ":red_circle: *Not ready:* server `{}` has not reached the database for {} minute(s) ({} failed checks); requests that need it answer 503. Check the database's health, connection limit and network.",
                escape(&host_name()),
                now.duration_since(since).as_secs() / 60,
                self.checks_failed
            ))
        } else {
            None
        }
    }
}

/// This machine's name, for the one alert each server sends itself.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "unknown".to_string())
}

/// Every [`EVERY`] until `shutdown` turns true: adds this server's counts, checks its own
/// readiness, and takes its turn at evaluating the alerts. Runs only with SLACK_WEBHOOK set.
pub async fn run(state: AppState, slack: Arc<Slack>, mut shutdown: watch::Receiver<bool>) {
    let mut readiness = Readiness::default();
    let cooldown = Duration::from_secs(u64::from(state.config.ops.alert_cooldown_minutes) * 60);
    loop {
        tokio::select! {
            () = tokio::time::sleep(EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        let ready = matches!(
            tokio::time::timeout(Duration::from_secs(2), state.db.ping()).await,
            Ok(Ok(()))
        );
        if let Some(message) = readiness.observe(ready, Instant::now(), cooldown) {
            slack.post(&message).await;
        }
        if !ready {
            continue;
        }
        if let Err(e) = state.ops_counts.flush(&state.db).await {
            tracing::warn!(error = %e, "alerts: could not add this server's counts");
        }
        if let Err(e) = evaluate(&state.db, &state.config.ops, &slack, Utc::now()).await {
            tracing::warn!(error = %e, "alerts: evaluation failed; will try again");
            crate::sentry::job_failed("alerts", &e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> OpsConfig {
        crate::config::Config::from_vars([("JWT_SECRET", "x".repeat(32))])
            .expect("valid")
            .ops
    }

    #[test]
    fn each_rule_fires_on_its_situation_only() {
        let config = config();
        assert!(rules(&Situation::default(), &config).is_empty());
        let cases: [(Situation, &str); 7] = [
            (
                Situation {
                    requests: 100,
                    server_errors: 6,
                    ..Situation::default()
                },
                "http.5xx",
            ),
            (
                Situation {
                    turns: 10,
                    turns_provider_failed: 3,
                    ..Situation::default()
                },
                "ai.provider_errors",
            ),
            (
                Situation {
                    outbox_oldest_seconds: 601.0,
                    ..Situation::default()
                },
                "email.outbox_stuck",
            ),
            (
                Situation {
                    emails_dead: 1,
                    ..Situation::default()
                },
                "email.dead_letter",
            ),
            (
                Situation {
                    signature_refusals: 1,
                    ..Situation::default()
                },
                "stripe.signature",
            ),
            (
                Situation {
                    webhook_failures: 2,
                    ..Situation::default()
                },
                "stripe.webhook_failed",
            ),
            (
                Situation {
                    payments_failed: 1,
                    ..Situation::default()
                },
                "stripe.payment_failed",
            ),
        ];
        for (situation, key) in cases {
            let fired = rules(&situation, &config);
            assert_eq!(fired.len(), 1, "{key}: {fired:?}");
            assert_eq!(fired[0].key, key);
        }
        // Below the thresholds, or too few to judge.
        for quiet in [
            Situation {
                requests: 100,
                server_errors: 5,
                ..Situation::default()
            },
            Situation {
                requests: 10,
                server_errors: 10,
                ..Situation::default()
            },
            Situation {
                turns: 4,
                turns_provider_failed: 4,
                ..Situation::default()
            },
            Situation {
                outbox_oldest_seconds: 599.0,
                ..Situation::default()
            },
        ] {
            assert!(rules(&quiet, &config).is_empty(), "{quiet:?}");
        }
    }

    #[test]
    fn an_alert_still_firing_is_posted_again_only_after_the_cooldown() {
        let cooldown = Duration::from_secs(1800);
        let t0 = Utc::now();
        let (s1, first) = decide(&State::default(), true, t0, cooldown);
        assert_eq!(first.as_deref(), Some(""));
        let mut state = s1;
        for minute in 1..30 {
            let (next, sent) = decide(
                &state,
                true,
                t0 + chrono::Duration::minutes(minute),
                cooldown,
            );
            assert_eq!(sent, None, "minute {minute}");
            state = next;
        }
        assert_eq!(state.suppressed, 29);
        let (after, again) = decide(&state, true, t0 + chrono::Duration::minutes(30), cooldown);
        assert_eq!(
            again.as_deref(),
            Some("Still firing (×30 checks since the last message): ")
        );
        assert_eq!(after.suppressed, 0);
        let (quiet, none) = decide(&after, false, t0 + chrono::Duration::minutes(31), cooldown);
        assert!(none.is_none() && !quiet.firing);
    }

    #[test]
    fn the_digest_is_due_once_a_day_after_its_hour() {
        let at = |h: u32, d: u32| {
            chrono::NaiveDate::from_ymd_opt(2026, 11, d)
                .and_then(|d| d.and_hms_opt(h, 5, 0))
                .map(|t| t.and_utc())
                .expect("valid time")
        };
        assert!(!digest_due(&State::default(), at(7, 29), 8));
        assert!(digest_due(&State::default(), at(8, 29), 8));
        let sent = State {
            last_sent_at: Some(at(8, 29)),
            ..State::default()
        };
        assert!(!digest_due(&sent, at(23, 29), 8));
        assert!(!digest_due(&sent, at(7, 30), 8));
        assert!(digest_due(&sent, at(8, 30), 8));
    }

    #[test]
    fn readiness_alerts_after_a_minute_of_failing_then_once_per_cooldown() {
        let cooldown = Duration::from_secs(1800);
        let mut readiness = Readiness::default();
        let t0 = Instant::now();
        assert!(readiness.observe(false, t0, cooldown).is_none());
        let message = readiness
            .observe(false, t0 + Duration::from_secs(60), cooldown)
            .expect("fires after a minute");
        assert!(message.contains("has not reached the database for 1 minute(s)"));
        for minute in 2..30 {
            assert!(
                readiness
                    .observe(false, t0 + Duration::from_secs(60 * minute), cooldown)
                    .is_none()
            );
        }
        assert!(
            readiness
                .observe(false, t0 + Duration::from_secs(60 * 31), cooldown)
                .is_some()
        );
        assert!(
            readiness
                .observe(true, t0 + Duration::from_secs(60 * 32), cooldown)
                .is_none()
        );
    }
}
