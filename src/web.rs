//! The web app for people: pages rendered on the server from askama templates (`templates/`,
//! escaped by default, checked when the crate compiles), one stylesheet under a content-hashed
//! name, and a strict Content-Security-Policy on every page. Forms work without JavaScript: they
//! POST, then 303.

pub mod assets;
mod pages;
pub mod preview;

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use crate::config::Config;
use crate::error::AppError;

pub use pages::router;

/// What every page's frame shows.
#[derive(Debug, Clone)]
pub struct Layout {
    pub title: String,
    /// The stylesheet's and the icon's hashed addresses.
    pub css: &'static str,
    pub icon: &'static str,
    /// The signed-in person's address, for the header.
    pub user: Option<String>,
    /// A narrow column (forms) rather than the app's width.
    pub narrow: bool,
    /// When the signed-in account is being deleted: the day its data is erased.
    pub deleting: Option<String>,
}

impl Layout {
    pub fn new(title: impl Into<String>) -> Self {
        Layout {
            title: title.into(),
            css: assets::url("app.css"),
            icon: assets::url("icon.svg"),
            user: None,
            narrow: true,
            deleting: None,
        }
    }

    pub fn signed_in(title: impl Into<String>, email: &str) -> Self {
        Layout {
            user: Some(email.to_string()),
            narrow: false,
            ..Layout::new(title)
        }
    }

    /// With the banner of an account being deleted, erased after `purge_after`.
    pub fn deleting(mut self, purge_after: Option<chrono::DateTime<chrono::Utc>>) -> Self {
        self.deleting = purge_after.map(|at| at.format("%B %-d, %Y").to_string());
        self
    }
}

/// The policy of pages that need nothing but our stylesheet and forms posting to us.
pub const BASIC_CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The app's policy: our own scripts, styles and connections only; frames from the pages'
/// origin (previews); forms may lead to Stripe's Checkout and Billing Portal when billing is on
/// (Chrome checks `form-action` on the redirect after a form's POST).
pub fn app_csp(config: &Config) -> String {
    let frames = if config.pages_apart() {
        config.public_url.origin().ascii_serialization()
    } else {
        "'self'".to_string()
    };
    let mut forms = "'self'".to_string();
    if let Some(billing) = &config.billing {
        forms.push_str(" https://checkout.stripe.com https://billing.stripe.com");
        let api = billing.api_url.origin().ascii_serialization();
        if api != "https://api.stripe.com" {
            // A stand-in serves its Checkout and portal pages from its own origin.
            forms.push(' ');
            forms.push_str(&api);
        }
    }
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-src {frames}; form-action {forms}; base-uri 'none'; \
         object-src 'none'; frame-ancestors 'none'"
    )
}

/// A rendered page with its status and policy; never cached (pages are one person's).
pub fn respond(status: StatusCode, html: String, csp: &str) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(value) = HeaderValue::from_str(csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// Renders `template`; a template that fails to render is our error (500).
pub fn render(status: StatusCode, template: &impl Template, csp: &str) -> Response {
    match template.render() {
        Ok(html) => respond(status, html, csp),
        Err(e) => AppError::internal(e).into_response(),
    }
}

#[derive(Template)]
#[template(path = "page.html")]
struct RawPage<'a> {
    layout: Layout,
    body: &'a str,
}

/// A page around `body`, which must already be escaped where it holds anyone's text.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    render(
        status,
        &RawPage {
            layout: Layout::new(title),
            body,
        },
        BASIC_CSP,
    )
}

#[derive(Template)]
#[template(path = "not_found.html")]
struct NotFound {
    layout: Layout,
}

/// Our 404 page.
pub fn not_found() -> Response {
    render(
        StatusCode::NOT_FOUND,
        &NotFound {
            layout: Layout::new("Not found"),
        },
        BASIC_CSP,
    )
}

/// A failed form, as a page: what went wrong and a way back. Signed out, the way back is signing
/// in; a 404 is our 404 page.
pub fn error_page(error: AppError, back: &str) -> Response {
    match error.status() {
        StatusCode::UNAUTHORIZED => return Redirect::to("/").into_response(),
        StatusCode::NOT_FOUND => return not_found(),
        _ => {}
    }
    let body = format!(
        "<h1>That didn't work</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"{}\">Back</a></p>",
        crate::html::escape(&error.detail_for_client()),
        crate::html::escape(back),
    );
    let mut response = page(error.status(), "That didn't work", &body);
    error.decorate(&mut response);
    response
}
