//! The pages: the aides list at `/` (the sign-in form when signed out), the account, and the
//! forms behind the list's buttons. Each form POSTs to a route here that calls the same
//! functions as the JSON API, then answers 303.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::{Layout, app_csp, error_page, render};
use crate::aides::model::{AideRow, Status};
use crate::auth::{ApiUser, CurrentUser};
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::http::input::Input;
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/a", post(create))
        .route("/a/{id}/archive", post(archive))
        .route("/a/{id}/restore", post(restore))
        .route("/a/{id}/delete", get(confirm_delete).post(delete))
        .route("/account", get(account))
        .route("/static/{file}", get(super::assets::serve))
}

/// How many aides the list shows.
const LIST_SIZE: i64 = 200;

#[derive(Template)]
#[template(path = "signed_out.html")]
struct SignedOut {
    layout: Layout,
}

/// One row of the list.
struct AideItem {
    id: Uuid,
    title: String,
    status: &'static str,
    badge: &'static str,
    changed: String,
}

impl AideItem {
    fn new(row: AideRow, now: DateTime<Utc>) -> Self {
        let (status, badge) = match row.status {
            Status::Draft => ("draft", "Draft"),
            Status::Published => ("live", "Live"),
            Status::Archived => ("archived", "Archived"),
        };
        AideItem {
            id: row.id,
            title: row.title,
            status,
            badge,
            changed: ago(row.updated_at, now),
        }
    }
}

#[derive(Template)]
#[template(path = "aides.html")]
struct AidesPage {
    layout: Layout,
    aides: Vec<AideItem>,
    archived: bool,
    active: i64,
    /// The free plan's limit; None on Pro.
    limit: Option<i64>,
    /// At the limit: no new aide until one is archived or deleted.
    full: bool,
}

#[derive(Debug, Default, Deserialize)]
struct ListParams {
    archived: Option<String>,
}

/// "just now", "5 minutes ago", "3 hours ago", "2 days ago", then the date.
fn ago(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds().max(0);
    match seconds {
        0..=59 => "just now".to_string(),
        60..=119 => "a minute ago".to_string(),
        120..=3599 => format!("{} minutes ago", seconds / 60),
        3600..=7199 => "an hour ago".to_string(),
        7200..=86_399 => format!("{} hours ago", seconds / 3600),
        86_400..=172_799 => "yesterday".to_string(),
        172_800..=604_799 => format!("{} days ago", seconds / 86_400),
        _ => at.format("on %b %-d, %Y").to_string(),
    }
}

/// `GET /`: signed out, the sign-in form; signed in, the aides.
async fn home(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    Query(params): Query<ListParams>,
) -> Result<Response, AppError> {
    let signed_out = || {
        render(
            StatusCode::OK,
            &SignedOut {
                layout: Layout::new("Sign in"),
            },
            super::BASIC_CSP,
        )
    };
    let Some(user) = user else {
        return Ok(signed_out());
    };
    let archived = params.archived.is_some_and(|v| !v.is_empty() && v != "0");
    let tx = state.db.user(user.user_id).await?;
    let (me, rows, active) = futures_util::future::try_join3(
        crate::auth::routes::me_summary(&tx),
        crate::aides::repo::list(&tx, archived.then_some(Status::Archived), None, LIST_SIZE),
        crate::aides::repo::count_active(&tx),
    )
    .await?;
    tx.rollback();
    let Some((email, tier)) = me else {
        return Ok(signed_out());
    };
    let now = Utc::now();
    let limit = (!tier.is_pro()).then(|| i64::from(state.config.limits.free_max_aides));
    let page = AidesPage {
        layout: Layout::signed_in(
            if archived {
                "Archived aides"
            } else {
                "Your aides"
            },
            &email,
        ),
        aides: rows.into_iter().map(|r| AideItem::new(r, now)).collect(),
        archived,
        active,
        limit,
        full: limit.is_some_and(|l| active >= l),
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

#[derive(Debug, Deserialize)]
struct NewAide {
    title: Option<String>,
}

/// `POST /a`: a new aide from the list's form.
async fn create(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    input: Input<NewAide>,
) -> Response {
    let title = input
        .value
        .title
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let result = async {
        let api = api?;
        crate::aides::routes::create_aide(&state, &api, ip, title).await
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => error_page(e, "/"),
    }
}

/// Where a list's form returns to: the archived list for what was archived.
fn back_to(row: &AideRow) -> &'static str {
    if row.status == Status::Archived {
        "/?archived=1"
    } else {
        "/"
    }
}

async fn archive(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let result = async {
        let (api, id) = (api?, id?.0);
        crate::aides::routes::archive_aide(&state, &api, ip, id).await
    }
    .await;
    match result {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => error_page(e, "/"),
    }
}

async fn restore(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let result = async {
        let (api, id) = (api?, id?.0);
        crate::aides::routes::restore_aide(&state, &api, ip, id).await
    }
    .await;
    match result {
        Ok(row) => Redirect::to(back_to(&row)).into_response(),
        Err(e) => error_page(e, "/?archived=1"),
    }
}

#[derive(Template)]
#[template(path = "confirm_delete.html")]
struct ConfirmDelete {
    layout: Layout,
    id: Uuid,
    title: String,
}

/// `GET /a/{id}/delete`: are you sure?
async fn confirm_delete(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Result<Response, AppError> {
    let (Some(user), Ok(id)) = (user, id) else {
        return Ok(super::not_found());
    };
    let tx = state.db.user(user.user_id).await?;
    let (me, row) = futures_util::future::try_join(
        crate::auth::routes::me_summary(&tx),
        crate::aides::repo::find(&tx, id.0),
    )
    .await?;
    tx.rollback();
    let (Some((email, _)), Some(row)) = (me, row) else {
        return Ok(super::not_found());
    };
    let page = ConfirmDelete {
        layout: Layout::signed_in("Delete an aide", &email),
        id: row.id,
        title: row.title,
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

async fn delete(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let result = async {
        let (api, id) = (api?, id?.0);
        crate::aides::routes::delete_aide(&state, &api, ip, id).await
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/?archived=1").into_response(),
        Err(e) => error_page(e, "/?archived=1"),
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    layout: Layout,
    email: String,
    plan: &'static str,
    pro: bool,
    status: Option<String>,
    usage: String,
    renewal: Option<String>,
    billing_available: bool,
    has_billing_account: bool,
    notice: Option<&'static str>,
}

#[derive(Debug, Default, Deserialize)]
struct AccountParams {
    billing: Option<String>,
}

/// `GET /account`: who you are, your plan and this week's turns, billing, sessions.
async fn account(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    Query(params): Query<AccountParams>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/").into_response());
    };
    let tx = state.db.user(user.user_id).await?;
    let (me, plan, account) = futures_util::future::try_join3(
        crate::auth::repo::me(&tx),
        crate::billing::repo::own_plan(&tx),
        crate::billing::repo::own_customer(&tx),
    )
    .await?;
    tx.rollback();
    let (Some(me), Some(plan)) = (me, plan) else {
        return Ok(Redirect::to("/").into_response());
    };
    let now = Utc::now();
    let me = crate::auth::routes::UserResponse::new(me, &state.config, now);
    let turns = me.turns;
    let resets = turns
        .resets_at
        .map(|at| format!(", resets {}", at.format("%a %b %-d at %H:%M UTC")))
        .unwrap_or_default();
    let usage = match turns.limit {
        Some(limit) => format!("{} of {limit}{resets}", turns.used),
        None => format!("{} (no weekly limit on Pro)", turns.used),
    };
    let renewal = match (plan.status.as_deref(), plan.period_end) {
        (Some("past_due"), _) => Some(
            "The last payment did not go through: update your card in Manage billing.".to_string(),
        ),
        (Some("active" | "trialing"), Some(end)) if plan.cancel_at_period_end => {
            Some(format!("Cancelled: Pro until {}", end.format("%b %-d, %Y")))
        }
        (Some("active" | "trialing"), Some(end)) => {
            Some(format!("Renews on {}", end.format("%b %-d, %Y")))
        }
        _ => None,
    };
    let notice = match (params.billing.as_deref(), plan.tier.is_pro()) {
        (Some("success"), true) => Some("Welcome to Pro. Thank you!"),
        (Some("success"), false) => Some(
            "Payment received. Your plan changes as soon as Stripe confirms it; reload in a moment.",
        ),
        (Some("cancelled"), _) => Some("Checkout was cancelled. Nothing was charged."),
        _ => None,
    };
    let page = AccountPage {
        layout: Layout::signed_in("Your account", &me.email),
        email: me.email,
        plan: if plan.tier.is_pro() { "Pro" } else { "Free" },
        pro: plan.tier.is_pro(),
        status: plan.status.filter(|s| s != "active"),
        usage,
        renewal,
        billing_available: state.stripe.is_some(),
        has_billing_account: account,
        notice,
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}
