//! The sign-in pages: what a browser sees at each step.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

use super::email_address::masked;
use crate::error::AppError;
use crate::html::{escape, page};

/// `GET /auth/verify`: a button that signs in to `email`'s account, named (masked) so that a
/// person handed someone else's link sees whose account it is. When the browser is already signed
/// in to another account (`signed_in_as`), the page says that pressing the button switches.
/// The GET itself changes nothing, so a mail scanner that fetches the link uses nothing up.
pub fn confirm_sign_in(token: &str, email: &str, signed_in_as: Option<&str>) -> Response {
    let target = escape(&masked(email));
    let switching = match signed_in_as {
        Some(current) if current != email => format!(
            "<p class=\"error\">You are signed in as <strong>{}</strong>; continuing signs you in \
             as <strong>{target}</strong> instead.</p>",
            escape(&masked(current))
        ),
        _ => String::new(),
    };
    let body = format!(
        "<h1>Sign in to AIde</h1>\
         <p>This link signs in as <strong>{target}</strong>.</p>{switching}\
         <p>Press the button to finish signing in on this device.</p>\
         <form method=\"post\" action=\"/auth/verify\">\
         <input type=\"hidden\" name=\"token\" value=\"{}\">\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\">Not your address, or didn't ask to sign in? Close this page; nothing \
         happens unless you press the button.</p>",
        escape(token)
    );
    let mut response = page(StatusCode::OK, "Sign in", &body);
    // The token is in this page's URL: never send it to another site as a Referer. (Not
    // `no-referrer`: with it, browsers send `Origin: null` on the form's POST, which the CSRF
    // check rightly refuses.)
    response.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// After `POST /auth/send` from the form: check your email, or type the code here.
pub fn check_email(email: &str, ttl_minutes: u32) -> Response {
    let email = escape(email);
    let body = format!(
        "<h1>Check your email</h1>\
         <p>If <strong>{email}</strong> can receive email, a sign-in link is on its way. \
         It works for {ttl_minutes} minutes.</p>\
         <h2>Reading your email on another device?</h2>\
         <p>Enter the six-digit code from the email here instead.</p>\
         <form method=\"post\" action=\"/auth/verify-code\">\
         <input type=\"hidden\" name=\"email\" value=\"{email}\">\
         <label for=\"code\">Code</label>\
         <input id=\"code\" name=\"code\" inputmode=\"numeric\" autocomplete=\"one-time-code\" required>\
         <button type=\"submit\">Sign in</button></form>\
         <p class=\"muted\"><a href=\"/\">Use another address</a></p>"
    );
    page(StatusCode::OK, "Check your email", &body)
}

/// Any sign-in error, for a browser: what went wrong and a way to ask for a new link.
pub fn error(err: AppError) -> Response {
    let status = err.status();
    let detail = err.detail_for_client();
    let body = format!(
        "<h1>That didn't work</h1><p class=\"error\">{}</p>\
         <form method=\"post\" action=\"/auth/send\">\
         <label for=\"email\">Email me a new sign-in link</label>\
         <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required>\
         <button type=\"submit\">Send link</button></form>\
         <p class=\"muted\"><a href=\"/\">Home</a></p>",
        escape(&detail)
    );
    let mut response = page(status, "Sign-in problem", &body);
    err.decorate(&mut response);
    response
}
