//! Prometheus metrics at `/metrics`, written by hand in the text exposition format: request
//! counts and duration histograms by method, route template and status (every address no route
//! serves is one `unmatched` route, so scanners cannot create series), and figures read when
//! scraped (the pool, the email outbox, refused webhooks). Off unless METRICS_TOKEN is set; then
//! only a request with that bearer token, compared in constant time, gets them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;

use crate::state::AppState;

/// Upper bounds of the duration buckets, in seconds (OpenTelemetry's advice for HTTP servers).
pub const BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// The route of a request that matched none.
pub const UNMATCHED: &str = "unmatched";

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

/// What this process has counted since it started.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (method, route template, status) → durations.
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
    /// (counter, its labels as written) → total. Label values come from fixed sets only.
    counters: Mutex<BTreeMap<(&'static str, String), f64>>,
}

/// The counters code adds to, with what each counts.
const COUNTERS: &[(&str, &str)] = &[
    (
        "aide_turns_started_total",
        "AI turns started (counted against the week's allowance).",
    ),
    (
        "aide_turns_total",
        "AI turns ended, by result (completed, failed, interrupted) and whether they were given back.",
    ),
    (
        "aide_model_tokens_total",
        "Model tokens used by turns, by model and kind (input, output, cache_read, cache_write).",
    ),
    (
        "aide_model_cost_microdollars_total",
        "What turns cost at the configured prices, in micro-dollars, by model.",
    ),
    (
        "aide_stripe_webhook_events_total",
        "Stripe events received with a valid signature, by type and outcome.",
    ),
];

impl Metrics {
    /// Counts one answered request. `route` is the matched route's template, None when none
    /// matched.
    pub fn observe(&self, method: &str, route: Option<&str>, status: StatusCode, took: Duration) {
        // Only the methods the service answers; anything else is one label.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "other",
        };
        let key = (
            method.to_string(),
            route.unwrap_or(UNMATCHED).to_string(),
            status.as_u16(),
        );
        if let Ok(mut requests) = self.requests.lock() {
            requests.entry(key).or_default().observe(took.as_secs_f64());
        }
    }

    /// Adds `by` to counter `name` (one of [`COUNTERS`]) with `labels`.
    pub fn add(&self, name: &'static str, labels: &[(&str, &str)], by: f64) {
        let labels = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
            .collect::<Vec<_>>()
            .join(",");
        if let Ok(mut counters) = self.counters.lock() {
            *counters.entry((name, labels)).or_default() += by;
        }
    }

    fn write_counters(&self, out: &mut String) {
        let Ok(counters) = self.counters.lock() else {
            return;
        };
        for (name, help) in COUNTERS {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for ((_, labels), value) in counters.iter().filter(|((n, _), _)| n == name) {
                let _ = writeln!(out, "{name}{{{labels}}} {value}");
            }
        }
    }

    fn write_requests(&self, out: &mut String) {
        let Ok(requests) = self.requests.lock() else {
            return;
        };
        out.push_str("# HELP aide_http_requests_total HTTP requests answered.\n");
        out.push_str("# TYPE aide_http_requests_total counter\n");
        for ((method, route, status), h) in requests.iter() {
            let _ = writeln!(
                out,
                "aide_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {}",
                label(route),
                h.count
            );
        }
        out.push_str(
            "# HELP aide_http_request_duration_seconds Time from a request's arrival to its answer's head.\n",
        );
        out.push_str("# TYPE aide_http_request_duration_seconds histogram\n");
        for ((method, route, status), h) in requests.iter() {
            let labels = format!(
                "method=\"{method}\",route=\"{}\",status=\"{status}\"",
                label(route)
            );
            for (bound, count) in BUCKETS.iter().zip(h.buckets.iter()) {
                let _ = writeln!(
                    out,
                    "aide_http_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {count}"
                );
            }
            let _ = writeln!(
                out,
                "aide_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "aide_http_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "aide_http_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
    }
}

/// A label value, escaped as the exposition format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Puts the matched route's template on the response, for the front layer to count (it runs
/// outside the routing, where the template is not known).
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    if let Some(route) = &route {
        crate::telemetry::set_route(route.as_str());
    }
    let mut response = next.run(request).await;
    if let Some(route) = route {
        response.extensions_mut().insert(route);
    }
    response
}

crate::statement! {
    /// The outbox by status, and how long the oldest pending email has waited.
    OUTBOX: System = "select
            count(*) filter (where status = 'pending'),
            count(*) filter (where status = 'dead'),
            coalesce(extract(epoch from now() - min(created_at) filter (where status = 'pending')), 0)::float8
         from email_outbox";
}

/// `GET /metrics`.
pub async fn serve(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = state.config.metrics_token.as_ref() else {
        return crate::web::not_found();
    };
    let given = crate::auth::bearer_token(&headers).unwrap_or_default();
    let expected = token.expose_secret();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        let mut response = crate::error::AppError::unauthorized().into_response();
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let mut out = String::with_capacity(16 * 1024);
    state.metrics.write_requests(&mut out);
    state.metrics.write_counters(&mut out);
    let pool = state.db.pool_status();
    out.push_str("# HELP aide_db_pool_connections Pooled database connections.\n");
    out.push_str("# TYPE aide_db_pool_connections gauge\n");
    let _ = writeln!(
        out,
        "aide_db_pool_connections{{state=\"open\"}} {}\naide_db_pool_connections{{state=\"idle\"}} {}\naide_db_pool_connections{{state=\"max\"}} {}",
        pool.size, pool.available, pool.max_size
    );
    out.push_str(
        "# HELP aide_stripe_webhook_signature_refusals_total Stripe webhook deliveries refused for their signature.\n",
    );
    out.push_str("# TYPE aide_stripe_webhook_signature_refusals_total counter\n");
    let _ = writeln!(
        out,
        "aide_stripe_webhook_signature_refusals_total {}",
        state.webhook_refusals.total()
    );
    let sentry = state.reporter.as_ref().map(|r| {
        let c = &r.counts;
        [
            c.sent.load(Ordering::Relaxed),
            c.dropped.load(Ordering::Relaxed),
            c.failed.load(Ordering::Relaxed),
        ]
    });
    let [sent, dropped, failed] = sentry.unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP aide_sentry_events_total Error reports to Sentry, by outcome (dropped: the queue was full or Sentry asked us to wait; failed: refused or unanswered).\n\
         # TYPE aide_sentry_events_total counter\n\
         aide_sentry_events_total{{outcome=\"sent\"}} {sent}\n\
         aide_sentry_events_total{{outcome=\"dropped\"}} {dropped}\n\
         aide_sentry_events_total{{outcome=\"failed\"}} {failed}"
    );
    let [sent, failed] = state
        .slack
        .as_ref()
        .map(|s| {
            [
                s.sent.load(Ordering::Relaxed),
                s.failed.load(Ordering::Relaxed),
            ]
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "# HELP aide_slack_messages_total Alerts posted to Slack, by outcome (failed: given up on after retries).\n\
         # TYPE aide_slack_messages_total counter\n\
         aide_slack_messages_total{{outcome=\"sent\"}} {sent}\n\
         aide_slack_messages_total{{outcome=\"failed\"}} {failed}"
    );
    let outbox = async {
        let tx = state.db.system().await.ok()?;
        let row = tx.row_opt::<OutboxRow>(&OUTBOX, &[]).await.ok()?;
        tx.rollback();
        row
    }
    .await;
    if let Some(outbox) = outbox {
        out.push_str("# HELP aide_outbox_emails Emails in the outbox, by status.\n");
        out.push_str("# TYPE aide_outbox_emails gauge\n");
        let _ = writeln!(
            out,
            "aide_outbox_emails{{status=\"pending\"}} {}\naide_outbox_emails{{status=\"dead\"}} {}",
            outbox.pending, outbox.dead
        );
        out.push_str(
            "# HELP aide_outbox_oldest_pending_seconds How long the oldest pending email has waited.\n",
        );
        out.push_str("# TYPE aide_outbox_oldest_pending_seconds gauge\n");
        let _ = writeln!(out, "aide_outbox_oldest_pending_seconds {}", outbox.oldest);
    }
    let mut response = (StatusCode::OK, out).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

struct OutboxRow {
    pending: i64,
    dead: i64,
    oldest: f64,
}

impl crate::db::FromRow for OutboxRow {
    fn from_row(row: &crate::db::Row) -> Result<Self, crate::db::Error> {
        Ok(OutboxRow {
            pending: row.try_get(0)?,
            dead: row.try_get(1)?,
            oldest: row.try_get(2)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_count_into_every_bucket_at_or_above() {
        let metrics = Metrics::default();
        metrics.observe(
            "GET",
            Some("/api/aides"),
            StatusCode::OK,
            Duration::from_millis(30),
        );
        metrics.observe(
            "GET",
            Some("/api/aides"),
            StatusCode::OK,
            Duration::from_secs(20),
        );
        metrics.observe(
            "BREW",
            None,
            StatusCode::NOT_FOUND,
            Duration::from_millis(1),
        );
        let mut out = String::new();
        metrics.write_requests(&mut out);
        assert!(out.contains(
            "aide_http_requests_total{method=\"GET\",route=\"/api/aides\",status=\"200\"} 2"
        ));
        assert!(out.contains("route=\"/api/aides\",status=\"200\",le=\"0.025\"} 0"));
        assert!(out.contains("route=\"/api/aides\",status=\"200\",le=\"0.05\"} 1"));
        assert!(out.contains("route=\"/api/aides\",status=\"200\",le=\"10\"} 1"));
        assert!(out.contains("route=\"/api/aides\",status=\"200\",le=\"+Inf\"} 2"));
        assert!(out.contains("method=\"other\",route=\"unmatched\",status=\"404\""));
        metrics.add(
            "aide_turns_total",
            &[("result", "completed"), ("given_back", "false")],
            1.0,
        );
        metrics.add(
            "aide_turns_total",
            &[("result", "completed"), ("given_back", "false")],
            1.0,
        );
        metrics.add(
            "aide_model_cost_microdollars_total",
            &[("model", "gpt-\"4\"")],
            1420.0,
        );
        let mut counters = String::new();
        metrics.write_counters(&mut counters);
        assert!(
            counters.contains("aide_turns_total{result=\"completed\",given_back=\"false\"} 2"),
            "{counters}"
        );
        assert!(
            counters.contains("aide_model_cost_microdollars_total{model=\"gpt-\\\"4\\\"\"} 1420"),
            "{counters}"
        );
        assert!(counters.contains("# TYPE aide_stripe_webhook_events_total counter"));
        assert_eq!(label("a\"b\\c"), "a\\\"b\\\\c");
    }
}
