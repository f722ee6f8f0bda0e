//! The CSRF check on state-changing requests, and which answers are one person's (and get
//! `Cache-Control: no-store`). [`super::front`] applies both to every request.

use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use crate::error::AppError;

/// Whether the answer to `request` is one person's and must not be stored by a browser or proxy
/// cache: a request to `/auth/*` or `/api/*` that carries the session cookie or a Bearer token.
/// (Such answers hold account data and tokens; a shared computer's cache would keep them.)
pub(super) fn is_private(request: &Request, app_url: &Url) -> bool {
    let path = request.uri().path();
    (path.starts_with("/auth/") || path.starts_with("/api/"))
        && crate::auth::carries_credentials(request.headers(), app_url)
}

/// Refuses a state-changing request that a browser sent from another origin.
///
/// When a request carries an Origin header, it must be APP_URL's origin. A request authenticated by
/// the session cookie must carry Origin or, failing that, a Referer on APP_URL's origin. Only a
/// well-formed `Authorization: Bearer` header (the one the session extractor reads, which then
/// wins over the cookie) makes a request not cookie-authenticated: a browser may attach Basic or
/// Negotiate credentials on its own, and with those the cookie still signs the request in. Requests without a cookie and without Origin (API clients, webhooks) pass: a
/// browser always sends Origin on a cross-origin POST.
pub(super) fn refuse_cross_site(
    config: &crate::config::Config,
    request: &Request,
) -> Option<Response> {
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return None;
    }
    let reason = check(request.headers(), &config.app_url).err()?;
    tracing::warn!(reason, "cross-site request refused");
    let from_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let err = AppError::forbidden(
        "CSRF_REJECTED",
        "This request came from another site and was refused. Reload the page and try again.",
    );
    Some(if from_form {
        let body = format!(
            "<h1>Refused</h1><p class=\"error\">{}</p><p><a href=\"/\">Home</a></p>",
            crate::html::escape(&err.to_string())
        );
        crate::html::page(err.status(), "Refused", &body)
    } else {
        err.into_response()
    })
}

fn check(headers: &HeaderMap, app_url: &Url) -> Result<(), &'static str> {
    let expected = app_url.origin().ascii_serialization();
    if let Some(origin) = headers.get(header::ORIGIN) {
        return if origin.as_bytes() == expected.as_bytes() {
            Ok(())
        } else {
            Err("origin mismatch")
        };
    }
    let cookie_authenticated = crate::auth::bearer_token(headers).is_none()
        && crate::auth::session_cookie(headers, app_url).is_some();
    if !cookie_authenticated {
        return Ok(());
    }
    let referer_origin = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| Url::parse(v).ok())
        .map(|u| u.origin().ascii_serialization());
    match referer_origin {
        Some(origin) if origin == expected => Ok(()),
        Some(_) => Err("referer mismatch"),
        None => Err("no origin or referer on a cookie-authenticated request"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).expect("header value"));
        }
        map
    }

    #[test]
    fn origin_rules() {
        let app = Url::parse("https://app.example.com").expect("url");
        assert!(check(&headers(&[("origin", "https://app.example.com")]), &app).is_ok());
        assert!(check(&headers(&[("origin", "https://evil.example")]), &app).is_err());
        assert!(check(&headers(&[("origin", "null")]), &app).is_err());
        // No cookie, no origin: an API client.
        assert!(check(&headers(&[]), &app).is_ok());
        // A cookie by another name is not ours (the app is https, so ours is `__Host-session`).
        assert!(check(&headers(&[("cookie", "session=x")]), &app).is_ok());
        // Cookie without origin: the referer decides.
        assert!(check(&headers(&[("cookie", "__Host-session=x")]), &app).is_err());
        assert!(
            check(
                &headers(&[
                    ("cookie", "__Host-session=x"),
                    ("referer", "https://app.example.com/page")
                ]),
                &app
            )
            .is_ok()
        );
        assert!(
            check(
                &headers(&[
                    ("cookie", "__Host-session=x"),
                    ("referer", "https://app.example.com.evil.example/")
                ]),
                &app
            )
            .is_err()
        );
        // A bearer token is not sent by browsers on their own.
        assert!(
            check(
                &headers(&[
                    ("cookie", "__Host-session=x"),
                    ("authorization", "Bearer t")
                ]),
                &app
            )
            .is_ok()
        );
        // Other schemes are, and then the cookie still authenticates.
        for scheme in ["Basic dTpw", "Negotiate abc", "Bearer", "Bearer  "] {
            assert!(
                check(
                    &headers(&[("cookie", "__Host-session=x"), ("authorization", scheme)]),
                    &app
                )
                .is_err(),
                "{scheme}"
            );
        }
    }
}
