//! `GET /s/{slug}`, `/s/{slug}/{path}` (latest version) and `/s/{slug}/v/{n}/{path}` (version n).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::cache::{Key, Served};
use super::{inject, repo};
use crate::error::AppError;
use crate::files::FilePath;
use crate::html::page;
use crate::http::AppState;

/// Never `allow-same-origin`: the page runs in an opaque origin, away from the app's cookies.
const SANDBOX: &str = "sandbox allow-scripts allow-forms allow-popups";
const LATEST_CACHE: &str = "public, max-age=60";
const VERSION_CACHE: &str = "public, max-age=31536000, immutable";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/s/{slug}", get(root))
        .route("/s/{slug}/", get(root))
        .route("/s/{slug}/{*rest}", get(file))
}

async fn root(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    serve(&state, &slug, None, "", &headers).await
}

async fn file(
    State(state): State<AppState>,
    Path((slug, rest)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    // `v/{n}/...` addresses version n; anything else is a path in the latest version.
    if let Some(after) = rest.strip_prefix("v/") {
        let (number, path) = after.split_once('/').unwrap_or((after, ""));
        if let Ok(version) = number.parse::<i32>()
            && version >= 1
        {
            return serve(&state, &slug, Some(version), path, &headers).await;
        }
    }
    serve(&state, &slug, None, &rest, &headers).await
}

async fn serve(
    state: &AppState,
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
    let live = match state.live_pages.lookup(slug, version, path.as_str()) {
        Some(answer) => answer,
        None => {
            let generation = state.live_pages.generation();
            let mut tx = state.db.system().await?;
            let answer = repo::live_file(&mut tx, slug, version, path.as_str())
                .await?
                .map(Arc::new);
            tx.commit().await?;
            state
                .live_pages
                .store(generation, slug, version, path.as_str(), answer.clone());
            answer
        }
    };
    let Some(live) = live else {
        return Ok(not_found());
    };

    let is_page = path.as_str() == "index.html";
    let key = Key {
        aide: live.aide_id,
        version: live.version,
        path: path.as_str().to_string(),
        footer: is_page && live.tier != "pro",
        title: if is_page {
            live.title.clone()
        } else {
            String::new()
        },
    };
    let served = match state.page_cache.get(&key) {
        Some(served) => served,
        None => {
            let object = object_store::path::Path::from(format!(
                "aides/{}/v{}/{}",
                live.aide_id,
                live.version,
                path.as_str()
            ));
            let bytes = state
                .storage
                .published
                .get(&object)
                .await
                .map_err(AppError::internal)?
                .bytes()
                .await
                .map_err(AppError::internal)?;
            let body = if is_page {
                let html = String::from_utf8_lossy(&bytes);
                let url = state
                    .config
                    .public_url_for(&format!("s/{slug}/"))
                    .to_string();
                let mut html = inject::open_graph(&html, &live.title, &url);
                if key.footer {
                    html = inject::footer(&html, state.config.app_url.as_str());
                }
                html.into_bytes().into()
            } else {
                bytes
            };
            let digest = Sha256::digest(&body);
            let etag = format!(
                "\"{}\"",
                digest
                    .iter()
                    .take(16)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            let served = Arc::new(Served {
                body,
                etag,
                content_type: with_charset(&live.content_type),
            });
            state.page_cache.insert(key, served.clone());
            served
        }
    };

    let cache_control = if version.is_some() {
        VERSION_CACHE
    } else {
        LATEST_CACHE
    };
    let not_modified = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|list| {
            list.split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == served.etag || t == "*")
        });
    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, served.body.clone()).into_response()
    };
    let out = response.headers_mut();
    if !not_modified && let Ok(value) = HeaderValue::from_str(&served.content_type) {
        out.insert(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&served.etag) {
        out.insert(header::ETAG, value);
    }
    out.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
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
    Ok(response)
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
