//! Billing's routes: the plan (`GET /api/billing`), Checkout and the Billing Portal
//! (`POST /api/billing/checkout`, `POST /api/billing/portal`), the checkout's return
//! (`GET /billing/success`) and Stripe's webhook (`POST /stripe/webhook`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{DateTime, Utc};
use futures_util::future::try_join;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::repo;
use super::signature;
use super::stripe::{NewCheckout, StripeApi, StripeError};
use super::sync::{self, Cause, Event, SyncError};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::config::BillingConfig;
use crate::db::UserId;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::state::AppState;
use crate::tier::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(plan))
        .routes(routes!(checkout))
        .routes(routes!(portal))
        .routes(routes!(checkout_return))
        .routes(routes!(webhook))
}

/// Checkouts and portal sessions one user may start per hour.
const BILLING_REQUESTS_PER_HOUR: u32 = 20;

/// The events that may change a subscription; each re-syncs its customer. Others are recorded
/// and answered, with no effect.
const RESYNC_EVENTS: &[&str] = &[
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "invoice.paid",
    "invoice.payment_failed",
];

/// The caller's plan and subscription, as last read from Stripe. Never a Stripe id.
#[derive(Debug, Serialize, ToSchema)]
pub struct Billing {
    /// What the account has now.
    pub plan: Tier,
    /// The subscription's status: active, trialing, past_due, canceled, unpaid, paused,
    /// incomplete or incomplete_expired; none before the first subscription.
    pub status: Option<String>,
    /// When the current period ends (it renews then, unless cancelled).
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub current_period_end: Option<DateTime<Utc>>,
    /// Cancelled: Pro stays until `current_period_end`, then the account is on the free plan.
    pub cancel_at_period_end: bool,
    /// For a past-due subscription: when Pro stops unless the payment goes through.
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// Whether this server can take payments (Checkout and the portal answer 503 when not).
    pub available: bool,
}

/// Where to send the browser.
#[derive(Debug, Serialize, ToSchema)]
pub struct BillingRedirect {
    /// A Stripe-hosted page (Checkout or the Billing Portal), valid for a short while.
    pub url: String,
}

fn not_configured() -> AppError {
    AppError::client(
        StatusCode::SERVICE_UNAVAILABLE,
        "BILLING_NOT_CONFIGURED",
        "Payments are not set up on this server. Its operator sets STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET and STRIPE_PRICE_ID; see the README.",
    )
}

fn configured(state: &AppState) -> Result<(&dyn StripeApi, &BillingConfig), AppError> {
    match (state.stripe.as_deref(), state.config.billing.as_ref()) {
        (Some(stripe), Some(config)) => Ok((stripe, config)),
        _ => Err(not_configured()),
    }
}

/// What a Stripe failure tells the person.
fn stripe_error(e: StripeError) -> AppError {
    match e {
        StripeError::Unavailable(why) => {
            tracing::warn!(error = %why, "Stripe unavailable");
            AppError::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "PAYMENTS_UNAVAILABLE",
                "Payments are not reachable right now, so nothing was changed. Please try again in a minute.",
            )
        }
        other => AppError::internal(other),
    }
}

/// The caller's plan and subscription.
#[utoipa::path(get, path = "/api/billing", tag = "billing",
    responses((status = 200, body = Billing),
              (status = 401, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn plan(State(state): State<AppState>, api: ApiUser) -> Result<Json<Billing>, AppError> {
    let tx = api.begin_read(&state.db).await?;
    let plan = repo::own_plan(&tx).await?;
    tx.finish();
    let plan = plan.ok_or_else(AppError::unauthorized)?;
    let grace = state
        .config
        .billing
        .as_ref()
        .map(|b| b.past_due_grace)
        .unwrap_or_default();
    let grace_ends_at = match (plan.status.as_deref(), plan.past_due_since) {
        (Some("past_due"), Some(since)) => {
            Some(since + chrono::Duration::from_std(grace).unwrap_or_default())
        }
        _ => None,
    };
    Ok(Json(Billing {
        plan: plan.tier,
        status: plan.status,
        current_period_end: plan.period_end,
        cancel_at_period_end: plan.cancel_at_period_end,
        grace_ends_at,
        available: state.stripe.is_some(),
    }))
}

/// Counts one checkout or portal session against the user's hourly budget.
async fn check_rate(state: &AppState, user: UserId) -> Result<(), AppError> {
    let tx = state.db.system().await?;
    // Not joined with the commit: a refusal reads the wait in a second statement.
    let verdict = crate::limits::hit(
        &tx,
        &format!("billing:user:{user}"),
        crate::limits::Rate::per_hour(BILLING_REQUESTS_PER_HOUR),
    )
    .await?;
    tx.commit().await?;
    verdict.map_err(|wait| {
        AppError::rate_limited(
            format!(
                "You can open checkout or billing {BILLING_REQUESTS_PER_HOUR} times an hour. Please wait a little."
            ),
            wait,
        )
    })
}

/// The user's Stripe customer, created the first time. One user's concurrent calls take turns
/// here, and the creation's idempotency key is the user's, so they all end with one customer.
async fn ensure_customer(
    state: &AppState,
    stripe: &dyn StripeApi,
    user: UserId,
) -> Result<String, AppError> {
    let _turn = state.billing_locks.lock(user.0).await;
    let tx = state.db.system().await?;
    let account = repo::account(&tx, user).await?;
    tx.rollback();
    let account = account.ok_or_else(AppError::unauthorized)?;
    if account.tier.is_pro() {
        return Err(already_pro());
    }
    if let Some(customer) = account.customer {
        return Ok(customer);
    }
    let customer = stripe
        .create_customer(user.0, &account.email)
        .await
        .map_err(stripe_error)?;
    let tx = state.db.system().await?;
    let stored = repo::set_customer(&tx, user, &customer).await?;
    let account = if stored {
        None
    } else {
        repo::account(&tx, user).await?
    };
    tx.commit().await?;
    // Another process stored one meanwhile (the same, by the idempotency key): use what is stored.
    Ok(account.and_then(|a| a.customer).unwrap_or(customer))
}

fn already_pro() -> AppError {
    AppError::conflict(
        "ALREADY_PRO",
        "You are already on Pro. Manage your subscription with \"Manage billing\".",
    )
}

fn from_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// 303 to `url` for a browser's form, the URL as JSON otherwise.
fn go_to(headers: &HeaderMap, url: String) -> Response {
    if from_form(headers) {
        Redirect::to(&url).into_response()
    } else {
        Json(BillingRedirect { url }).into_response()
    }
}

/// Starts Stripe Checkout for the Pro plan.
#[utoipa::path(post, path = "/api/billing/checkout", tag = "billing",
    responses((status = 200, body = BillingRedirect, description = "The Checkout page's URL"),
              (status = 303, description = "For a browser's form: to the Checkout page"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "ALREADY_PRO", body = crate::error::ErrorBody),
              (status = 429, description = "RATE_LIMITED", body = crate::error::ErrorBody),
              (status = 503, description = "BILLING_NOT_CONFIGURED, or PAYMENTS_UNAVAILABLE: Stripe cannot be reached", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn checkout(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (stripe, config) = configured(&state)?;
    let user = api.user_id();
    check_rate(&state, user).await?;
    let customer = ensure_customer(&state, stripe, user).await?;
    // Stripe puts the session's id in place of the placeholder; its braces must stay as they are.
    let success_url = format!(
        "{}?session_id={{CHECKOUT_SESSION_ID}}",
        state.config.app_url_for("billing/success")
    );
    let mut cancel = state.config.app_url_for("account");
    cancel.set_query(Some("billing=cancelled"));
    let session = stripe
        .create_checkout_session(&NewCheckout {
            user: user.0,
            customer,
            price: config.price_id.clone(),
            success_url,
            cancel_url: cancel.to_string(),
        })
        .await
        .map_err(stripe_error)?;
    let url = session
        .url
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("a Checkout Session without a URL")))?;
    let tx = state.db.system().await?;
    try_join(
        audit::record_system(
            &tx,
            &Entry::new("billing.checkout_started", "user")
                .user(user)
                .resource(user.0)
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    Ok(go_to(&headers, url))
}

/// Opens Stripe's Billing Portal (change card, see invoices, cancel).
#[utoipa::path(post, path = "/api/billing/portal", tag = "billing",
    responses((status = 200, body = BillingRedirect, description = "The portal's URL"),
              (status = 303, description = "For a browser's form: to the portal"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "NO_BILLING_ACCOUNT: nothing was ever bought", body = crate::error::ErrorBody),
              (status = 429, description = "RATE_LIMITED", body = crate::error::ErrorBody),
              (status = 503, description = "BILLING_NOT_CONFIGURED, BILLING_PORTAL_NOT_CONFIGURED (the portal is not set up in Stripe's Dashboard), or PAYMENTS_UNAVAILABLE", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn portal(
    State(state): State<AppState>,
    api: ApiUser,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let (stripe, _) = configured(&state)?;
    let user = api.user_id();
    check_rate(&state, user).await?;
    let tx = state.db.system().await?;
    let account = repo::account(&tx, user).await?;
    tx.rollback();
    let Some(customer) = account.and_then(|a| a.customer) else {
        return Err(AppError::conflict(
            "NO_BILLING_ACCOUNT",
            "There is no subscription to manage yet. Upgrade to Pro first.",
        ));
    };
    let return_url = state.config.app_url_for("account").to_string();
    let url = match stripe.create_portal_session(&customer, &return_url).await {
        Ok(url) => url,
        Err(StripeError::Refused {
            status: 400,
            message,
            ..
        }) if message.contains("configuration") => {
            tracing::error!(
                "the Stripe Billing Portal is not configured: save its settings once in Stripe's Dashboard (Settings, Billing, Customer portal)"
            );
            return Err(AppError::client(
                StatusCode::SERVICE_UNAVAILABLE,
                "BILLING_PORTAL_NOT_CONFIGURED",
                "Managing billing is not available yet on this server. Its operator must set up Stripe's customer portal; please try again later or contact support.",
            ));
        }
        Err(e) => return Err(stripe_error(e)),
    };
    Ok(go_to(&headers, url))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReturnParams {
    /// The Checkout Session's id, put in by Stripe.
    pub session_id: Option<String>,
}

/// Where Checkout sends the browser after payment: reads the subscription from Stripe before
/// answering, so the person lands on a page that already shows Pro: the account page.
#[utoipa::path(get, path = "/billing/success", tag = "billing",
    params(ReturnParams),
    responses((status = 303, description = "To the account page, the plan re-read from Stripe first")))]
pub async fn checkout_return(
    State(state): State<AppState>,
    Query(params): Query<ReturnParams>,
) -> Response {
    let mut home = state.config.app_url_for("account");
    home.set_query(Some("billing=success"));
    let redirect = Redirect::to(home.as_str()).into_response();
    let (Some(stripe), Some(id)) = (state.stripe.as_deref(), params.session_id) else {
        return redirect;
    };
    if !(id.starts_with("cs_") && id.len() <= 255) {
        return redirect;
    }
    // The session's id is unguessable, and all this does is read Stripe again: nothing is
    // granted from the redirect itself.
    let customer = match stripe.retrieve_checkout_session(&id).await {
        Ok(session) => session.customer,
        Err(e) => {
            tracing::warn!(error = %e, "checkout return: could not read the session");
            None
        }
    };
    if let Some(customer) = customer
        && let Err(e) = sync::resync(&state, &customer, None, Cause::CheckoutReturn).await
    {
        tracing::warn!(error = %e, "checkout return: re-sync failed; the webhook will do it");
    }
    redirect
}

/// The event fields the webhook reads.
#[derive(Debug, Deserialize)]
struct WebhookEvent {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    api_version: Option<String>,
    data: WebhookData,
}

#[derive(Debug, Deserialize)]
struct WebhookData {
    object: serde_json::Value,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookAnswer {
    /// applied, stale, unknown_customer, duplicate or ignored.
    pub outcome: &'static str,
}

/// Stripe's events. The signature (`Stripe-Signature`) is checked on the raw body before
/// anything else; each event is handled once.
#[utoipa::path(post, path = "/stripe/webhook", tag = "billing",
    request_body(content = serde_json::Value, content_type = "application/json", description = "A Stripe event"),
    responses((status = 200, body = WebhookAnswer),
              (status = 400, description = "SIGNATURE_INVALID, or not a Stripe event", body = crate::error::ErrorBody),
              (status = 503, description = "BILLING_NOT_CONFIGURED, or the event could not be handled now (Stripe sends it again)", body = crate::error::ErrorBody)))]
pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAnswer>, AppError> {
    let answer = receive(&state, &headers, &body).await;
    // A signed event that could not be handled (Stripe sends it again): counted for the alert.
    // Sentry hears of it from the 5xx answer itself.
    if let Err(e) = &answer
        && e.status().is_server_error()
        && configured(&state).is_ok()
    {
        state.ops_counts.add(crate::alerts::Counted::WebhookFailed);
        state.metrics.add(
            "aide_stripe_webhook_events_total",
            &[("type", "any"), ("outcome", "failed")],
            1.0,
        );
    }
    answer
}

async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Json<WebhookAnswer>, AppError> {
    let (_, config) = configured(state)?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    if let Err(refusal) = signature::verify(
        header,
        body,
        config.webhook_secret.expose_secret(),
        Utc::now().timestamp(),
    ) {
        state.webhook_refusals.count(refusal);
        state
            .ops_counts
            .add(crate::alerts::Counted::SignatureRefused);
        tracing::warn!(
            reason = refusal.as_str(),
            "Stripe webhook refused: bad signature"
        );
        return Err(AppError::client(
            StatusCode::BAD_REQUEST,
            "SIGNATURE_INVALID",
            "The Stripe-Signature header does not match this body.",
        ));
    }
    let event: WebhookEvent = serde_json::from_slice(body).map_err(|_| {
        AppError::client(
            StatusCode::BAD_REQUEST,
            "NOT_AN_EVENT",
            "The body is not a Stripe event.",
        )
    })?;
    if !event.id.starts_with("evt_") || event.id.len() > 255 {
        return Err(AppError::client(
            StatusCode::BAD_REQUEST,
            "NOT_AN_EVENT",
            "The body is not a Stripe event.",
        ));
    }
    if event.api_version.as_deref() != Some(super::stripe::API_VERSION) {
        tracing::warn!(
            event.api_version = event.api_version.as_deref().unwrap_or("none"),
            expected = super::stripe::API_VERSION,
            "Stripe event in another API version: create the webhook endpoint with the pinned version (see the README)"
        );
    }
    let customer = event.data.object.get("customer").and_then(|c| match c {
        serde_json::Value::String(id) => Some(id.clone()),
        // An expanded customer object.
        serde_json::Value::Object(o) => o.get("id").and_then(|id| id.as_str()).map(String::from),
        _ => None,
    });
    let handled = Event {
        id: &event.id,
        kind: &event.kind,
    };
    let outcome = match customer {
        Some(customer) if RESYNC_EVENTS.contains(&event.kind.as_str()) => {
            match sync::resync(state, &customer, Some(&handled), Cause::Webhook).await {
                Ok(outcome) => outcome.as_str(),
                Err(SyncError::Stripe(e)) => {
                    tracing::warn!(error = %e, event.kind = %event.kind, "webhook: re-sync failed; Stripe will send it again");
                    return Err(AppError::Unavailable(
                        "Stripe could not be read back just now; send the event again later.",
                    ));
                }
                Err(SyncError::Db(e)) => return Err(e.into()),
                Err(SyncError::NotConfigured) => return Err(not_configured()),
            }
        }
        _ => {
            let tx = state.db.system().await?;
            let (first, ()) = try_join(
                repo::record_event(&tx, &event.id, &event.kind, "ignored"),
                tx.commit_queued(),
            )
            .await?;
            if first { "ignored" } else { "duplicate" }
        }
    };
    tracing::info!(event.kind = %event.kind, outcome, "Stripe event handled");
    let kind = if RESYNC_EVENTS.contains(&event.kind.as_str()) {
        event.kind.as_str()
    } else {
        "other"
    };
    state.metrics.add(
        "aide_stripe_webhook_events_total",
        &[("type", kind), ("outcome", outcome)],
        1.0,
    );
    Ok(Json(WebhookAnswer { outcome }))
}
