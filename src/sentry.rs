//! Error reports to Sentry: 5xx answers, panics, failed background work and dead-lettered email,
//! each sent as one event in Sentry's envelope format, over the HTTP client the service already
//! has.
//!
//! Written here rather than taken from the `sentry` crate: its current releases bring a second
//! HTTP stack (reqwest 0.13) and, by default, ship every log line and every request's query
//! string, so using it safely means switching most of it off and scrubbing what it collects. Here
//! nothing is collected that is not put in a [`Report`] on purpose: the route template (never the
//! path or its query), the user's id (never their email), the error's description with anything
//! shaped like an email address, a token or URL credentials replaced ([`scrub`]), and for a panic
//! its stack. No headers, cookies or bodies, ever.
//!
//! Reporting never slows or fails a request: events wait in a bounded queue
//! ([`QUEUE`]) for one sending task; a full queue drops the event, a failed send is not retried,
//! and a 429 from Sentry pauses sending for its Retry-After. All three are counted
//! (`aide_sentry_events_total`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once, OnceLock};
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::config::Config;

/// `aide@{version}+{commit}`: the build the reports come from.
pub const RELEASE: &str = concat!(
    "aide@",
    env!("CARGO_PKG_VERSION"),
    "+",
    env!("AIDE_GIT_COMMIT")
);

/// Events that may wait to be sent; more are dropped.
pub const QUEUE: usize = 100;

/// How long one send may take.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// What happened to the events reported, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: AtomicU64,
    /// Not sent: the queue was full, or Sentry had asked us to wait.
    pub dropped: AtomicU64,
    /// Sent and refused, or not answered.
    pub failed: AtomicU64,
    /// Queued and not yet sent (for [`Reporter::flush`]).
    waiting: AtomicU64,
}

/// Sends reports to one Sentry project.
#[derive(Debug)]
pub struct Reporter {
    queue: mpsc::Sender<Vec<u8>>,
    dsn: String,
    environment: &'static str,
    app_origin: String,
    pub counts: Arc<Counts>,
}

/// One error to report. Every text in it is scrubbed again before it leaves.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// `error`, `fatal` (a panic) or `warning`.
    pub level: &'static str,
    /// What kind of error: `InternalError`, `panic`, `job.cleanup`, `email.dead_letter`...
    pub kind: String,
    pub message: String,
    /// The route template (`GET /api/aides/{id}`) or the job's name.
    pub transaction: Option<String>,
    pub user: Option<Uuid>,
    /// The request's method and route template.
    pub request: Option<(String, String)>,
    pub request_id: Option<String>,
    pub frames: Vec<Frame>,
}

/// One frame of a panic's stack.
#[derive(Debug, Clone)]
pub struct Frame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The reporter for work outside any request (background jobs), set by the server.
static GLOBAL: OnceLock<Arc<Reporter>> = OnceLock::new();

impl Reporter {
    /// Starts the sending task when SENTRY_DSN is set; call inside the runtime.
    pub fn start(config: &Config) -> Option<Arc<Reporter>> {
        let sentry = config.ops.sentry.as_ref()?;
        let (queue, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let auth = format!(
            "Sentry sentry_version=7, sentry_key={}, sentry_client=aide/{}",
            sentry.public_key.expose_secret(),
            env!("CARGO_PKG_VERSION")
        );
        let client = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .build()
            .unwrap_or_default();
        tokio::spawn(send_all(
            rx,
            client,
            sentry.envelope_url.to_string(),
            auth,
            counts.clone(),
        ));
        install_panic_hook();
        Some(Arc::new(Reporter {
            queue,
            dsn: sentry.dsn.expose_secret().to_string(),
            environment: config.environment.as_str(),
            app_origin: config.app_url.origin().ascii_serialization(),
            counts,
        }))
    }

    /// Makes `reporter` the one background work reports to.
    pub fn set_global(reporter: Arc<Reporter>) {
        let _ = GLOBAL.set(reporter);
    }

    /// Queues `report`; drops it (counted) when the queue is full. Never waits.
    pub fn capture(&self, report: Report) -> Uuid {
        let id = Uuid::new_v4();
        let envelope = self.envelope(id, &report);
        self.counts.waiting.fetch_add(1, Ordering::AcqRel);
        if self.queue.try_send(envelope).is_err() {
            self.counts.waiting.fetch_sub(1, Ordering::AcqRel);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
        id
    }

    /// Waits until every queued event has been sent (or given up on), at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.counts.waiting.load(Ordering::Acquire) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        true
    }

    /// The event as an envelope: a header line, an item header line, the event.
    fn envelope(&self, id: Uuid, report: &Report) -> Vec<u8> {
        let event = self.event(id, report);
        let payload = serde_json::to_vec(&event).unwrap_or_default();
        let now = chrono::Utc::now();
        let header = json!({
            "event_id": id.simple().to_string(),
            "dsn": self.dsn,
            "sent_at": crate::time::rfc3339_string(&now),
        });
        let item =
            json!({"type": "event", "length": payload.len(), "content_type": "application/json"});
        let mut out = Vec::with_capacity(payload.len() + 256);
        out.extend_from_slice(header.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(item.to_string().as_bytes());
        out.push(b'\n');
        out.extend_from_slice(&payload);
        out.push(b'\n');
        out
    }

    fn event(&self, id: Uuid, report: &Report) -> Value {
        let now = chrono::Utc::now();
        let mut exception = json!({
            "type": scrub(&report.kind),
            "value": scrub(&report.message),
            "mechanism": {
                "type": if report.kind == "panic" { "panic" } else { "generic" },
                "handled": report.kind != "panic",
            },
        });
        if !report.frames.is_empty() {
            let frames: Vec<Value> = report
                .frames
                .iter()
                .map(|f| {
                    json!({
                        "function": f.function,
                        "filename": f.file,
                        "lineno": f.line,
                        "in_app": f.function.starts_with("aide::"),
                    })
                })
                .collect();
            exception["stacktrace"] = json!({ "frames": frames });
        }
        let mut event = json!({
            "event_id": id.simple().to_string(),
            "timestamp": now.timestamp_millis() as f64 / 1000.0,
            "platform": "native",
            "level": if report.level.is_empty() { "error" } else { report.level },
            "logger": "aide",
            "release": RELEASE,
            "environment": self.environment,
            "exception": { "values": [exception] },
            "tags": {},
        });
        if let Some(transaction) = &report.transaction {
            event["transaction"] = json!(scrub(transaction));
        }
        if let Some(user) = report.user {
            event["user"] = json!({ "id": user.to_string() });
        }
        if let Some((method, route)) = &report.request {
            event["request"] = json!({
                "method": method,
                "url": format!("{}{}", self.app_origin, scrub(route)),
            });
        }
        if let Some(request_id) = &report.request_id {
            event["tags"]["request_id"] = json!(scrub(request_id));
        }
        event
    }
}

/// The reporter for the current request, else the background one.
pub fn current() -> Option<Arc<Reporter>> {
    crate::telemetry::with_current(|c| c.reporter.clone())
        .flatten()
        .or_else(|| GLOBAL.get().cloned())
}

/// Reports a failure of background work `job` (`cleanup`, `billing`...), when Sentry is on.
pub fn job_failed(job: &str, error: &dyn std::fmt::Display) {
    if let Some(reporter) = current() {
        reporter.capture(Report {
            level: "error",
            kind: format!("job.{job}"),
            message: error.to_string(),
            transaction: Some(format!("job {job}")),
            ..Report::default()
        });
    }
}

/// Reports `kind` (`email.dead_letter`...) with `message`, when Sentry is on.
pub fn report(level: &'static str, kind: &str, message: &str) {
    if let Some(reporter) = current() {
        reporter.capture(Report {
            level,
            kind: kind.to_string(),
            message: message.to_string(),
            transaction: Some(kind.to_string()),
            ..Report::default()
        });
    }
}

async fn send_all(
    mut rx: mpsc::Receiver<Vec<u8>>,
    client: reqwest::Client,
    url: String,
    auth: String,
    counts: Arc<Counts>,
) {
    let mut paused_until: Option<Instant> = None;
    while let Some(envelope) = rx.recv().await {
        if paused_until.is_some_and(|until| Instant::now() < until) {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            counts.waiting.fetch_sub(1, Ordering::AcqRel);
            continue;
        }
        let answer = client
            .post(&url)
            .header("X-Sentry-Auth", &auth)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-sentry-envelope",
            )
            .body(envelope)
            .send()
            .await;
        match answer {
            Ok(answer) => {
                let wait = pause_asked(answer.headers());
                if answer.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    counts.dropped.fetch_add(1, Ordering::Relaxed);
                    paused_until = Some(Instant::now() + wait.unwrap_or(Duration::from_secs(60)));
                } else if answer.status().is_success() {
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    paused_until = wait.map(|w| Instant::now() + w);
                } else {
                    tracing::warn!(status = answer.status().as_u16(), "Sentry refused a report");
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not send a report to Sentry");
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        counts.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long Sentry asks us to wait: `Retry-After` in seconds, or the longest limit in
/// `X-Sentry-Rate-Limits` (`seconds:categories:scope, ...`), at most an hour.
fn pause_asked(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let limits = headers
        .get("x-sentry-rate-limits")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(',')
                .filter_map(|limit| limit.trim().split(':').next()?.parse::<u64>().ok())
                .max()
        });
    let retry_after = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    limits
        .or(retry_after)
        .map(|secs| Duration::from_secs(secs.min(3600)))
}

/// Reports panics (with their stack) to the reporter of the request or work that panicked. The
/// process's previous hook still runs after.
fn install_panic_hook() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Some(reporter) = current() {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_string());
                let place = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                let context = crate::telemetry::with_current(|c| {
                    c.set_panicked();
                    (c.route(), c.user(), c.method.clone(), request_id_of(c))
                });
                let (route, user, method, request_id) = match context {
                    Some((route, user, method, id)) => (route, user, Some(method), id),
                    None => (None, None, None, None),
                };
                let frames = frames(&std::backtrace::Backtrace::force_capture().to_string());
                reporter.capture(Report {
                    level: "fatal",
                    kind: "panic".to_string(),
                    message: format!("{message}{place}"),
                    transaction: route
                        .as_ref()
                        .zip(method.as_ref())
                        .map(|(r, m)| format!("{m} {r}")),
                    user,
                    request: route.zip(method).map(|(r, m)| (m, r)),
                    request_id,
                    frames,
                });
            }
            previous(info);
        }));
    });
}

fn request_id_of(context: &crate::telemetry::RequestContext) -> Option<String> {
    context.id.to_str().ok().map(str::to_owned)
}

/// Frames from a backtrace's text, oldest first (as Sentry wants them), without the panic
/// machinery's own frames at the top.
pub fn frames(backtrace: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    for line in backtrace.lines() {
        let line = line.trim_start();
        if let Some(place) = line.strip_prefix("at ") {
            if let Some(last) = frames.last_mut() {
                let mut parts = place.rsplitn(3, ':');
                let _column = parts.next();
                let line = parts.next().and_then(|l| l.parse().ok());
                last.file = parts.next().map(str::to_owned);
                last.line = line;
            }
        } else if let Some((number, function)) = line.split_once(": ")
            && !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
        {
            frames.push(Frame {
                function: function.to_string(),
                file: None,
                line: None,
            });
        }
    }
    let machinery = |f: &Frame| {
        [
            "std::backtrace",
            "std::panicking",
            "core::panicking",
            "aide::sentry::",
            "<alloc::boxed::Box<F,A> as core::ops::function::Fn",
            "std::sys::backtrace",
            "rust_begin_unwind",
            "__rustc",
        ]
        .iter()
        .any(|prefix| f.function.starts_with(prefix))
    };
    let first_own = frames.iter().position(|f| !machinery(f)).unwrap_or(0);
    let mut frames: Vec<Frame> = frames.into_iter().skip(first_own).take(100).collect();
    frames.reverse();
    frames
}

/// `text` with whatever looks like personal data or a credential replaced: email addresses,
/// query strings, credentials in URLs, and token-shaped runs (20 or more letters, digits, `-`
/// and `_` mixing at least two of lower case, upper case and digits; UUIDs are kept, as ids).
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace()
            || matches!(
                c,
                '"' | '\'' | '<' | '>' | '(' | ')' | '[' | ']' | '{' | '}' | ',' | ';' | '`' | '|'
            )
        {
            out.push_str(&scrub_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&scrub_word(&word));
    out
}

fn scrub_word(word: &str) -> Cow<'_, str> {
    // Punctuation that ends a sentence or a label stays outside what is judged.
    let core = word.trim_end_matches([':', '.', '!']);
    if core.len() < word.len() {
        let scrubbed = scrub_core(core);
        return Cow::Owned(format!("{scrubbed}{}", &word[core.len()..]));
    }
    scrub_core(word)
}

fn scrub_core(word: &str) -> Cow<'_, str> {
    if word.is_empty() {
        return Cow::Borrowed(word);
    }
    let mut word: Cow<'_, str> = Cow::Borrowed(word);
    if let Some(q) = word.find('?')
        && word[q..].contains('=')
    {
        word = Cow::Owned(format!("{}?[query removed]", &word[..q]));
    }
    if let Some(scheme) = word.find("://")
        && let Some(at) = word[scheme + 3..].find('@')
        && !word[scheme + 3..scheme + 3 + at].contains('/')
    {
        word = Cow::Owned(format!(
            "{}[credentials]{}",
            &word[..scheme + 3],
            &word[scheme + 3 + at..]
        ));
    }
    if let Some(at) = word.find('@')
        && at > 0
        && word[at + 1..].contains('.')
        && !word[..at].ends_with("[credentials]")
    {
        return Cow::Borrowed("[email]");
    }
    // A JWT: base64url parts joined by dots, the first one `eyJ` (`{"`).
    if let Some(start) = word.find("eyJ") {
        let length = word[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
            .unwrap_or(word.len() - start);
        if length >= 20 {
            word = Cow::Owned(format!(
                "{}[token]{}",
                &word[..start],
                &word[start + length..]
            ));
        }
    }
    // Token-shaped runs.
    let is_run = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if word.chars().filter(|c| is_run(*c)).count() < 20 {
        return word;
    }
    let mut out = String::with_capacity(word.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if looks_like_token(run) {
            out.push_str("[token]");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in word.chars() {
        if is_run(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    Cow::Owned(out)
}

fn looks_like_token(run: &str) -> bool {
    if run.len() < 20 || Uuid::parse_str(run).is_ok() {
        return false;
    }
    let lower = run.chars().any(|c| c.is_ascii_lowercase());
    let upper = run.chars().any(|c| c.is_ascii_uppercase());
    let digit = run.chars().any(|c| c.is_ascii_digit());
    u8::from(lower) + u8::from(upper) + u8::from(digit) >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubbing_removes_emails_tokens_queries_and_credentials_and_keeps_ids() {
        let id = "0b6f3c1e-8f1e-4c55-9d61-2a7c1d9e4f00";
        let jwt =
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.dBjftJeZ4CVPmB92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let text = format!(
            "sending to Someone.Else+x@example.co.uk failed for user {id}: token {jwt} \
             at https://app.example.com/auth/verify?token=SECRET&email=a@b.c via \
             postgres://aide:hunter2@db.internal/aide (key=sk_test_51HfQa8Lk3mZpQ2xYz) \
             in stripe_webhook_signature_refusals"
        );
        let clean = scrub(&text);
        for gone in [
            "Someone.Else",
            "example.co.uk",
            "eyJ",
            "SECRET",
            "a@b.c",
            "hunter2",
            "51HfQa8Lk3mZpQ2xYz",
        ] {
            assert!(!clean.contains(gone), "{gone} left in {clean}");
        }
        assert!(clean.contains(id), "{clean}");
        assert!(
            clean.contains("stripe_webhook_signature_refusals"),
            "{clean}"
        );
        assert!(clean.contains("https://app.example.com/auth/verify?[query removed]"));
        assert!(
            clean.contains("postgres://[credentials]@db.internal/aide"),
            "{clean}"
        );
        assert!(
            clean.contains("[email]") && clean.contains("[token]"),
            "{clean}"
        );
    }

    #[test]
    fn frames_come_oldest_first_without_the_panic_machinery() {
        let text = "   0: std::backtrace::Backtrace::force_capture\n             at /rustc/library/std/src/backtrace.rs:312:13\n   1: aide::sentry::install_panic_hook::{{closure}}\n   2: std::panicking::rust_panic_with_hook\n   3: aide::web::pages::boom\n             at ./src/web/pages.rs:40:5\n   4: tokio::runtime::task::raw::poll\n";
        let frames = frames(text);
        let names: Vec<&str> = frames.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(
            names,
            ["tokio::runtime::task::raw::poll", "aide::web::pages::boom"]
        );
        assert_eq!(frames[1].file.as_deref(), Some("./src/web/pages.rs"));
        assert_eq!(frames[1].line, Some(40));
    }
}
