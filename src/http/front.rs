//! The one layer around every request, in the order it runs: the request id and its tracing
//! span, the host check (see [`super::hosts`]), the CSRF check (see [`super::guard`]), the
//! deadline, the headers every response carries, and one log line when the request finishes.
//!
//! One layer rather than several: each `from_fn` layer costs a boxed future and a clone of the
//! state per request, and the request id alone (a UUID from the operating system's random
//! source, then a separate layer) cost a quarter of `/health`'s throughput. See
//! docs/PERFORMANCE.md.

use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt as _;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::{REQUEST_TIMEOUT, UPLOAD_TIMEOUT, guard, hosts, request_id};
use crate::error::AppError;
use crate::state::AppState;
use crate::telemetry::RequestContext;

/// Headers every response carries unless its handler set its own.
const DEFAULT_HEADERS: [(header::HeaderName, &str); 4] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
];

pub async fn front(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = request_id::for_request(request.headers().get(&request_id::HEADER));
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        method = %request.method(),
        request_id = ?id,
        route = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let context = Arc::new(RequestContext::new(
        id.clone(),
        &method,
        state.reporter.clone(),
    ));
    let mut response = crate::telemetry::with_request(
        context.clone(),
        guarded(&state, request, next).instrument(span.clone()),
    )
    .await;
    response
        .headers_mut()
        .insert(request_id::HEADER.clone(), id);
    let route = response
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let took = started.elapsed();
    state
        .metrics
        .observe(method.as_str(), route.as_deref(), response.status(), took);
    state.ops_counts.request(response.status());
    let status = response.status().as_u16();
    if status >= 500 && status != 503 && !context.panicked() {
        report_failure(&context, route.as_deref(), &response);
    }
    if !span.is_disabled() {
        let duration_ms = took.as_secs_f64() * 1000.0;
        span.record(
            "route",
            route.as_deref().unwrap_or(crate::metrics::UNMATCHED),
        );
        span.in_scope(|| {
            if status >= 500 {
                tracing::warn!(status, duration_ms, "request finished");
            } else {
                tracing::info!(status, duration_ms, "request finished");
            }
        });
    }
    response
}

/// Sends a 5xx answer (other than 503, a deliberate "try again") to Sentry when it is on.
fn report_failure(context: &RequestContext, route: Option<&str>, response: &Response) {
    let Some(reporter) = &context.reporter else {
        return;
    };
    let route = route.unwrap_or(crate::metrics::UNMATCHED);
    let message = response
        .extensions()
        .get::<crate::error::InternalCause>()
        .map(|cause| cause.0.clone())
        .unwrap_or_else(|| format!("answered {}", response.status()));
    reporter.capture(crate::sentry::Report {
        level: "error",
        kind: if response.status() == StatusCode::INTERNAL_SERVER_ERROR {
            "InternalError".to_string()
        } else {
            format!("HTTP {}", response.status().as_u16())
        },
        message,
        transaction: Some(format!("{} {route}", context.method)),
        user: context.user(),
        request: Some((context.method.clone(), route.to_string())),
        request_id: context.id.to_str().ok().map(str::to_owned),
        frames: Vec::new(),
    });
}

/// Everything inside the request's span.
async fn guarded(state: &AppState, request: Request, next: Next) -> Response {
    let config = &state.config;
    let private = guard::is_private(&request, &config.app_url);
    let refusal =
        hosts::refuse(config, &request).or_else(|| guard::refuse_cross_site(config, &request));
    let mut response = match refusal {
        Some(refusal) => refusal,
        None => deadline(request, next).await,
    };
    let headers = response.headers_mut();
    if private && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    // A response that names who may frame it (a preview, framed by the app) keeps that rule:
    // X-Frame-Options cannot name another origin.
    let framed_by_rule = headers
        .get(header::CONTENT_SECURITY_POLICY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|csp| {
            csp.contains("frame-ancestors") && !csp.contains("frame-ancestors 'none'")
        });
    for (name, value) in DEFAULT_HEADERS {
        if framed_by_rule && name == header::X_FRAME_OPTIONS {
            continue;
        }
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    if config.app_url.scheme() == "https" {
        headers.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000; includeSubDomains"),
        );
    }
    response
}

/// Answers 408 when a request runs past its time: [`UPLOAD_TIMEOUT`] for file uploads,
/// publishes and restores (which copy every new file to the published bucket),
/// [`REQUEST_TIMEOUT`] for everything else.
async fn deadline(request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let upload = path.starts_with("/api/aides/")
        && ((request.method() == Method::PUT && path.contains("/files/"))
            || (request.method() == Method::POST
                && (path.ends_with("/publish") || path.ends_with("/restore"))));
    let limit = if upload {
        UPLOAD_TIMEOUT
    } else {
        REQUEST_TIMEOUT
    };
    let run = std::panic::AssertUnwindSafe(next.run(request)).catch_unwind();
    match tokio::time::timeout(limit, run).await {
        Ok(Ok(response)) => response,
        // The panic hook has reported it (with its stack) and the process goes on; the client
        // gets our 500.
        Ok(Err(_)) => AppError::internal(anyhow::anyhow!("a handler panicked")).into_response(),
        Err(_) => AppError::client(
            StatusCode::REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT",
            "The request took too long and was stopped. Please try again.",
        )
        .into_response(),
    }
}
