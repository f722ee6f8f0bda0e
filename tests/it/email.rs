//! Email delivery: the outbox, the worker, Resend's request shape (against a checking stand-in),
//! retries, dead letters, and delivery across a restart.

use std::sync::Arc;
use std::time::Duration;

use aide::db::FromRow;
use aide::email::{Mailer, Worker, outbox};
use axum::http::StatusCode;
use serde_json::json;
use tokio::sync::Notify;

use crate::app::{Req, TestApp};
use crate::resend_stub::{API_KEY, ResendStub};
use crate::support::{exec, scalar};

async fn app_with_resend(stub: &ResendStub) -> TestApp {
    TestApp::with(&[
        ("RESEND_API_KEY", API_KEY),
        ("RESEND_API_URL", &stub.url),
        ("EMAIL_FROM", "AIde <login@example.com>"),
    ])
    .await
}

fn worker(app: &TestApp) -> Worker {
    let mailer = Mailer::from_config(&app.state.config).expect("mailer");
    Worker::new(app.t.db.clone(), mailer, Arc::new(Notify::new()))
}

/// (status, attempts, has bodies, seconds until the next attempt)
async fn outbox_row(app: &TestApp) -> (String, i32, bool, f64) {
    let tx = app.t.db.system().await.expect("system");
    let rows = tx
        .unregistered(
            "select status, attempts, html_body is not null and text_body is not null,
                    extract(epoch from next_attempt_at - now())::float8
             from email_outbox order by created_at desc limit 1",
            &[],
        )
        .await
        .expect("outbox row");
    FromRow::from_row(rows.first().expect("outbox row")).expect("outbox row")
}

/// Makes the newest message due now, as if its wait had passed.
async fn make_due(app: &TestApp) {
    let tx = app.t.db.system().await.expect("system");
    exec(&tx, "update email_outbox set next_attempt_at = now()", &[])
        .await
        .expect("due");
    tx.commit().await.expect("commit");
}

async fn request_link(app: &TestApp, email: &str) {
    let answer = app
        .send(Req::post("/auth/send").json(json!({"email": email})))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
}

#[tokio::test]
async fn resend_gets_a_well_formed_request_and_the_bodies_are_erased_after() {
    let stub = ResendStub::start().await;
    let app = app_with_resend(&stub).await;
    request_link(&app, "na@example.com").await;
    let (token, code, _) = app.last_email("na@example.com").await;

    assert_eq!(worker(&app).deliver_due().await.expect("deliver"), 1);
    assert_eq!(stub.problems(), Vec::<String>::new());
    let received = stub.received();
    assert_eq!(received.len(), 1);
    let body = &received[0].body;
    assert_eq!(body["from"], "AIde <login@example.com>");
    assert_eq!(body["to"], json!(["na@example.com"]));
    assert_eq!(body["subject"], "Your AIde sign-in link");
    let text = body["text"].as_str().expect("text");
    let html = body["html"].as_str().expect("html");
    assert!(text.contains(&token) && html.contains(&token));
    assert!(text.contains(&format!("{} {}", &code[..3], &code[3..])));
    assert!(text.contains("15 minutes") && html.contains("15 minutes"));

    let (status, attempts, bodies, _) = outbox_row(&app).await;
    assert_eq!((status.as_str(), attempts, bodies), ("sent", 1, false));
    // Nothing left to send.
    assert_eq!(worker(&app).deliver_due().await.expect("deliver"), 0);
}

#[tokio::test]
async fn failures_are_retried_with_backoff_honouring_retry_after_under_one_idempotency_key() {
    let stub = ResendStub::start().await;
    stub.script(&[(500, None), (429, Some(120)), (200, None)]);
    let app = app_with_resend(&stub).await;
    request_link(&app, "ob@example.com").await;
    let w = worker(&app);

    w.deliver_due().await.expect("first try");
    let (status, attempts, bodies, wait) = outbox_row(&app).await;
    assert_eq!((status.as_str(), attempts, bodies), ("pending", 1, true));
    assert!((1.0..=3.0).contains(&wait), "backoff after a 500: {wait}s");
    // Not due yet: the worker leaves it alone.
    assert_eq!(w.deliver_due().await.expect("not due"), 0);

    make_due(&app).await;
    w.deliver_due().await.expect("second try");
    let (status, attempts, _, wait) = outbox_row(&app).await;
    assert_eq!((status.as_str(), attempts), ("pending", 2));
    assert!(
        (110.0..=121.0).contains(&wait),
        "Retry-After: 120 honoured: {wait}s"
    );

    make_due(&app).await;
    w.deliver_due().await.expect("third try");
    let (status, attempts, bodies, _) = outbox_row(&app).await;
    assert_eq!((status.as_str(), attempts, bodies), ("sent", 3, false));

    let received = stub.received();
    let statuses: Vec<u16> = received.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 429, 200]);
    let keys: std::collections::HashSet<_> =
        received.iter().map(|r| r.idempotency_key.clone()).collect();
    assert_eq!(keys.len(), 1, "one idempotency key across retries");
    assert_eq!(stub.delivered(), 1);
    assert_eq!(stub.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let stub = ResendStub::start().await;
    stub.script(&[(422, None)]);
    let app = app_with_resend(&stub).await;
    request_link(&app, "pa@example.com").await;
    worker(&app).deliver_due().await.expect("deliver");
    let (status, attempts, bodies, _) = outbox_row(&app).await;
    assert_eq!((status.as_str(), attempts, bodies), ("dead", 1, false));
}

#[tokio::test]
async fn repeated_failures_end_in_the_dead_letter_state() {
    let stub = ResendStub::start().await;
    let failures: Vec<(u16, Option<u64>)> =
        (0..outbox::MAX_ATTEMPTS).map(|_| (503, None)).collect();
    stub.script(&failures);
    let app = app_with_resend(&stub).await;
    request_link(&app, "qu@example.com").await;
    let w = worker(&app);
    for _ in 0..outbox::MAX_ATTEMPTS {
        make_due(&app).await;
        w.deliver_due().await.expect("deliver");
    }
    let (status, attempts, bodies, _) = outbox_row(&app).await;
    assert_eq!(
        (status.as_str(), attempts, bodies),
        ("dead", outbox::MAX_ATTEMPTS, false)
    );
    assert_eq!(stub.received().len(), outbox::MAX_ATTEMPTS as usize);
    make_due(&app).await;
    assert_eq!(
        w.deliver_due().await.expect("nothing"),
        0,
        "dead letters are not retried"
    );
}

#[tokio::test]
async fn a_link_that_expired_before_delivery_is_not_sent() {
    let stub = ResendStub::start().await;
    let app = app_with_resend(&stub).await;
    request_link(&app, "ra@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update email_outbox set deliver_before = now() - interval '1 second'",
        &[],
    )
    .await
    .expect("age");
    tx.commit().await.expect("commit");
    worker(&app).deliver_due().await.expect("deliver");
    assert!(stub.received().is_empty());
    let (status, _, bodies, _) = outbox_row(&app).await;
    assert_eq!((status.as_str(), bodies), ("dead", false));
}

/// A message queued while the provider was down, or just before the server stopped, goes out
/// when a new server (a new worker with a new pool) starts.
#[tokio::test]
async fn an_email_queued_before_a_restart_is_delivered_after_it() {
    let stub = ResendStub::start().await;
    stub.script(&[(503, None)]);
    let app = app_with_resend(&stub).await;
    request_link(&app, "sa@example.com").await;
    worker(&app).deliver_due().await.expect("fails once");
    // Also one claimed by a worker that died mid-send: its lease runs out, then it is retried.
    request_link(&app, "sb@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update email_outbox set attempts = attempts + 1, next_attempt_at = now() + interval '2 minutes'
         where to_address = 'sb@example.com'",
        &[],
    )
    .await
    .expect("claim");
    tx.commit().await.expect("commit");

    // "Restart": new pool, new mailer, new worker, running as the server runs it.
    let db = aide::db::Db::connect(app.t.app_options(), 2)
        .await
        .expect("pool");
    make_due(&app).await;
    let mailer = Mailer::from_config(&app.state.config).expect("mailer");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(Worker::new(db, mailer, Arc::new(Notify::new())).run(stopped));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while stub.delivered() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {:?}",
            stub.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).expect("stop");
    running.await.expect("worker ends");
    let tx = app.t.db.system().await.expect("system");
    let sent: i64 = scalar(
        &tx,
        "select count(*) from email_outbox where status = 'sent'",
        &[],
    )
    .await
    .expect("count");
    assert_eq!(sent, 2);
}

#[tokio::test]
async fn the_local_outbox_writes_a_file_per_email() {
    let app = TestApp::new().await;
    request_link(&app, "ta@example.com").await;
    let (token, _, _) = app.last_email("ta@example.com").await;
    worker(&app).deliver_due().await.expect("deliver");
    let dir = app.data_dir.path().join("outbox");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .expect("outbox folder")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let content = std::fs::read_to_string(&files[0]).expect("read");
    assert!(content.contains("To: ta@example.com"));
    assert!(content.contains(&token));
    let (status, _, bodies, _) = outbox_row(&app).await;
    assert_eq!((status.as_str(), bodies), ("sent", false));
}

#[tokio::test]
async fn the_link_and_its_email_commit_together() {
    let app = TestApp::new().await;
    request_link(&app, "ua@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    let (links, emails): (i64, i64) = counts(&tx).await;
    assert_eq!((links, emails), (1, 1));
    // A malformed request writes neither.
    let bad = app
        .send(Req::post("/auth/send").json(json!({"email": "nope"})))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let again: (i64, i64) = counts(&tx).await;
    assert_eq!(again, (1, 1));
}

/// (magic links, queued emails), read in `tx`.
async fn counts(tx: &aide::db::SystemTx) -> (i64, i64) {
    let rows = tx
        .unregistered(
            "select (select count(*) from magic_links), (select count(*) from email_outbox)",
            &[],
        )
        .await
        .expect("count");
    FromRow::from_row(rows.first().expect("count")).expect("count")
}
