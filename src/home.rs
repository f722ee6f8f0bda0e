//! `GET /`: a minimal page for people. Signed out, a sign-in form; signed in, who you are and a
//! way out. Server-rendered, no JavaScript.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;

use crate::auth::CurrentUser;
use crate::error::AppError;
use crate::html::{escape, page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/", get(home))
}

async fn home(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(page(StatusCode::OK, "Sign in", SIGNED_OUT));
    };
    let tx = state.db.user(user.user_id).await?;
    let me = crate::auth::routes::me_summary(&tx).await?;
    tx.rollback();
    let Some((email, tier)) = me else {
        return Ok(page(StatusCode::OK, "Sign in", SIGNED_OUT));
    };
    let body = format!(
        "<h1>AIde</h1>\
         <p>Signed in as <strong>{}</strong> ({} plan).</p>\
         <p><a href=\"/api/docs\">API documentation</a> · <a href=\"/api/openapi.json\">OpenAPI document</a></p>\
         <form method=\"post\" action=\"/auth/logout\"><button type=\"submit\">Log out</button></form>\
         <form method=\"post\" action=\"/auth/logout-all\"><button type=\"submit\">Log out everywhere</button></form>",
        escape(&email),
        tier
    );
    Ok(page(StatusCode::OK, "Home", &body))
}

const SIGNED_OUT: &str = "<h1>AIde</h1>\
    <p>Build a living page through conversation and share it.</p>\
    <form method=\"post\" action=\"/auth/send\">\
    <label for=\"email\">Email</label>\
    <input id=\"email\" name=\"email\" type=\"email\" autocomplete=\"email\" required>\
    <button type=\"submit\">Email me a sign-in link</button></form>\
    <p class=\"muted\">No password: we email you a link (and a code for signing in on another device).</p>\
    <p class=\"muted\"><a href=\"/api/docs\">API documentation</a></p>";
