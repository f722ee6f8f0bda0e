//! The signed-in account: `GET /auth/me`, `POST /auth/logout`, `POST /auth/logout-all`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::UserResponse;
use crate::audit::{self, Entry};
use crate::auth::{CurrentUser, SessionUser, repo, session};
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::state::AppState;

/// The signed-in user's public fields and this week's turn usage.
#[utoipa::path(
    get, path = "/auth/me", tag = "auth",
    responses(
        (status = 200, body = UserResponse),
        (status = 401, description = "No live session", body = crate::error::ErrorBody),
    ),
    security(("session_cookie" = []), ("bearer" = []))
)]
pub async fn me(
    State(state): State<AppState>,
    user: SessionUser,
) -> Result<Json<UserResponse>, AppError> {
    let tx = user.begin_read(&state.db).await?;
    let me = repo::me(&tx).await?;
    tx.finish();
    let me = me.ok_or_else(AppError::unauthorized)?;
    Ok(Json(UserResponse::new(me, &state.config, Utc::now())))
}

/// Ends this session at once: its token gets 401 from now on. Logging out is idempotent: with a
/// session that is already dead (revoked, expired, forged) or none at all, it changes nothing and
/// still answers as a success and clears the cookie, so a browser is never left holding a dead
/// one.
#[utoipa::path(
    post, path = "/auth/logout", tag = "auth",
    responses(
        (status = 204, description = "Signed out (or there was no live session to end); the cookie is cleared"),
        (status = 303, description = "The same, from a form; the browser goes home"),
        (status = 403, description = "Cross-site request (CSRF_REJECTED)", body = crate::error::ErrorBody),
    ),
    security(("session_cookie" = []), ("bearer" = []), ())
)]
pub async fn logout(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(signed_out(&state, &headers));
    };
    let tx = state.db.system().await?;
    let entry = Entry::new("auth.logout", "session")
        .user(user.user_id)
        .resource(user.session_id)
        .ip(ip);
    futures_util::future::try_join3(
        repo::revoke_session(&tx, user.session_id),
        audit::record_system(&tx, &entry),
        tx.commit_queued(),
    )
    .await?;
    Ok(signed_out(&state, &headers))
}

/// Ends every session of the user, on every device. Without a live session it ends nothing (a
/// revoked token must not sign its owner out everywhere), answers 401 and clears the cookie.
#[utoipa::path(
    post, path = "/auth/logout-all", tag = "auth",
    responses(
        (status = 204, description = "Every session ended; the cookie is cleared"),
        (status = 303, description = "Same, from a form; the browser goes home"),
        (status = 401, description = "No live session; the cookie is cleared", body = crate::error::ErrorBody),
        (status = 403, description = "Cross-site request (CSRF_REJECTED)", body = crate::error::ErrorBody),
    ),
    security(("session_cookie" = []), ("bearer" = []))
)]
pub async fn logout_all(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        let mut response = AppError::unauthorized().into_response();
        response.headers_mut().insert(
            header::SET_COOKIE,
            session::clear_cookie(&state.config.app_url),
        );
        return Ok(response);
    };
    let tx = state.db.system().await?;
    let ended = repo::revoke_all_sessions(&tx, user.user_id).await?;
    futures_util::future::try_join(
        audit::record_system(
            &tx,
            &Entry::new("auth.logout_all", "user")
                .user(user.user_id)
                .resource(user.user_id.0)
                .details(serde_json::json!({"sessions_ended": ended}))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    Ok(signed_out(&state, &headers))
}

/// 303 home for a browser form, 204 otherwise; either way the cookie goes.
fn signed_out(state: &AppState, headers: &HeaderMap) -> Response {
    let from_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut response = if from_form {
        Redirect::to(state.config.app_url.as_str()).into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::clear_cookie(&state.config.app_url),
    );
    response
}
