//! Verification: `GET /auth/verify` (a page, changes nothing), `POST /auth/verify` (the link's
//! token) and `POST /auth/verify-code` (the code, for another device).

use std::net::IpAddr;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use super::{SignedIn, UserResponse};
use crate::audit::{self, Entry};
use crate::auth::repo::{self, LinkProblem, MAX_CODE_ATTEMPTS};
use crate::auth::{CurrentUser, EmailAddress, pages, session, tokens};
use crate::db::SystemTx;
use crate::error::AppError;
use crate::http::client_ip::{ClientIp, network_key};
use crate::http::input::{Input, Via};
use crate::http::params::QueryParams;
use crate::limits::{self, Rate};
use crate::state::AppState;

#[derive(Debug, Deserialize, IntoParams, ToSchema)]
#[into_params(parameter_in = Query)]
pub struct TokenParam {
    /// The token from the emailed link.
    #[param(pattern = "^[A-Za-z0-9_-]{43}$")]
    #[schema(pattern = "^[A-Za-z0-9_-]{43}$")]
    pub token: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CodeRequest {
    pub email: String,
    /// The six-digit code from the email (spaces allowed).
    pub code: String,
}

/// The page behind the emailed link: the (masked) address it signs in to and a "Sign in" button,
/// with a warning when the browser is signed in to another account. Fetching it consumes
/// nothing, so mail scanners that open every link do no harm.
#[utoipa::path(
    get, path = "/auth/verify", tag = "auth", params(TokenParam),
    responses(
        (status = 200, description = "HTML page naming the account (as `a•••@example.com`) with a Sign in button that posts the token; it warns when another account is signed in", content_type = "text/html"),
        (status = 400, description = "HTML page: the link is unknown", content_type = "text/html"),
        (status = 410, description = "HTML page: the link expired or was used", content_type = "text/html"),
    )
)]
pub async fn verify_page(
    State(state): State<AppState>,
    params: Result<QueryParams<TokenParam>, AppError>,
    current: Option<CurrentUser>,
) -> Response {
    // A link cut short (no token, or a malformed query) is an unknown link, said as a page.
    let token = params.map(|QueryParams(p)| p.token).unwrap_or_default();
    let token = token.trim();
    if !tokens::is_link_token(token) {
        return pages::error(link_error(LinkProblem::Unknown));
    }
    let result = async {
        let tx = state.db.system().await?;
        let (problem, email) = repo::link_problem(&tx, &tokens::hash_link_token(token)).await?;
        let signed_in_as = match current {
            Some(user) => repo::email_of_user(&tx, user.user_id).await?,
            None => None,
        };
        tx.commit().await?;
        Ok::<_, AppError>((problem, email, signed_in_as))
    }
    .await;
    match result {
        Ok((None, Some(email), signed_in_as)) => {
            pages::confirm_sign_in(token, &email, signed_in_as.as_deref())
        }
        Ok((problem, _, _)) => pages::error(link_error(problem.unwrap_or(LinkProblem::Unknown))),
        Err(e) => pages::error(e),
    }
}

/// Signs in with the link's token. Exactly one of several concurrent attempts succeeds.
#[utoipa::path(
    post, path = "/auth/verify", tag = "auth",
    request_body(content((TokenParam = "application/json"), (TokenParam = "application/x-www-form-urlencoded")),
                 description = "JSON, or the same field as an HTML form (what the page posts)"),
    responses(
        (status = 200, description = "JSON clients: signed in; the session cookie is set", body = SignedIn),
        (status = 303, description = "Forms: signed in; the session cookie is set and the browser goes to APP_URL"),
        (status = 400, description = "Unknown link (LINK_INVALID)", body = crate::error::ErrorBody),
        (status = 410, description = "Expired (LINK_EXPIRED) or already used (LINK_USED)", body = crate::error::ErrorBody),
        (status = 422, description = "No token", body = crate::error::ErrorBody),
        (status = 429, description = "Too many attempts from this network", body = crate::error::ErrorBody),
    )
)]
pub async fn verify(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    input: Input<TokenParam>,
) -> Response {
    let via = input.via;
    let result = async {
        check_rate(&state, ip).await?;
        let token = input.value.token.trim();
        let hash = tokens::hash_link_token(token);
        let tx = state.db.system().await?;
        let consumed = if tokens::is_link_token(token) {
            repo::consume_by_token(&tx, &hash).await?
        } else {
            None
        };
        let Some(link) = consumed else {
            let (problem, email) = repo::link_problem(&tx, &hash).await?;
            let problem = problem.unwrap_or(LinkProblem::Used);
            let user = match email.as_deref().map(EmailAddress::parse) {
                Some(Ok(email)) => repo::user_id_by_email(&tx, &email).await?,
                _ => None,
            };
            futures_util::future::try_join(
                audit::record_system(
                    &tx,
                    &Entry::new("auth.sign_in_failed", "magic_link")
                        .maybe_user(user)
                        .details(serde_json::json!({"method": "link", "reason": problem.as_str()}))
                        .ip(ip),
                ),
                tx.commit_queued(),
            )
            .await?;
            return Err(link_error(problem));
        };
        sign_in(&state, tx, &link.email, link.id, "link", ip, &headers).await
    }
    .await;
    respond(&state, via, result)
}

/// Signs in with the emailed code, for when the email is read on another device. Only the code of
/// the newest email for the address counts; each link's code allows five wrong attempts, and the
/// address (its canonical mailbox) CODE_FAILURES_PER_EMAIL_PER_DAY wrong codes across all links,
/// after which only the emailed link signs in. Every refusal answers alike.
#[utoipa::path(
    post, path = "/auth/verify-code", tag = "auth",
    request_body(content((CodeRequest = "application/json"), (CodeRequest = "application/x-www-form-urlencoded")),
                 description = "JSON, or the same fields as an HTML form"),
    responses(
        (status = 200, description = "JSON clients: signed in; the session cookie is set", body = SignedIn),
        (status = 303, description = "Forms: signed in; the browser goes to APP_URL"),
        (status = 400, description = "CODE_INVALID, one answer for every reason: a wrong code, no live code (or not the newest email's), too many wrong attempts at this code, or the address's daily budget of wrong codes spent", body = crate::error::ErrorBody),
        (status = 422, description = "Malformed email or code", body = crate::error::ErrorBody),
        (status = 429, description = "Too many attempts from this network (IPv6: per /64)", body = crate::error::ErrorBody),
    )
)]
pub async fn verify_code(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    input: Input<CodeRequest>,
) -> Response {
    let via = input.via;
    let result = async {
        let email =
            EmailAddress::parse(&input.value.email).map_err(|m| AppError::invalid("email", m))?;
        let code = tokens::normalise_code(&input.value.code)
            .ok_or_else(|| AppError::invalid("code", "Enter the six digits from the email."))?;
        check_rate(&state, ip).await?;

        let tx = state.db.system().await?;
        let refused = match try_code(&state, &tx, &email, &code).await? {
            Ok(link_id) => {
                return sign_in(&state, tx, email.as_str(), link_id, "code", ip, &headers).await;
            }
            Err(refused) => refused,
        };
        let user = repo::user_id_by_email(&tx, &email).await?;
        futures_util::future::try_join(
            audit::record_system(
                &tx,
                &Entry::new("auth.sign_in_failed", "magic_link")
                    .maybe_user(user)
                    .details(serde_json::json!({"method": "code", "reason": refused.as_str()}))
                    .ip(ip),
            ),
            tx.commit_queued(),
        )
        .await?;
        Err(code_invalid())
    }
    .await;
    respond(&state, via, result)
}

/// Why a code did not sign in: for the audit row only. The client gets [`code_invalid`] whatever
/// the reason, so an attacker learns neither whether a sign-in is pending nor how many guesses
/// are left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CodeRefused {
    /// The newest link is used or expired, or there is none.
    NoLiveCode,
    /// The newest link's code took its five wrong attempts.
    TooManyAttempts,
    /// The address's wrong codes for the day are used up.
    BudgetSpent,
    WrongCode,
}

impl CodeRefused {
    fn as_str(self) -> &'static str {
        match self {
            CodeRefused::NoLiveCode => "no_live_code",
            CodeRefused::TooManyAttempts => "too_many_attempts",
            CodeRefused::BudgetSpent => "budget_spent",
            CodeRefused::WrongCode => "wrong_code",
        }
    }
}

/// The one answer to every refused code.
fn code_invalid() -> AppError {
    AppError::client(
        StatusCode::BAD_REQUEST,
        "CODE_INVALID",
        "That code is not right, or it is no longer valid. Use the newest email, or ask for a new link.",
    )
}

/// Tries `code` against the newest link of `email`; on success the link is consumed (in `tx`)
/// and its id returned.
///
/// Only wrong codes are charged to the address's daily failure budget
/// (`code:email:<digest of the canonical mailbox>`, CODE_FAILURES_PER_EMAIL_PER_DAY): a person
/// who types their code right never spends it, so signing in by code on several devices a day
/// does not lock them out. The charge is made *before* the comparison and refunded when the code
/// is right, so concurrent guesses (also across `+tag` and dot aliases, which share the key)
/// cannot compare more codes than the budget allows. Attempts with no live code compare nothing
/// and are not charged. The budget is a GCRA: spent, it refills by one every day/limit.
async fn try_code(
    state: &AppState,
    tx: &SystemTx,
    email: &EmailAddress,
    code: &str,
) -> Result<Result<uuid::Uuid, CodeRefused>, AppError> {
    let link = match repo::newest_link_for_code(tx, email).await? {
        Some(link) if link.live => link,
        _ => return Ok(Err(CodeRefused::NoLiveCode)),
    };
    if link.code_attempts >= MAX_CODE_ATTEMPTS {
        return Ok(Err(CodeRefused::TooManyAttempts));
    }
    let budget = Rate::per_day(state.config.limits.code_failures_per_email_per_day);
    let key = format!("code:email:{}", email.mailbox_digest());
    let Ok(charge) = limits::hit_tentatively(tx, &key, budget).await? else {
        return Ok(Err(CodeRefused::BudgetSpent));
    };
    if tokens::hash_code(link.id, code) != link.code_hash {
        charge.keep(tx).await?;
        repo::count_wrong_code(tx, link.id).await?;
        return Ok(Err(CodeRefused::WrongCode));
    }
    charge.refund(tx).await?;
    if repo::consume_by_id(tx, link.id).await? {
        Ok(Ok(link.id))
    } else {
        // Not reachable while the row is locked, but a refusal is the safe answer.
        Ok(Err(CodeRefused::NoLiveCode))
    }
}

async fn check_rate(state: &AppState, ip: IpAddr) -> Result<(), AppError> {
    let tx = state.db.system().await?;
    let verdict = limits::hit(
        &tx,
        &format!("verify:ip:{}", network_key(ip)),
        Rate::per_minute(state.config.limits.verifications_per_ip_per_minute),
    )
    .await?;
    tx.commit().await?;
    verdict.map_err(|wait| {
        AppError::rate_limited(
            "Too many sign-in attempts from your network. Please wait a minute and try again.",
            wait,
        )
    })
}

/// Finishes a sign-in in the transaction that consumed the link: creates the user on first
/// sign-in, starts a session, records it, commits.
async fn sign_in(
    state: &AppState,
    tx: SystemTx,
    email: &str,
    link_id: uuid::Uuid,
    method: &'static str,
    ip: IpAddr,
    headers: &HeaderMap,
) -> Result<SignedInNow, AppError> {
    let (user, created) = repo::upsert_user(&tx, email).await?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let session = session::start(
        &tx,
        &state.session_key,
        user,
        state.config.limits.session_ttl_hours,
        ip,
        user_agent,
    )
    .await?;
    futures_util::future::try_join(
        audit::record_system(
            &tx,
            &Entry::new("auth.sign_in", "session")
                .user(user)
                .resource(session.id)
                .details(
                    serde_json::json!({"method": method, "new_user": created, "link_id": link_id}),
                )
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    drop(tx);
    tracing::info!(user_id = %user, new_user = created, method, "signed in");

    let user_tx = state.db.user(user).await?;
    let (me, ()) =
        futures_util::future::try_join(repo::me(&user_tx), user_tx.commit_queued()).await?;
    let me =
        me.ok_or_else(|| AppError::internal(anyhow::anyhow!("user vanished after sign-in")))?;
    Ok(SignedInNow {
        body: SignedIn {
            user: UserResponse::new(me, &state.config, Utc::now()),
            token: session.token.clone(),
            expires_at: session.expires_at,
        },
        cookie: session::set_cookie(&state.config.app_url, &session),
    })
}

struct SignedInNow {
    body: SignedIn,
    cookie: HeaderValue,
}

fn respond(state: &AppState, via: Via, result: Result<SignedInNow, AppError>) -> Response {
    match (result, via) {
        (Ok(done), Via::Form) => {
            let mut response = Redirect::to(state.config.app_url.as_str()).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, done.cookie);
            response
        }
        (Ok(done), Via::Json) => {
            let mut response = Json(done.body).into_response();
            response
                .headers_mut()
                .insert(header::SET_COOKIE, done.cookie);
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        (Err(e), Via::Form) => pages::error(e),
        (Err(e), Via::Json) => e.into_response(),
    }
}

fn link_error(problem: LinkProblem) -> AppError {
    match problem {
        LinkProblem::Unknown => AppError::client(
            StatusCode::BAD_REQUEST,
            "LINK_INVALID",
            "This sign-in link is not valid. Check that you copied all of it, or ask for a new one.",
        ),
        LinkProblem::Expired => AppError::client(
            StatusCode::GONE,
            "LINK_EXPIRED",
            "This sign-in link has expired. Ask for a new one.",
        ),
        LinkProblem::Used => AppError::client(
            StatusCode::GONE,
            "LINK_USED",
            "This sign-in link has already been used. Ask for a new one if you need to sign in again.",
        ),
    }
}
