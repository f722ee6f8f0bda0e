//! A local stand-in for Resend's API that checks every request the way Resend would and answers
//! from a script (so tests can make it fail with 500 or 429 first).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

pub const API_KEY: &str = "re_test_0123456789";

/// One request as the stub received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: String,
    pub body: serde_json::Value,
    /// What the stub answered.
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    /// Answers to give, in order, before answering 200 to everything.
    script: VecDeque<(u16, Option<u64>)>,
    received: Vec<Received>,
    /// Problems with requests: any entry fails the test that reads it.
    problems: Vec<String>,
    /// Idempotency key → message id, as Resend keeps them.
    delivered: HashMap<String, String>,
    /// How long a delivered message's answer is held back (a server killed meanwhile never
    /// hears that it was sent).
    hold: std::time::Duration,
}

#[derive(Clone)]
pub struct ResendStub {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl ResendStub {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/emails", post(emails))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let url = format!("http://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ResendStub { inner, url }
    }

    /// The next answers, each a status and an optional Retry-After in seconds.
    pub fn script(&self, answers: &[(u16, Option<u64>)]) {
        self.inner
            .lock()
            .expect("lock")
            .script
            .extend(answers.iter().copied());
    }

    /// Holds back each successful answer this long, after the message counts as delivered.
    pub fn hold_answers(&self, hold: std::time::Duration) {
        self.inner.lock().expect("lock").hold = hold;
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    /// Distinct messages delivered (a retry with the same idempotency key is one).
    pub fn delivered(&self) -> usize {
        self.inner.lock().expect("lock").delivered.len()
    }

    pub fn problems(&self) -> Vec<String> {
        self.inner.lock().expect("lock").problems.clone()
    }
}

async fn emails(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut problems = Vec::new();
    if header("authorization") != format!("Bearer {API_KEY}") {
        problems.push(format!("bad Authorization: {:?}", header("authorization")));
    }
    if !header("user-agent").starts_with("aide/") {
        problems.push(format!("bad User-Agent: {:?}", header("user-agent")));
    }
    if !header("content-type").starts_with("application/json") {
        problems.push(format!("bad Content-Type: {:?}", header("content-type")));
    }
    let key = header("idempotency-key");
    if uuid::Uuid::parse_str(&key).is_err() {
        problems.push(format!("bad Idempotency-Key: {key:?}"));
    }
    let json: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    for field in ["from", "subject", "html", "text"] {
        if json[field].as_str().is_none_or(str::is_empty) {
            problems.push(format!("missing {field}"));
        }
    }
    let to_ok = json["to"]
        .as_array()
        .is_some_and(|to| to.len() == 1 && to[0].as_str().is_some_and(|a| a.contains('@')));
    if !to_ok {
        problems.push(format!("bad to: {}", json["to"]));
    }

    let (status, retry_after, answer) = record(&inner, key, json, problems);
    if status == 200 {
        let hold = inner.lock().expect("lock").hold;
        tokio::time::sleep(hold).await;
        return (StatusCode::OK, axum::Json(answer)).into_response();
    }
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        axum::Json(answer),
    )
        .into_response();
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", secs.to_string().parse().expect("header"));
    }
    response
}

/// Records a request; the status to answer, its Retry-After and its body.
fn record(
    inner: &Mutex<Inner>,
    key: String,
    json: serde_json::Value,
    problems: Vec<String>,
) -> (u16, Option<u64>, serde_json::Value) {
    let mut inner = inner.lock().expect("lock");
    let (status, retry_after) = if problems.is_empty() {
        inner.script.pop_front().unwrap_or((200, None))
    } else {
        (422, None)
    };
    inner.problems.extend(problems);
    inner.received.push(Received {
        idempotency_key: key.clone(),
        body: json,
        status,
    });
    if status == 200 {
        let id = inner
            .delivered
            .entry(key)
            .or_insert_with(|| uuid::Uuid::new_v4().to_string())
            .clone();
        return (status, None, serde_json::json!({ "id": id }));
    }
    (
        status,
        retry_after,
        serde_json::json!({"name": "scripted", "message": "scripted failure"}),
    )
}
