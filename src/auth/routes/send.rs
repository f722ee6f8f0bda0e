//! `POST /auth/send`: email a sign-in link.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Notice;
use crate::audit::{self, Entry};
use crate::auth::{EmailAddress, message, pages, repo, tokens};
use crate::email::outbox;
use crate::error::AppError;
use crate::http::client_ip::{ClientIp, network_key};
use crate::http::input::{Input, Via};
use crate::limits::{self, Rate};
use crate::state::AppState;

#[derive(Debug, Deserialize, ToSchema)]
#[schema(example = json!({"email": "ada@example.com"}))]
pub struct SendRequest {
    /// Where to send the link. Trimmed and lower-cased; the part before the @ must be ASCII, and the
    /// domain is stored in its IDNA ASCII form (look-alike mixes of scripts are refused).
    #[schema(format = Email, max_length = 254)]
    pub email: String,
}

const SENT: &str = "If that address can receive email, a sign-in link is on its way.";

/// Email a sign-in link (and a one-time code). The answer is the same whether or not an account
/// exists; the email goes out from a background worker.
#[utoipa::path(
    post, path = "/auth/send", tag = "auth",
    request_body(content((SendRequest = "application/json"), (SendRequest = "application/x-www-form-urlencoded")),
                 description = "JSON, or the same field as an HTML form"),
    responses(
        (status = 200, description = "Link queued (or silently not, for addresses that cannot receive it)", body = Notice),
        (status = 422, description = "Malformed email address", body = crate::error::ErrorBody),
        (status = 429, description = "Too many links for this address (its `+tags` and, for Gmail, dots ignored), for its domain or in all, or too many requests from this network (IPv6: per /64); see Retry-After. A refused request sends nothing", body = crate::error::ErrorBody),
    )
)]
pub async fn send(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    input: Input<SendRequest>,
) -> Response {
    let via = input.via;
    match queue_link(&state, ip, &input.value.email).await {
        Ok(email) => match via {
            Via::Form => {
                pages::check_email(email.as_str(), state.config.limits.magic_link_ttl_minutes)
            }
            Via::Json => (
                StatusCode::OK,
                Json(Notice {
                    detail: SENT.to_string(),
                }),
            )
                .into_response(),
        },
        Err(e) if via == Via::Form => pages::error(e),
        Err(e) => e.into_response(),
    }
}

async fn queue_link(
    state: &AppState,
    ip: std::net::IpAddr,
    raw_email: &str,
) -> Result<EmailAddress, AppError> {
    let email = EmailAddress::parse(raw_email).map_err(|m| AppError::invalid("email", m))?;
    check_send_limits(state, ip, &email).await?;
    let limits = &state.config.limits;

    // The link, its email and the audit row commit together or not at all.
    let tx = state.db.system().await?;
    let user = repo::user_id_by_email(&tx, &email).await?;
    let token = tokens::new_link_token();
    let code = tokens::new_code();
    let link_id = Uuid::new_v4();
    let ttl = limits.magic_link_ttl_minutes;
    let expires_at = repo::insert_magic_link(
        &tx,
        link_id,
        &email,
        &tokens::hash_link_token(&token),
        &tokens::hash_code(link_id, &code),
        ip,
        ttl,
    )
    .await?;
    let mut link = state.config.app_url_for("auth/verify");
    link.query_pairs_mut().append_pair("token", &token);
    let message = message::sign_in_email(email.as_str(), &link, &code, expires_at, ttl);
    let entry = Entry::new("auth.link_requested", "magic_link")
        .maybe_user(user)
        .resource(link_id)
        .ip(ip);
    futures_util::future::try_join3(
        outbox::enqueue(&tx, &message),
        audit::record_system(&tx, &entry),
        tx.commit_queued(),
    )
    .await?;
    state.outbox_wake.notify_one();
    Ok(email)
}

/// Charges the send limits, in a transaction of their own so a refused request changes nothing
/// else: first the caller's network (MAGIC_LINK_REQUESTS_PER_IP_PER_HOUR, IPv6 per /64), which a
/// refused request still pays, since that budget is the caller's own; then the budgets others
/// share, all or none (see [`limits::hit_all`]): the canonical mailbox
/// (MAGIC_LINKS_PER_EMAIL_PER_HOUR, so `+tags` and Gmail dots share it), its domain
/// (MAGIC_LINKS_PER_DOMAIN_PER_HOUR) and every send (MAGIC_LINKS_PER_HOUR). A request one of them
/// refuses spends nothing of the others, so flooding one address cannot use up its domain's or
/// everyone's budget.
async fn check_send_limits(
    state: &AppState,
    ip: std::net::IpAddr,
    email: &EmailAddress,
) -> Result<(), AppError> {
    let limits = &state.config.limits;
    let tx = state.db.system().await?;
    let by_ip = limits::hit(
        &tx,
        &format!("send:ip:{}", network_key(ip)),
        Rate::per_hour(limits.magic_link_requests_per_ip_per_hour),
    )
    .await?;
    if let Err(wait) = by_ip {
        tx.commit().await?;
        return Err(AppError::rate_limited(
            "Too many sign-in requests from your network. Please wait before trying again.",
            wait,
        ));
    }
    let mailbox = format!("send:email:{}", email.mailbox_digest());
    let domain = format!("send:domain:{}", email.domain_digest());
    let shared = [
        (
            mailbox.as_str(),
            Rate::per_hour(limits.magic_links_per_email_per_hour),
        ),
        (
            domain.as_str(),
            Rate::per_hour(limits.magic_links_per_domain_per_hour),
        ),
        ("send:all", Rate::per_hour(limits.magic_links_per_hour)),
    ];
    let verdict = limits::hit_all(&tx, &shared).await?;
    tx.commit().await?;
    let Err((refused, wait)) = verdict else {
        return Ok(());
    };
    let detail = match refused {
        0 => {
            "Too many sign-in links were requested for this address. Please wait before asking for another."
        }
        1 => {
            "Too many sign-in links were requested for addresses at this email domain. Please wait before trying again."
        }
        _ => {
            "We are sending too many sign-in emails right now. Please wait a few minutes and try again."
        }
    };
    Err(AppError::rate_limited(detail, wait))
}
