//! Which host answers what, when published pages have an origin of their own (PUBLIC_URL's host
//! differs from APP_URL's): `/s/` only on PUBLIC_URL's host, and the app (`/`, `/auth`, `/api`)
//! only on APP_URL's. A page, which is user-written HTML, then never runs on the app's origin,
//! where it could ask for a sign-in code under the real domain or lean on a forgotten header.
//! `/health` and `/ready` answer on any host, for probes that address the server directly, and so
//! does `/static/` (the stylesheet, which pages of both sides use).
//!
//! With one host for both (the development default) nothing is checked, and the server warns at
//! start (see `Config::warnings`).

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use url::Url;

use crate::config::Config;
use crate::error::AppError;

/// None when `request` is for the side of the service its host serves; otherwise the answer: a
/// redirect for a page asked for on the app's host, 404 for anything else.
pub fn refuse(config: &Config, request: &Request) -> Option<Response> {
    if !config.pages_apart() {
        return None;
    }
    let path = request.uri().path();
    // Probes, and our own stylesheet (the pages' 404 page uses it too).
    if path == "/health" || path == "/ready" || path.starts_with("/static/") {
        return None;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Published pages, and previews of drafts: user-written HTML, kept off the app's host.
    let is_page = path == "/s" || path.starts_with("/s/") || path.starts_with("/p/");
    if is_page && is_host_of(host, &config.public_url) {
        return None;
    }
    if !is_page && is_host_of(host, &config.app_url) {
        return None;
    }
    if is_page
        && is_host_of(host, &config.app_url)
        && matches!(*request.method(), Method::GET | Method::HEAD)
    {
        // An old link to a page on the app's host: the same path on the pages' host.
        let mut target = config.public_url_for(path);
        target.set_query(request.uri().query());
        let mut response = Redirect::permanent(target.as_str()).into_response();
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=3600"),
        );
        return Some(response);
    }
    tracing::info!(host, path, "request for another host's side of the service");
    let not_here = AppError::client(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "There is nothing at this address.",
    );
    Some(if path.starts_with("/api/") || path.starts_with("/auth/") {
        not_here.into_response()
    } else {
        crate::html::page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>Not found</h1><p>There is nothing at this address.</p>",
        )
    })
}

/// Whether a Host header names `url`'s host and port. A header without a port means the
/// scheme's default one (as a proxy terminating TLS sends it).
pub fn is_host_of(host: &str, url: &Url) -> bool {
    let host = host.trim().to_ascii_lowercase();
    let (name, port) = match host.rsplit_once(':') {
        // Not the colons inside a bracketed IPv6 address.
        Some((name, port)) if !port.contains(']') => match port.parse::<u16>() {
            Ok(port) => (name, port),
            Err(_) => return false,
        },
        _ => (
            host.as_str(),
            if url.scheme() == "https" { 443 } else { 80 },
        ),
    };
    !name.is_empty()
        && url.host_str().is_some_and(|h| h.eq_ignore_ascii_case(name))
        && url.port_or_known_default() == Some(port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_match_with_and_without_default_ports() {
        let app = Url::parse("https://app.example.com").expect("url");
        assert!(is_host_of("app.example.com", &app));
        assert!(is_host_of("App.Example.com:443", &app));
        assert!(!is_host_of("app.example.com:8443", &app));
        assert!(!is_host_of("pages.example.com", &app));
        assert!(!is_host_of("", &app));
        let local = Url::parse("http://127.0.0.1:8000").expect("url");
        assert!(is_host_of("127.0.0.1:8000", &local));
        assert!(!is_host_of("127.0.0.1", &local));
        assert!(!is_host_of("127.0.0.1:8001", &local));
        let v6 = Url::parse("http://[::1]:8000").expect("url");
        assert!(is_host_of("[::1]:8000", &v6));
        assert!(!is_host_of("[::1]", &v6));
    }
}
