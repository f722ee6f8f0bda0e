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
use sha2::{Digest, Sha256};

use super::cache::{Key, MAX_CACHED_BYTES, Served};
use super::{inject, repo};
use crate::error::AppError;
use crate::files::FilePath;
use crate::html::page;
use crate::http::AppState;
use crate::http::client_ip::{ClientIp, network_key};
use crate::limits::Rate;

/// Never `allow-same-origin`: the page runs in an opaque origin, away from the app's cookies.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups";
const LATEST_CACHE: &str = "public, max-age=60";
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
            let mut tx = state.db.system().await?;
            let answer = repo::live_page(&mut tx, slug, version).await?.map(Arc::new);
            tx.commit().await?;
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

    let size = u64::try_from(file.size_bytes).unwrap_or(0);
    let is_html = file.content_type.starts_with("text/html");
    let footer = is_html && page.tier != "pro";
    // Open Graph tags go into the page itself, when it is small enough to hold in memory; the
    // free tier's footer goes into every HTML file, whatever its size.
    let open_graph = path.as_str() == "index.html" && size <= MAX_CACHED_BYTES;
    let page_url = state
        .config
        .public_url_for(&format!("s/{slug}/"))
        .to_string();
    let additions = if is_html && (footer || open_graph) {
        format!(
            "{footer}\u{0}{open_graph}\u{0}{}\u{0}{page_url}",
            page.title
        )
    } else {
        String::new()
    };
    let etag = etag(&file.sha256, &additions);
    let cache_control = if version.is_some() {
        VERSION_CACHE
    } else {
        LATEST_CACHE
    };
    let content_type = with_charset(&file.content_type);
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| {
            list.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == etag || t == "*")
        });
    let object = crate::publishing::object_key(&page.r2_key, path.as_str(), &file.sha256);

    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if additions.is_empty() && size > MAX_CACHED_BYTES {
        // Large and served as stored: streamed, never held whole in memory.
        let stream = state
            .storage
            .published
            .get(&object)
            .await
            .map_err(AppError::internal)?
            .into_stream();
        let mut response = Body::from_stream(stream).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(size));
        response
    } else {
        let key = Key {
            object: object.to_string(),
            additions,
        };
        let served = state
            .page_cache
            .get_or_load(&key, size, || async {
                let bytes = state.storage.published.get(&object).await?.bytes().await?;
                let body = if key.additions.is_empty() {
                    bytes
                } else {
                    let mut html = String::from_utf8_lossy(&bytes).into_owned();
                    if open_graph {
                        html = inject::open_graph(&html, &page.title, &page_url);
                    }
                    if footer {
                        html = inject::footer(&html, state.config.app_url.as_str());
                    }
                    html.into_bytes().into()
                };
                Ok::<_, object_store::Error>(Served { body })
            })
            .await
            .map_err(AppError::internal)?;
        (StatusCode::OK, served.body.clone()).into_response()
    };
    let out = response.headers_mut();
    if !not_modified && let Ok(value) = HeaderValue::from_str(&content_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    sandbox(out);
    Ok(response)
}

/// A strong ETag from the stored content and what serving adds to it.
fn etag(sha256: &[u8], additions: &str) -> String {
    let digest: Vec<u8> = if additions.is_empty() {
        sha256.to_vec()
    } else {
        let mut hasher = Sha256::new();
        hasher.update(sha256);
        hasher.update(additions.as_bytes());
        hasher.finalize().to_vec()
    };
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
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

/// Text types get an explicit charset.
fn with_charset(content_type: &str) -> String {
    let text = content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg+xml");
    if text && !content_type.contains("charset") {
        format!("{content_type}; charset=utf-8")
    } else {
        content_type.to_string()
    }
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
