//! A local stand-in for the model provider, speaking Anthropic's Messages API or OpenAI's Chat
//! Completions (both streaming) from a per-test script, and checking every request as the API
//! would: the headers, `stream: true`, the model, `max_tokens`, the tools' schemas, at most four
//! cache breakpoints (Anthropic), roles in order, and every tool call answered in the next
//! message(s).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

pub const API_KEY: &str = "sk-ant-test-0123456789";
pub const MODEL: &str = "claude-sonnet-4-5-test";

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Answer {
    /// An HTTP error with a JSON body and, maybe, Retry-After.
    Error {
        status: u16,
        kind: &'static str,
        retry_after: Option<u64>,
    },
    /// A stream of events, each sent after `pause`.
    Stream {
        events: Vec<(String, Value)>,
        pause: Duration,
    },
    /// A stream that sends `events`, then nothing more (the server must give up or be stopped).
    Stall { events: Vec<(String, Value)> },
}

#[derive(Default)]
struct Inner {
    script: VecDeque<Answer>,
    /// The answer when the script is empty (none: a 500, as a test that ran out of script).
    fallback: Option<Answer>,
    received: Vec<Value>,
    problems: Vec<String>,
}

#[derive(Clone)]
pub struct ModelStub {
    inner: Arc<Mutex<Inner>>,
    pub url: String,
}

impl ModelStub {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/chat/completions", post(completions))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        ModelStub { inner, url }
    }

    /// The configuration that points the server at this stand-in.
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AI_PROVIDER", "anthropic".to_string()),
            ("AI_BASE_URL", self.url.clone()),
            ("AI_API_KEY", API_KEY.to_string()),
            ("AI_MODEL", MODEL.to_string()),
            ("AI_MAX_OUTPUT_TOKENS", "2000".to_string()),
            ("AI_PRICES", "3,15,0.3,3.75".to_string()),
        ]
    }

    /// The configuration that points the server at this stand-in as an OpenAI-compatible server.
    pub fn openai_vars(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AI_PROVIDER", "openai".to_string()),
            ("AI_BASE_URL", format!("{}/v1", self.url)),
            ("AI_API_KEY", API_KEY.to_string()),
            ("AI_MODEL", MODEL.to_string()),
            ("AI_MAX_OUTPUT_TOKENS", "2000".to_string()),
            ("AI_PRICES", "2,8,0.5,0".to_string()),
        ]
    }

    pub fn script(&self, answers: Vec<Answer>) {
        self.inner.lock().expect("lock").script.extend(answers);
    }

    /// Answers `answer` whenever the script is empty (for load, where turns run in any order).
    pub fn set_fallback(&self, answer: Answer) {
        self.inner.lock().expect("lock").fallback = Some(answer);
    }

    pub fn received(&self) -> Vec<Value> {
        self.inner.lock().expect("lock").received.clone()
    }

    pub fn problems(&self) -> Vec<String> {
        self.inner.lock().expect("lock").problems.clone()
    }
}

/// A complete response: text, then tool calls (name, input), ending with `stop`.
pub fn response(text: &str, calls: &[(&str, Value)], stop: &str) -> Answer {
    let mut events = vec![(
        "message_start".to_string(),
        json!({"type": "message_start", "message": {"id": "msg_1", "usage": {"input_tokens": 1200, "cache_creation_input_tokens": 800, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
    )];
    let mut index = 0;
    if !text.is_empty() {
        events.push(("content_block_start".into(), json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
        // Split the text in two deltas.
        let mid = text
            .char_indices()
            .nth(text.chars().count() / 2)
            .map_or(0, |(i, _)| i);
        for part in [&text[..mid], &text[mid..]] {
            events.push(("content_block_delta".into(), json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": part}})));
        }
        events.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": 0}),
        ));
        index = 1;
    }
    for (n, (name, input)) in calls.iter().enumerate() {
        let i = index + n;
        events.push(("content_block_start".into(), json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": format!("toolu_{i}"), "name": name, "input": {}}})));
        let json = input.to_string();
        // Split the input in three, anywhere.
        let cut = |k: usize| {
            json.char_indices()
                .nth(json.chars().count() * k / 3)
                .map_or(json.len(), |(i, _)| i)
        };
        let (a, b) = (cut(1), cut(2));
        for part in [&json[..a], &json[a..b], &json[b..]] {
            events.push(("content_block_delta".into(), json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}})));
        }
        events.push((
            "content_block_stop".into(),
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push(("ping".into(), json!({"type": "ping"})));
    events.push(("message_delta".into(), json!({"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 150}})));
    events.push(("message_stop".into(), json!({"type": "message_stop"})));
    Answer::Stream {
        events,
        pause: Duration::from_millis(2),
    }
}

/// `answer` (a stream) with `pause` before each event.
pub fn paced(answer: Answer, pause: Duration) -> Answer {
    match answer {
        Answer::Stream { events, .. } => Answer::Stream { events, pause },
        other => other,
    }
}

/// `answer` (a stream) broken off before its last `cut` events by an `error` event of `kind`.
pub fn broken(answer: Answer, cut: usize, kind: &str) -> Answer {
    match answer {
        Answer::Stream { mut events, pause } => {
            events.truncate(events.len().saturating_sub(cut));
            events.push((
                "error".into(),
                json!({"type": "error", "error": {"type": kind, "message": "stub error"}}),
            ));
            Answer::Stream { events, pause }
        }
        other => other,
    }
}

/// Records a request and the problems `check` finds in it; the next scripted answer.
fn receive(
    inner: &Mutex<Inner>,
    headers: &HeaderMap,
    body: &[u8],
    check: fn(&HeaderMap, &Value) -> Vec<String>,
) -> Result<Option<Answer>, StatusCode> {
    let mut inner = inner.lock().expect("lock");
    let body: Value = match serde_json::from_slice(body) {
        Ok(body) => body,
        Err(e) => {
            inner.problems.push(format!("not JSON: {e}"));
            return Err(StatusCode::BAD_REQUEST);
        }
    };
    let problems = check(headers, &body);
    inner.problems.extend(problems);
    inner.received.push(body);
    let next = inner.script.pop_front();
    Ok(next.or_else(|| inner.fallback.clone()))
}

async fn messages(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match receive(&inner, &headers, &body, check) {
        Ok(answer) => answer,
        Err(refused) => return refused.into_response(),
    };
    match answer {
        None => error(500, "api_error", None),
        Some(Answer::Error {
            status,
            kind,
            retry_after,
        }) => error(status, kind, retry_after),
        Some(Answer::Stream { events, pause }) => stream(events, pause, false),
        Some(Answer::Stall { events }) => stream(events, Duration::ZERO, true),
    }
}

fn error(status: u16, kind: &str, retry_after: Option<u64>) -> Response {
    let mut response = (
        StatusCode::from_u16(status).expect("status"),
        axum::Json(json!({"type": "error", "error": {"type": kind, "message": format!("stub {kind}")}, "request_id": "req_err"})),
    )
        .into_response();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().expect("header"));
    }
    response
}

fn stream(events: Vec<(String, Value)>, pause: Duration, stall: bool) -> Response {
    let body = futures_util::stream::unfold(
        (events.into_iter(), false),
        move |(mut events, stalled)| async move {
            if stalled {
                return None;
            }
            match events.next() {
                Some((name, data)) => {
                    tokio::time::sleep(pause).await;
                    let chunk = format!("event: {name}\r\ndata: {data}\r\n\r\n");
                    Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                        (events, false),
                    ))
                }
                None if stall => {
                    std::future::pending::<()>().await;
                    None
                }
                None => None,
            }
        },
    );
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().expect("header"));
    response
        .headers_mut()
        .insert("request-id", "req_stub_1".parse().expect("header"));
    response
}

/// What the real API would refuse.
fn check(headers: &HeaderMap, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    if header("x-api-key") != API_KEY {
        problems.push("x-api-key is missing or wrong".into());
    }
    if header("anthropic-version") != "2023-06-01" {
        problems.push("anthropic-version is missing".into());
    }
    if !header("content-type").starts_with("application/json") {
        problems.push("content-type is not JSON".into());
    }
    if body["stream"] != true {
        problems.push("stream is not true".into());
    }
    if body["model"] != MODEL {
        problems.push(format!("model is {}", body["model"]));
    }
    if !body["max_tokens"]
        .as_u64()
        .is_some_and(|n| n > 0 && n <= 2000)
    {
        problems.push(format!("max_tokens is {}", body["max_tokens"]));
    }
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    if tools.len() != 2
        || !tools
            .iter()
            .all(|t| t["name"].is_string() && t["input_schema"]["type"] == "object")
    {
        problems.push(format!("tools are wrong: {tools:?}"));
    }
    if body.to_string().matches("cache_control").count() > 4 {
        problems.push("more than four cache breakpoints".into());
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() || messages[0]["role"] != "user" {
        problems.push("the first message is not the user's".into());
    }
    for pair in messages.windows(2) {
        if pair[0]["role"] == pair[1]["role"] {
            problems.push("roles do not alternate".into());
        }
        let calls: Vec<&str> = pair[0]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|b| b["type"] == "tool_use")
            .filter_map(|b| b["id"].as_str())
            .collect();
        let answers: Vec<&str> = pair[1]["content"]
            .as_array()
            .into_iter()
            .flatten()
            .take(calls.len())
            .filter(|b| b["type"] == "tool_result")
            .filter_map(|b| b["tool_use_id"].as_str())
            .collect();
        if calls != answers {
            problems.push(format!("tool calls {calls:?} answered by {answers:?}"));
        }
    }
    for message in &messages {
        for block in message["content"].as_array().into_iter().flatten() {
            if block["type"] == "text" && block["text"].as_str().is_some_and(str::is_empty) {
                problems.push("an empty text block".into());
            }
        }
    }
    problems
}

/// A complete Chat Completions stream: text, then tool calls (name, input) each split in two
/// fragments, the finish reason, a usage chunk and `[DONE]`.
pub fn openai_response(text: &str, calls: &[(&str, Value)], finish: &str) -> Answer {
    let mut chunks = Vec::new();
    if !text.is_empty() {
        chunks.push(
            json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}),
        );
    }
    for (i, (name, input)) in calls.iter().enumerate() {
        let json = input.to_string();
        let mid = json
            .char_indices()
            .nth(json.chars().count() / 2)
            .map_or(0, |(i, _)| i);
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function", "function": {"name": name, "arguments": &json[..mid]}}]}}]}));
        chunks.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": i, "function": {"arguments": &json[mid..]}}]}}]}));
    }
    chunks.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}));
    chunks.push(json!({"choices": [], "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 600}}}));
    Answer::Stream {
        events: chunks.into_iter().map(|c| (String::new(), c)).collect(),
        pause: Duration::from_millis(2),
    }
}

async fn completions(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer = match receive(&inner, &headers, &body, check_openai) {
        Ok(answer) => answer,
        Err(refused) => return refused.into_response(),
    };
    match answer {
        None | Some(Answer::Error { .. }) | Some(Answer::Stall { .. }) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({"error": {"message": "stub error", "type": "server_error"}})),
        )
            .into_response(),
        Some(Answer::Stream { events, pause }) => {
            let mut lines: Vec<(String, Value)> = events;
            lines.push(("done".into(), Value::Null));
            let body =
                futures_util::stream::unfold(lines.into_iter(), move |mut lines| async move {
                    let (name, data) = lines.next()?;
                    tokio::time::sleep(pause).await;
                    let chunk = if name == "done" {
                        "data: [DONE]\n\n".to_string()
                    } else {
                        format!("data: {data}\n\n")
                    };
                    Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), lines))
                });
            let mut response = Body::from_stream(body).into_response();
            response
                .headers_mut()
                .insert("content-type", "text/event-stream".parse().expect("header"));
            response
                .headers_mut()
                .insert("x-request-id", "req_openai_1".parse().expect("header"));
            response
        }
    }
}

/// What an OpenAI-compatible server would refuse.
fn check_openai(headers: &HeaderMap, body: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {API_KEY}") {
        problems.push("the bearer token is missing or wrong".into());
    }
    if body["stream"] != true || body["stream_options"]["include_usage"] != true {
        problems.push("not streaming with usage".into());
    }
    if body["model"] != MODEL {
        problems.push(format!("model is {}", body["model"]));
    }
    let tools = body["tools"].as_array().cloned().unwrap_or_default();
    if tools.len() != 2
        || !tools
            .iter()
            .all(|t| t["type"] == "function" && t["function"]["parameters"]["type"] == "object")
    {
        problems.push(format!("tools are wrong: {tools:?}"));
    }
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    if messages.first().map(|m| &m["role"]) != Some(&json!("system")) {
        problems.push("the first message is not the system prompt".into());
    }
    for (i, message) in messages.iter().enumerate() {
        let calls: Vec<&str> = message["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        if calls.is_empty() {
            continue;
        }
        let answers: Vec<&str> = messages[i + 1..]
            .iter()
            .take(calls.len())
            .filter(|m| m["role"] == "tool")
            .filter_map(|m| m["tool_call_id"].as_str())
            .collect();
        if calls != answers {
            problems.push(format!("tool calls {calls:?} answered by {answers:?}"));
        }
        for call in message["tool_calls"].as_array().into_iter().flatten() {
            if call["function"]["arguments"]
                .as_str()
                .and_then(|a| serde_json::from_str::<Value>(a).ok())
                .is_none()
            {
                problems.push("a call's arguments are not a JSON string".into());
            }
        }
    }
    problems
}
