//! Alerts to Slack through a stand-in that checks every request (a JSON body with exactly a
//! `text`, no unescaped control characters, at least a second between posts) and can answer 429
//! or 500. Each rule is fed its situation in the database and posts exactly once; a second
//! server's evaluation at the same time posts nothing more.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aide::alerts::{self, Slack};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use chrono::{DateTime, Utc};
use secrecy::SecretString;

use crate::app::{Req, TestApp};
use crate::support::seed_user;

const HOOK_PATH: &str = "/services/T000/B000/abcdefXYZ";

#[derive(Default)]
struct Inner {
    /// Each accepted message's text.
    texts: Vec<String>,
    /// When each request arrived.
    arrivals: Vec<Instant>,
    /// Answers to give first: (status, Retry-After).
    script: std::collections::VecDeque<(u16, Option<u64>)>,
    /// Anything wrong with a request: any entry fails the test.
    problems: Vec<String>,
}

#[derive(Clone, Default)]
pub(crate) struct SlackStub(Arc<Mutex<Inner>>);

impl SlackStub {
    pub(crate) async fn start() -> (String, SlackStub) {
        let stub = SlackStub::default();
        let app = Router::new()
            .route(HOOK_PATH, post(receive))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (format!("http://{addr}{HOOK_PATH}"), stub)
    }

    fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.0.lock().expect("lock").script.extend(answers);
    }

    /// The texts accepted so far; fails on any problem seen.
    pub(crate) fn texts(&self) -> Vec<String> {
        let inner = self.0.lock().expect("lock");
        assert!(inner.problems.is_empty(), "{:?}", inner.problems);
        inner.texts.clone()
    }

    fn requests(&self) -> usize {
        self.0.lock().expect("lock").arrivals.len()
    }
}

async fn receive(State(stub): State<SlackStub>, headers: HeaderMap, body: Bytes) -> Response {
    let mut inner = stub.0.lock().expect("lock");
    let now = Instant::now();
    if let Some(last) = inner.arrivals.last().copied()
        && now.duration_since(last) < Duration::from_millis(990)
    {
        inner.problems.push(format!(
            "posted {:?} after the previous one",
            now.duration_since(last)
        ));
    }
    inner.arrivals.push(now);
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/json") {
        inner.problems.push("not application/json".into());
    }
    let text = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(o)) if o.len() == 1 && o["text"].is_string() => {
            o["text"].as_str().unwrap_or_default().to_string()
        }
        _ => {
            inner
                .problems
                .push(format!("not {{\"text\": ...}}: {body:?}"));
            return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
        }
    };
    // Our messages hold no links or mentions: every control character must arrive escaped.
    let unescaped_amp = text.match_indices('&').any(|(i, _)| {
        !["&amp;", "&lt;", "&gt;"]
            .iter()
            .any(|e| text[i..].starts_with(e))
    });
    if text.contains('<') || text.contains('>') || unescaped_amp {
        inner
            .problems
            .push(format!("unescaped control characters: {text}"));
    }
    if let Some((status, retry_after)) = inner.script.pop_front() {
        let mut answer = (
            StatusCode::from_u16(status).expect("status"),
            "rate_limited or rollup_error",
        )
            .into_response();
        if let Some(secs) = retry_after {
            answer
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("header"));
        }
        return answer;
    }
    inner.texts.push(text);
    (StatusCode::OK, "ok").into_response()
}

#[tokio::test]
async fn the_sender_escapes_keeps_a_second_apart_honours_retry_after_and_gives_up() {
    let (url, stub) = SlackStub::start().await;
    let slack = Slack::new(&SecretString::from(url));
    let title = "<!channel> & <https://evil.example|click>";
    assert!(
        slack
            .post(&format!("page renamed to {}", alerts::escape(title)))
            .await
    );
    assert!(slack.post("second message").await);
    assert_eq!(
        stub.texts(),
        [
            "page renamed to &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;",
            "second message"
        ]
    );

    // 429 with Retry-After: 2, then accepted: the retry waits the two seconds.
    stub.script(&[(429, Some(2))]);
    let started = Instant::now();
    assert!(slack.post("after a 429").await);
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(stub.texts().last().map(String::as_str), Some("after a 429"));

    // Anything but 200 fails; tried ATTEMPTS times, then given up on and counted.
    let before = stub.requests();
    stub.script(&[(500, None), (500, None), (500, None)]);
    assert!(!slack.post("lost").await);
    assert_eq!(stub.requests() - before, alerts::slack::ATTEMPTS as usize);
    assert_eq!(slack.failed.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(slack.sent.load(std::sync::atomic::Ordering::Relaxed), 3);
    // A 500 then a 200: one message.
    stub.script(&[(500, None)]);
    assert!(slack.post("second try").await);
    assert_eq!(stub.texts().len(), 4);
}

/// A moment before the digest's hour (08:00 UTC by default), so only the rule under test posts.
fn early_today() -> DateTime<Utc> {
    Utc::now()
        .date_naive()
        .and_hms_opt(0, 30, 0)
        .expect("time")
        .and_utc()
}

async fn app_with_slack(url: &str) -> TestApp {
    TestApp::with(&[("SLACK_WEBHOOK", url)]).await
}

async fn evaluate(app: &TestApp, now: DateTime<Utc>) -> Vec<String> {
    let slack = app.state.slack.clone().expect("Slack is on");
    alerts::evaluate(&app.t.db, &app.state.config.ops, &slack, now)
        .await
        .expect("evaluate")
        .into_iter()
        .map(|(text, posted)| {
            assert!(posted, "{text}");
            text
        })
        .collect()
}

/// Feeds one situation, evaluates twice a couple of minutes apart (still firing: inside the
/// cooldown), and expects exactly one post, containing `expect`.
async fn fires_once(app: &TestApp, stub: &SlackStub, expect: &str) {
    let now = early_today();
    let first = evaluate(app, now).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].contains(expect), "{first:?}");
    let again = evaluate(app, now + chrono::Duration::minutes(2)).await;
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(stub.texts().len(), 1);
}

#[tokio::test]
async fn each_rule_posts_exactly_once_for_its_situation() {
    // 5xx ratio: counted by the front layer, added to the database by the flush.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    for n in 0..40 {
        let status = if n % 4 == 0 { 500 } else { 200 };
        app.state
            .ops_counts
            .request(StatusCode::from_u16(status).expect("status"));
    }
    app.state.ops_counts.flush(&app.t.db).await.expect("flush");
    fires_once(&app, &stub, "10 of 40 requests (25.0%) answered 5xx").await;

    // Model provider errors: turns failed at the provider, in the database.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    let owned = seed_user(&app.t, "turns@example.com").await;
    let owner = app.t.owner_conn().await;
    for (n, (status, code)) in [
        ("failed", Some("AI_UNAVAILABLE")),
        ("failed", Some("AI_TIMEOUT")),
        ("completed", None),
        ("completed", None),
        ("failed", Some("TURN_ABANDONED")),
    ]
    .into_iter()
    .enumerate()
    {
        owner
            .execute(
                "insert into ai_turns (aide_id, user_id, client_turn_id, status, user_message_id,
                     base_revision, week_start, provider, model, prompt_version, deadline,
                     error_code, finished_at)
                 values ($1, $2, $3, $4, 1, 0, now(), 'openai', 'gpt-4.1', 'v', now(), $5, now())",
                &[
                    &owned.aide,
                    &owned.user.0,
                    &format!("turn-{n}"),
                    &status,
                    &code,
                ],
            )
            .await
            .expect("insert turn");
    }
    fires_once(
        &app,
        &stub,
        "2 of 5 turns (40.0%) failed at the model provider",
    )
    .await;

    // The outbox's oldest pending email waiting more than ten minutes.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    app.t
        .owner_conn()
        .await
        .execute(
            "insert into email_outbox (kind, to_address, subject, text_body, created_at)
             values ('sign_in', 'late@example.com', 'Sign in', 'x', now() - interval '11 minutes')",
            &[],
        )
        .await
        .expect("insert email");
    fires_once(&app, &stub, "has waited 11 minutes").await;
    assert!(!stub.texts()[0].contains("late@example.com"));

    // A dead-lettered email.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    app.state.ops_counts.add(alerts::Counted::EmailDead);
    app.state.ops_counts.flush(&app.t.db).await.expect("flush");
    fires_once(&app, &stub, "1 email(s) dead-lettered").await;

    // Stripe signature refusals: real deliveries with a bad signature.
    let (url, stub) = SlackStub::start().await;
    let app = TestApp::with(&[
        ("SLACK_WEBHOOK", url.as_str()),
        ("STRIPE_SECRET_KEY", crate::stripe_stub::SECRET_KEY),
        ("STRIPE_WEBHOOK_SECRET", crate::stripe_stub::WEBHOOK_SECRET),
        ("STRIPE_PRICE_ID", crate::stripe_stub::PRICE),
        ("STRIPE_API_URL", "http://127.0.0.1:9"),
    ])
    .await;
    for _ in 0..2 {
        let refused = app
            .send(
                Req::post("/stripe/webhook")
                    .header("stripe-signature", "t=1,v1=00")
                    .raw_body("{}"),
            )
            .await;
        assert_eq!(refused.status, StatusCode::BAD_REQUEST);
    }
    app.state.ops_counts.flush(&app.t.db).await.expect("flush");
    fires_once(&app, &stub, "signature refused* 2 time(s)").await;

    // A webhook whose handling failed.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    app.state.ops_counts.add(alerts::Counted::WebhookFailed);
    app.state.ops_counts.flush(&app.t.db).await.expect("flush");
    fires_once(&app, &stub, "Stripe webhook failed* 1 time(s)").await;

    // A failed payment, as recorded from Stripe's event.
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    app.t
        .owner_conn()
        .await
        .execute(
            "insert into stripe_events (id, type, outcome) values ('evt_1', 'invoice.payment_failed', 'applied')",
            &[],
        )
        .await
        .expect("insert event");
    fires_once(&app, &stub, "*Payments failed:* 1").await;
}

#[tokio::test]
async fn an_alert_still_firing_after_the_cooldown_is_posted_once_more_as_still_firing() {
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "insert into email_outbox (kind, to_address, subject, text_body, created_at)
             values ('sign_in', 'late@example.com', 'Sign in', 'x', now() - interval '11 minutes')",
            &[],
        )
        .await
        .expect("insert email");
    let t0 = early_today();
    assert_eq!(evaluate(&app, t0).await.len(), 1);
    for minute in 1..30 {
        assert!(
            evaluate(&app, t0 + chrono::Duration::minutes(minute))
                .await
                .is_empty()
        );
    }
    let again = evaluate(&app, t0 + chrono::Duration::minutes(30)).await;
    assert_eq!(again.len(), 1);
    assert!(
        again[0].starts_with("Still firing (×30 checks since the last message): "),
        "{again:?}"
    );
    assert_eq!(stub.texts().len(), 2);
}

#[tokio::test]
async fn two_servers_evaluating_at_once_post_once() {
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    // A second server on the same database, with its own sender.
    let other = Slack::new(&SecretString::from(url.clone()));
    app.state.ops_counts.add(alerts::Counted::WebhookFailed);
    app.state.ops_counts.flush(&app.t.db).await.expect("flush");
    let now = early_today();
    let slack = app.state.slack.clone().expect("Slack is on");
    let config = &app.state.config.ops;
    let (a, b) = tokio::join!(
        alerts::evaluate(&app.t.db, config, &slack, now),
        alerts::evaluate(&app.t.db, config, &other, now),
    );
    assert_eq!(a.expect("a").len() + b.expect("b").len(), 1);
    // And one just after (under a minute later) does nothing either.
    assert!(
        alerts::evaluate(
            &app.t.db,
            config,
            &other,
            now + chrono::Duration::seconds(20)
        )
        .await
        .expect("evaluate")
        .is_empty()
    );
    assert_eq!(stub.texts().len(), 1);
}

#[tokio::test]
async fn the_digest_is_posted_once_a_day_after_its_hour_with_the_days_figures() {
    let (url, stub) = SlackStub::start().await;
    let app = app_with_slack(&url).await;
    crate::support::seed_user(&app.t, "digest@example.com").await;
    assert!(
        evaluate(&app, early_today()).await.is_empty(),
        "not before 08:00 UTC"
    );
    let nine = early_today() + chrono::Duration::hours(8) + chrono::Duration::minutes(30);
    let digest = evaluate(&app, nine).await;
    assert_eq!(digest.len(), 1, "{digest:?}");
    assert!(
        digest[0].starts_with(":bar_chart: *Daily digest*"),
        "{digest:?}"
    );
    assert!(
        digest[0].contains("1 sign-up(s), 0 Pro conversion(s), 0 Pro cancellation(s), 0 turn(s) (0 failed), model cost $0.00."),
        "{digest:?}"
    );
    assert!(!digest[0].contains("digest@example.com"));
    assert!(
        evaluate(&app, nine + chrono::Duration::hours(3))
            .await
            .is_empty()
    );
    assert_eq!(
        evaluate(&app, nine + chrono::Duration::hours(24))
            .await
            .len(),
        1
    );
    assert_eq!(stub.texts().len(), 2);
}
