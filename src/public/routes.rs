//! `GET /s/{slug}`, `/s/{slug}/{path}` (latest version) and `/s/{slug}/v/{n}/{path}` (version n).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::cache::Served;
use super::page::prepare;
use super::{inject, repo};
use crate::error::AppError;
use crate::files::FilePath;
use crate::html::page;
use crate::http::client_ip::{ClientIp, network_key};
use crate::limits::Rate;
use crate::state::AppState;

/// Never `allow-same-origin`: the page runs in an opaque origin, away from the app's cookies.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups";
/// The latest version may change or be taken down at any moment: caches keep it but ask again
/// each time (a `304` costs no storage read), so an unpublish reaches every visitor at once.
const LATEST_CACHE: &str = "public, no-cache";
/// A version's bytes never change, but its owner may take it down (unpublish, archive, delete):
/// an hour is how long a shared cache may keep serving it after that.
const VERSION_CACHE: &str = "public, max-age=3600, immutable";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{slug}", get(root))
        .route("/s/{slug}/", get(root))
        .route("/s/{slug}/{*rest}", get(file))
}

async fn root(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(&state, ip, &slug, None, "", &headers).await
}

async fn file(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    Path((slug, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // `v/{n}/...` addresses version n; anything else is a path in the latest version.
    if let Some(after) = rest.strip_prefix("v/") {
        let (number, path) = after.split_once('/').unwrap_or((after, ""));
        if let Ok(version) = number.parse::<i32>()
            && version >= 1
        {
            return serve(&state, ip, &slug, Some(version), path, &headers).await;
        }
    }
    serve(&state, ip, &slug, None, &rest, &headers).await
}

async fn serve(
    state: &AppState,
    ip: IpAddr,
    slug: &str,
    version: Option<i32>,
    path: &str,
    headers: &HeaderMap,
) -> Result<Response, AppError> {
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    let Ok(path) = FilePath::parse(&path) else {
        return Ok(not_found());
    };
    if crate::aides::model::Slug::parse(slug).is_err() {
        return Ok(not_found());
    }
    let page = match state.live_pages.lookup(slug, version) {
        Some(answer) => answer,
        None => {
            // Not answerable from memory: a query, so it counts against the client's budget.
            let rate = Rate::per_minute(state.config.limits.public_misses_per_ip_per_minute);
            if let Err(wait) = state
                .public_misses
                .check(&network_key(ip), rate, Instant::now())
            {
                return Ok(too_many(wait));
            }
            let generation = state.live_pages.generation();
            let tx = state.db.system().await?;
            let (answer, ()) = futures_util::future::try_join(
                repo::live_page(&tx, slug, version),
                tx.commit_queued(),
            )
            .await?;
            let answer = answer.map(|page| Arc::new(prepare(&state.config, slug, page)));
            state
                .live_pages
                .store(generation, slug, version, answer.clone());
            answer
        }
    };
    let Some(page) = page else {
        return Ok(not_found());
    };
    let Some(file) = page.files.get(path.as_str()) else {
        return Ok(not_found());
    };

    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .is_some_and(|list| matches_etag(list.as_bytes(), file.etag.as_bytes()));
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if file.streams() {
        // Large and served as stored: streamed, never held whole in memory.
        let stream = state
            .storage
            .published
            .get(&file.object)
            .await
            .map_err(AppError::storage)?
            .into_stream();
        let mut response = Body::from_stream(stream).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(file.size));
        response
    } else {
        let served = state
            .page_cache
            .get_or_load(&file.key, file.size, || async {
                let bytes = state
                    .storage
                    .published
                    .get(&file.object)
                    .await?
                    .bytes()
                    .await?;
                let body = match file.inject {
                    None => bytes,
                    Some(inject) => {
                        let mut html = String::from_utf8_lossy(&bytes).into_owned();
                        if inject.open_graph {
                            html = inject::open_graph(&html, &page.title, &page.url);
                        }
                        if inject.footer {
                            html = inject::footer(&html, state.config.app_url.as_str());
                        }
                        html.into_bytes().into()
                    }
                };
                Ok::<_, object_store::Error>(Served { body })
            })
            .await
            .map_err(AppError::storage)?;
        (StatusCode::OK, served.body.clone()).into_response()
    };
    let out = response.headers_mut();
    if !not_modified {
        out.insert(header::CONTENT_TYPE, file.content_type.clone());
    }
    out.insert(header::ETAG, file.etag.clone());
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if version.is_some() {
            VERSION_CACHE
        } else {
            LATEST_CACHE
        }),
    );
    sandbox(out);
    Ok(response)
}

/// Whether an If-None-Match list names `etag` (weak or strong), or is `*`.
fn matches_etag(list: &[u8], etag: &[u8]) -> bool {
    list.split(|b| *b == b',').any(|candidate| {
        let candidate = candidate.trim_ascii();
        let candidate = candidate.strip_prefix(b"W/").unwrap_or(candidate);
        candidate == etag || candidate == b"*"
    })
}

/// The headers that keep a user-written page away from the app: an opaque origin, no sniffing.
fn sandbox(out: &mut HeaderMap) {
    out.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    out.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    out.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
}

/// 429 for a client that asked for too many pages memory could not answer.
fn too_many(wait: std::time::Duration) -> Response {
    let mut response = page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        "<h1>Too many requests</h1><p>Too many pages were asked for from your network. Please wait a moment and try again.</p>",
    );
    let headers = response.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64),
    );
    sandbox(headers);
    response
}

fn not_found() -> Response {
    let mut response = page(
        StatusCode::NOT_FOUND,
        "Page not found",
        "<h1>Page not found</h1><p>There is no published page here. It may have been unpublished or moved.</p>",
    );
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX),
    );
    response
}
