//! Error reports: a 500 and a handler's panic arrive at a Sentry envelope receiver with the
//! environment, the release and the route template, and with nothing of the request's secrets
//! (query string, cookies, Authorization, emails, tokens); the queue drops, counted, rather than
//! wait; a 429 pauses sending.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aide::auth::CurrentUser;
use aide::error::AppError;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;

use crate::app::{Req, TestApp};

/// What the receiver got: each request's headers and body.
#[derive(Clone, Default)]
struct Received {
    envelopes: Arc<Mutex<Vec<(HeaderMap, String)>>>,
    /// What to answer.
    status: Arc<AtomicU16>,
}

/// A Sentry ingest endpoint for project 1 on loopback.
async fn receiver() -> (SocketAddr, Received) {
    let received = Received::default();
    received.status.store(200, Ordering::Relaxed);
    let app = Router::new()
        .route(
            "/api/1/envelope/",
            post(
                |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    r.envelopes
                        .lock()
                        .expect("lock")
                        .push((headers, String::from_utf8_lossy(&body).into_owned()));
                    let status =
                        StatusCode::from_u16(r.status.load(Ordering::Relaxed)).expect("status");
                    let mut answer = axum::response::Response::new(axum::body::Body::from("{}"));
                    *answer.status_mut() = status;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        answer
                            .headers_mut()
                            .insert("retry-after", "60".parse().expect("header"));
                    }
                    answer
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, received)
}

/// An envelope's lines, checked against the format: header, item header (type event, its
/// length), the event.
fn event_of(body: &str) -> Value {
    let mut lines = body.splitn(3, '\n');
    let header: Value = serde_json::from_str(lines.next().expect("header")).expect("header JSON");
    let item: Value = serde_json::from_str(lines.next().expect("item")).expect("item JSON");
    let payload = lines.next().expect("payload").trim_end_matches('\n');
    assert_eq!(item["type"], "event");
    assert_eq!(item["length"].as_u64(), Some(payload.len() as u64));
    let event: Value = serde_json::from_str(payload).expect("event JSON");
    assert_eq!(header["event_id"], event["event_id"]);
    event
}

const EMAIL: &str = "someone@example.com";
const KEY: &str = "sk_live_51HfQa8Lk3mZpQ2xYzAbC";

fn failing_routes() -> Router<aide::AppState> {
    Router::new()
        .route(
            "/api/trouble/{id}",
            get(|Path(id): Path<String>, _user: CurrentUser| async move {
                Err::<(), _>(AppError::internal(anyhow::anyhow!(
                    "could not mail {EMAIL}: key {KEY} refused for order {id}"
                )))
            }),
        )
        .route(
            "/api/panic",
            get(|_user: CurrentUser| async move {
                if EMAIL.len() > 1 {
                    panic!("boom while mailing {EMAIL} with {KEY}");
                }
            }),
        )
}

#[tokio::test]
async fn a_500_and_a_panic_arrive_with_release_and_route_and_without_secrets() {
    let (addr, received) = receiver().await;
    let dsn = format!("http://testkey@{addr}/1");
    let app = TestApp::with(&[("SENTRY_DSN", &dsn), ("ENVIRONMENT", "development")]).await;
    let token = app.sign_in(EMAIL).await;
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    let user_id = me["id"].as_str().expect("id").to_string();
    let router = aide::build_app_with(app.state.clone(), failing_routes());

    let failed = TestApp::send_via(
        &router,
        Req::get("/api/trouble/7?token=SECRET&email=someone@example.com")
            .bearer(&token)
            .cookie("aide_session=COOKIE-VALUE-123"),
    )
    .await;
    assert_eq!(failed.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(failed.json()["code"], "INTERNAL_ERROR");
    let panicked = TestApp::send_via(&router, Req::get("/api/panic").bearer(&token)).await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(panicked.json()["code"], "INTERNAL_ERROR");
    assert!(panicked.json()["request_id"].is_string());
    // The process goes on after the panic.
    let after = TestApp::send_via(&router, Req::get("/auth/me").bearer(&token)).await;
    assert_eq!(after.status, StatusCode::OK);
    // A 404 and a 401 are not errors to report.
    TestApp::send_via(&router, Req::get("/api/aides/nope")).await;

    let reporter = app.state.reporter.clone().expect("Sentry is on");
    assert!(reporter.flush(Duration::from_secs(10)).await);
    let envelopes = received.envelopes.lock().expect("lock").clone();
    assert_eq!(
        envelopes.len(),
        2,
        "one event each for the 500 and the panic"
    );

    let mut events = Vec::new();
    for (headers, body) in &envelopes {
        let auth = headers
            .get("x-sentry-auth")
            .and_then(|v| v.to_str().ok())
            .expect("X-Sentry-Auth");
        assert!(auth.starts_with("Sentry "), "{auth}");
        assert!(auth.contains("sentry_key=testkey") && auth.contains("sentry_version=7"));
        assert_eq!(
            headers.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/x-sentry-envelope")
        );
        for secret in [
            "SECRET",
            EMAIL,
            "example.com",
            "COOKIE-VALUE",
            &token,
            KEY,
            "51HfQa8Lk3mZpQ2xYzAbC",
            "Bearer",
            "authorization",
            "Authorization",
            "cookie",
            "token=",
        ] {
            assert!(!body.contains(secret), "{secret:?} reached Sentry: {body}");
        }
        let event = event_of(body);
        assert_eq!(event["environment"], "development");
        assert_eq!(event["release"], aide::sentry::RELEASE);
        assert!(aide::sentry::RELEASE.starts_with(&format!("aide@{}+", env!("CARGO_PKG_VERSION"))));
        assert_eq!(event["user"], serde_json::json!({ "id": user_id }));
        events.push(event);
    }
    let by_kind = |kind: &str| {
        events
            .iter()
            .find(|e| e["exception"]["values"][0]["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {events:?}"))
    };
    let error = by_kind("InternalError");
    assert_eq!(error["transaction"], "GET /api/trouble/{id}");
    assert_eq!(error["level"], "error");
    assert_eq!(error["request"]["method"], "GET");
    assert_eq!(
        error["request"]["url"],
        "http://127.0.0.1:8000/api/trouble/{id}"
    );
    let value = error["exception"]["values"][0]["value"]
        .as_str()
        .expect("value");
    assert_eq!(
        value,
        "could not mail [email]: key [token] refused for order 7"
    );
    assert_eq!(
        error["tags"]["request_id"],
        failed.header("x-request-id").expect("id")
    );

    let panic = by_kind("panic");
    assert_eq!(panic["transaction"], "GET /api/panic");
    assert_eq!(panic["level"], "fatal");
    let exception = &panic["exception"]["values"][0];
    assert_eq!(exception["mechanism"]["handled"], false);
    let message = exception["value"].as_str().expect("value");
    assert!(
        message.starts_with("boom while mailing [email] with [token] at tests/it/sentry.rs:"),
        "{message}"
    );
    let frames = exception["stacktrace"]["frames"]
        .as_array()
        .expect("frames");
    assert!(
        frames.iter().any(|f| f["function"]
            .as_str()
            .is_some_and(|f| f.contains("failing_routes"))),
        "the panicking test handler is among the frames: {frames:?}"
    );
}

#[tokio::test]
async fn reporting_never_waits_a_full_queue_drops_and_a_429_pauses_sending() {
    let (addr, received) = receiver().await;
    let dsn = format!("http://testkey@{addr}/1");
    let app = TestApp::with(&[
        ("SENTRY_DSN", &dsn),
        ("ENVIRONMENT", "development"),
        ("METRICS_TOKEN", "metrics-token-0123456789abcdef"),
    ])
    .await;
    let reporter = app.state.reporter.clone().expect("Sentry is on");
    let report = || aide::sentry::Report {
        level: "error",
        kind: "test".into(),
        message: "a test event".into(),
        ..Default::default()
    };
    // No await between these: the sending task cannot take any off the queue meanwhile.
    for _ in 0..(aide::sentry::QUEUE + 50) {
        reporter.capture(report());
    }
    assert!(reporter.flush(Duration::from_secs(20)).await);
    assert_eq!(
        received.envelopes.lock().expect("lock").len(),
        aide::sentry::QUEUE
    );

    // Sentry says 429: that event is lost, and the next are dropped without a request.
    received.status.store(429, Ordering::Relaxed);
    reporter.capture(report());
    assert!(reporter.flush(Duration::from_secs(10)).await);
    received.status.store(200, Ordering::Relaxed);
    for _ in 0..3 {
        reporter.capture(report());
    }
    assert!(reporter.flush(Duration::from_secs(10)).await);
    assert_eq!(
        received.envelopes.lock().expect("lock").len(),
        aide::sentry::QUEUE + 1
    );

    let metrics = app
        .send(Req::get("/metrics").bearer("metrics-token-0123456789abcdef"))
        .await
        .body;
    assert!(
        metrics.contains(&format!(
            "aide_sentry_events_total{{outcome=\"sent\"}} {}",
            aide::sentry::QUEUE
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("aide_sentry_events_total{outcome=\"dropped\"} 54"),
        "{metrics}"
    );
    assert!(metrics.contains("aide_sentry_events_total{outcome=\"failed\"} 0"));
}

#[tokio::test]
async fn without_a_dsn_nothing_is_reported_and_a_dsn_needs_an_environment() {
    let app = TestApp::new().await;
    assert!(app.state.reporter.is_none());
    let problems = aide::config::Config::from_vars([
        ("JWT_SECRET", "x".repeat(32)),
        ("SENTRY_DSN", "http://k@127.0.0.1:9/1".to_string()),
    ])
    .expect_err("ENVIRONMENT is required");
    assert!(
        problems
            .problems
            .iter()
            .any(|p| p.starts_with("ENVIRONMENT") && p.contains("SENTRY_DSN")),
        "{problems:?}"
    );
    let deployed = aide::config::Config::from_vars([
        ("ENVIRONMENT", "production".to_string()),
        ("SENTRY_DSN", "http://k@127.0.0.1:9/1".to_string()),
    ])
    .expect_err("http is refused in production");
    assert!(
        deployed
            .problems
            .iter()
            .any(|p| p.starts_with("SENTRY_DSN") && p.contains("https")),
        "{deployed:?}"
    );
}
