//! The pages: the aides list at `/` (the sign-in form when signed out), the account, and the
//! forms behind the list's buttons. Each form POSTs to a route here that calls the same
//! functions as the JSON API, then answers 303.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
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
        .route("/a/{id}", get(editor))
        .route("/a/{id}/rename", post(rename))
        .route("/a/{id}/slug", post(choose_slug))
        .route("/a/{id}/preview-url", get(preview_url))
        .route("/a/{id}/history", get(history))
        .route("/a/{id}/undo", post(undo))
        .route("/a/{id}/revisions/{n}/restore", post(restore_revision))
        .route("/a/{id}/versions/{n}/publish", post(republish))
        .route("/a/{id}/publish", post(publish))
        .route("/a/{id}/unpublish", post(unpublish))
        .route("/account", get(account))
        .route("/account/export", post(export_data))
        .route(
            "/account/delete",
            get(delete_account_page).post(delete_account_send),
        )
        .route("/account/delete/confirm", post(delete_account_confirm))
        .route("/account/delete/cancel", post(delete_account_cancel))
        .route("/static/{file}", get(super::assets::serve))
        .route(
            "/p/{aide}/{revision}/{expires}/{signature}/",
            get(super::preview::serve),
        )
        .route(
            "/p/{aide}/{revision}/{expires}/{signature}/{*path}",
            get(super::preview::serve),
        )
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
        crate::auth::repo::me(&tx),
        crate::aides::repo::list(&tx, archived.then_some(Status::Archived), None, LIST_SIZE),
        crate::aides::repo::count_active(&tx),
    )
    .await?;
    tx.rollback();
    let Some(me) = me else {
        return Ok(signed_out());
    };
    let (email, tier) = (me.email, me.tier);
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
        )
        .deleting(me.purge_after),
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
        Ok(row) => Redirect::to(&format!("/a/{}", row.id)).into_response(),
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
    exports: Vec<ExportItem>,
    grace_days: u32,
    staff: Vec<StaffItem>,
}

/// One line of "Access by staff".
struct StaffItem {
    when: String,
    category: String,
    what: String,
}

impl StaffItem {
    fn new(
        (at, action, details, title): (DateTime<Utc>, String, serde_json::Value, Option<String>),
    ) -> Self {
        let text = |key: &str| details[key].as_str().unwrap_or_default().to_string();
        let aide = title.map_or_else(|| "a deleted aide".to_string(), |t| format!("“{t}”"));
        let what = match (action.as_str(), text("what").as_str()) {
            ("support.grant_opened", _) => format!(
                "Opened read-only access for up to {} minutes. Reason: {}",
                details["minutes"].as_i64().unwrap_or(0),
                text("reason")
            ),
            ("support.grant_closed", _) => "Closed the access".to_string(),
            (_, "account") => "Viewed your account's details".to_string(),
            (_, "aides") => "Viewed the list of your aides".to_string(),
            (_, "conversation") => format!("Viewed the conversation of {aide}"),
            (_, "files") => format!("Viewed the file list of {aide}"),
            _ => "Viewed your data".to_string(),
        };
        StaffItem {
            when: at.format("%b %-d, %Y %H:%M UTC").to_string(),
            category: text("category"),
            what,
        }
    }
}

/// One export as the account page lists it.
struct ExportItem {
    asked: String,
    status: &'static str,
    download: Option<String>,
    size: String,
}

#[derive(Debug, Default, Deserialize)]
struct AccountParams {
    billing: Option<String>,
    export: Option<String>,
    deletion: Option<String>,
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
    let ((me, plan, account), (exports, staff)) = futures_util::future::try_join(
        futures_util::future::try_join3(
            crate::auth::repo::me(&tx),
            crate::billing::repo::own_plan(&tx),
            crate::billing::repo::own_customer(&tx),
        ),
        futures_util::future::try_join(
            crate::account::repo::list(&tx),
            crate::account::repo::staff_access(&tx),
        ),
    )
    .await?;
    tx.rollback();
    let (Some(me), Some(plan)) = (me, plan) else {
        return Ok(Redirect::to("/").into_response());
    };
    let purge_after = me.purge_after;
    let now = Utc::now();
    let exports = exports
        .into_iter()
        .map(|row| {
            let live = row.status == "ready" && row.expires_at.is_some_and(|at| at > now);
            ExportItem {
                asked: row.created_at.format("%b %-d, %Y %H:%M UTC").to_string(),
                status: match row.status.as_str() {
                    "running" => "Being made…",
                    "ready" if live => "Ready",
                    "failed" => "Failed; please ask again",
                    _ => "Expired",
                },
                download: live.then(|| format!("/api/account/exports/{}/download", row.id)),
                size: row
                    .size_bytes
                    .map(|b| format!("{:.1} MB", b as f64 / 1e6))
                    .unwrap_or_default(),
            }
        })
        .collect();
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
        _ => match (params.export.as_deref(), params.deletion.as_deref()) {
            (Some("started"), _) => {
                Some("Your data is being gathered. We will email you when it is ready to download.")
            }
            (_, Some("cancelled")) => {
                Some("The deletion is cancelled. Your account and pages are back.")
            }
            _ => None,
        },
    };
    let page = AccountPage {
        layout: Layout::signed_in("Your account", &me.email).deleting(purge_after),
        email: me.email,
        plan: if plan.tier.is_pro() { "Pro" } else { "Free" },
        pro: plan.tier.is_pro(),
        status: plan.status.filter(|s| s != "active"),
        usage,
        renewal,
        billing_available: state.stripe.is_some(),
        has_billing_account: account,
        notice,
        exports,
        grace_days: state.config.limits.account_deletion_grace_days,
        staff: staff.into_iter().map(StaffItem::new).collect(),
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

/// A message as the editor shows it.
struct MessageItem {
    role: String,
    content: String,
    /// A reply cut short by Stop.
    stopped: bool,
}

#[derive(Template)]
#[template(path = "editor.html")]
struct EditorPage {
    layout: Layout,
    id: Uuid,
    title: String,
    status: &'static str,
    badge: &'static str,
    public_url: Option<String>,
    messages: Vec<MessageItem>,
    usage: String,
    /// The preview's signed address, when the aide has files.
    preview: Option<String>,
    /// A turn still running (the script re-attaches to it).
    running_turn: Option<Uuid>,
    /// There is an earlier revision to go back to.
    can_undo: bool,
    /// On Pro, the address can be chosen.
    pro: bool,
    slug: String,
    script: &'static str,
}

/// Messages the editor shows at most (the oldest first).
const MESSAGES_SHOWN: i64 = 1000;

/// "12 of 50 turns this week, resets Mon Dec 7 at 09:00 UTC", or Pro's count.
fn usage_line(turns: &crate::auth::routes::TurnUsage) -> String {
    let resets = turns
        .resets_at
        .map(|at| format!(", resets {}", at.format("%a %b %-d at %H:%M UTC")))
        .unwrap_or_default();
    match turns.limit {
        Some(limit) => format!("{} of {limit} turns this week{resets}", turns.used),
        None => format!("{} turns this week (no weekly limit on Pro)", turns.used),
    }
}

/// `GET /a/{id}`: the editor: the conversation beside the page's preview.
async fn editor(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/").into_response());
    };
    let Ok(crate::http::params::IdPath(id)) = id else {
        return Ok(super::not_found());
    };
    let tx = state.db.user(user.user_id).await?;
    let (me, row, messages, newest, turns) = futures_util::future::try_join5(
        crate::auth::repo::me(&tx),
        crate::aides::repo::find(&tx, id),
        crate::conversations::repo::list_messages(&tx, id, None, MESSAGES_SHOWN),
        crate::revisions::repo::newest(&tx, id),
        crate::turns::repo::list(&tx, id, None, 1),
    )
    .await?;
    tx.rollback();
    let (Some(me), Some(row)) = (me, row) else {
        return Ok(super::not_found());
    };
    let me = crate::auth::routes::UserResponse::new(me, &state.config, Utc::now());
    let item = AideItem::new(row.clone(), Utc::now());
    let slug_now = row.slug.clone();
    let public_url = (row.status == Status::Published)
        .then(|| {
            row.slug.as_deref().map(|slug| {
                state
                    .config
                    .public_url_for(&format!("s/{slug}/"))
                    .to_string()
            })
        })
        .flatten();
    let page = EditorPage {
        layout: Layout::signed_in(row.title.clone(), &me.email),
        id,
        title: row.title,
        status: item.status,
        badge: item.badge,
        public_url,
        messages: messages
            .into_iter()
            .map(|m| MessageItem {
                stopped: m.metadata.get("interrupted").and_then(|v| v.as_bool()) == Some(true),
                role: m.role,
                content: m.content,
            })
            .collect(),
        usage: usage_line(&me.turns),
        can_undo: newest.as_ref().is_some_and(|r| r.number > 1),
        pro: me.tier.is_pro(),
        slug: slug_now.unwrap_or_default(),
        preview: newest
            .filter(|r| r.file_count > 0)
            .map(|r| super::preview::url(&state, id, r.number)),
        running_turn: turns
            .into_iter()
            .next()
            .filter(|t| t.status == "running")
            .map(|t| t.id),
        script: super::assets::url("editor.js"),
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

#[derive(Debug, Deserialize)]
struct RenameForm {
    title: String,
}

async fn rename(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
    input: Input<RenameForm>,
) -> Response {
    let result = async {
        let (api, id) = (api?, id?.0);
        let title = crate::aides::model::Title::parse(&input.value.title)
            .map_err(|m| AppError::invalid("title", m))?;
        crate::aides::routes::update_aide(&state, &api, ip, id, Some(title), None).await
    }
    .await;
    match result {
        Ok(row) => Redirect::to(&format!("/a/{}", row.id)).into_response(),
        Err(e) => error_page(e, "/"),
    }
}

async fn publish(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let mut back = "/".to_string();
    let result = async {
        let (api, id) = (api?, id?.0);
        back = format!("/a/{id}");
        crate::publishing::routes::publish_aide(&state, &api, ip, id, None, None).await
    }
    .await;
    back_or_error(result, &back)
}

async fn unpublish(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let mut back = "/".to_string();
    let result = async {
        let (api, id) = (api?, id?.0);
        back = format!("/a/{id}");
        crate::publishing::routes::unpublish_aide(&state, &api, ip, id).await
    }
    .await;
    back_or_error(result, &back)
}

#[derive(Debug, Deserialize)]
struct PreviewParams {
    revision: Option<i32>,
    /// A running turn: its working copy.
    turn: Option<Uuid>,
}

/// `GET /a/{id}/preview-url?revision=N` (or `?turn=T`): a fresh signed address for revision N's
/// preview, or for running turn T's working copy, as `{"url": ...}` (the editor's script asks
/// while a turn edits and after it made a revision).
async fn preview_url(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    id: Result<crate::http::params::IdPath, AppError>,
    params: Result<Query<PreviewParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AppError> {
    let user = user.ok_or_else(AppError::unauthorized)?;
    let id = id?.0;
    let Ok(Query(params)) = params else {
        return Err(AppError::invalid("revision", "must be a revision number"));
    };
    let tx = state.db.user(user.user_id).await?;
    let url = match (params.revision, params.turn) {
        (Some(revision), None) => {
            let found = crate::revisions::repo::find(&tx, id, revision).await?;
            found.map(|_| super::preview::url(&state, id, revision))
        }
        (None, Some(turn)) => {
            let found = crate::turns::repo::find_in_aide(&tx, id, turn).await?;
            found.map(|_| super::preview::turn_url(&state, id, turn))
        }
        _ => return Err(AppError::invalid("revision", "give a revision or a turn")),
    };
    tx.rollback();
    let url = url.ok_or_else(AppError::not_found)?;
    let mut response = axum::Json(serde_json::json!({ "url": url })).into_response();
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// One change in the history.
struct RevisionItem {
    number: i32,
    label: String,
    when: String,
    files: String,
    newest: bool,
    preview: Option<String>,
}

struct VersionItem {
    version: i32,
    when: String,
    url: String,
    /// A signed preview, which works whether or not the page is live.
    preview: String,
    latest: bool,
}

#[derive(Template)]
#[template(path = "history.html")]
struct HistoryPage {
    layout: Layout,
    id: Uuid,
    title: String,
    revisions: Vec<RevisionItem>,
    versions: Vec<VersionItem>,
    kept: u32,
    /// Published now: the versions' addresses answer.
    live: bool,
}

/// Changes the history shows.
const HISTORY_SHOWN: i64 = 100;

/// `GET /a/{id}/history`: every kept change (each previewable, each restorable) and the
/// published versions.
async fn history(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/").into_response());
    };
    let Ok(crate::http::params::IdPath(id)) = id else {
        return Ok(super::not_found());
    };
    let tx = state.db.user(user.user_id).await?;
    let (me, row, revisions, versions) = futures_util::future::try_join4(
        crate::auth::repo::me(&tx),
        crate::aides::repo::find(&tx, id),
        crate::revisions::repo::list(&tx, id, None, HISTORY_SHOWN),
        crate::publishing::repo::list_versions(&tx, id),
    )
    .await?;
    tx.rollback();
    let (Some(me), Some(row)) = (me, row) else {
        return Ok(super::not_found());
    };
    let now = Utc::now();
    let newest = revisions.first().map(|r| r.number);
    let slug = row.slug.clone().unwrap_or_default();
    let latest = versions.first().map(|v| v.version);
    let page = HistoryPage {
        live: row.status == Status::Published,
        layout: Layout::signed_in(format!("History of {}", row.title), &me.email),
        id,
        kept: state.config.limits.tier(me.tier).revisions_kept,
        title: row.title,
        revisions: revisions
            .into_iter()
            .map(|r| RevisionItem {
                number: r.number,
                label: match (r.cause, r.restored_from) {
                    (crate::revisions::Cause::Turn, _) => format!("#{}: a chat turn", r.number),
                    (crate::revisions::Cause::Upload, _) => {
                        format!("#{}: a file uploaded", r.number)
                    }
                    (crate::revisions::Cause::Delete, _) => {
                        format!("#{}: a file deleted", r.number)
                    }
                    (crate::revisions::Cause::Restore, Some(from)) => {
                        format!("#{}: #{from} restored", r.number)
                    }
                    _ => format!("#{}", r.number),
                },
                when: ago(r.created_at, now),
                files: match r.file_count {
                    1 => "1 file".to_string(),
                    n => format!("{n} files"),
                },
                newest: Some(r.number) == newest,
                preview: (r.file_count > 0).then(|| super::preview::url(&state, id, r.number)),
            })
            .collect(),
        versions: versions
            .into_iter()
            .map(|v| VersionItem {
                latest: Some(v.version) == latest,
                preview: super::preview::version_url(&state, id, v.version),
                version: v.version,
                when: ago(v.published_at, now),
                url: state
                    .config
                    .public_url_for(&format!("s/{slug}/v/{}/", v.version))
                    .to_string(),
            })
            .collect(),
    };
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

/// `POST /a/{id}/undo`: back to the revision before the newest (as a new revision).
async fn undo(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
) -> Response {
    let mut back = "/".to_string();
    let result = async {
        let (api, id) = (api?, id?.0);
        back = format!("/a/{id}");
        let tx = api.begin_read(&state.db).await?;
        let (mine, revisions) = futures_util::future::try_join(
            crate::aides::repo::exists(&tx, id),
            crate::revisions::repo::list(&tx, id, None, 2),
        )
        .await?;
        tx.finish();
        if !mine {
            return Err(AppError::not_found());
        }
        let Some(previous) = revisions.get(1) else {
            return Err(AppError::conflict(
                "NOTHING_TO_UNDO",
                "There is no earlier change to go back to.",
            ));
        };
        crate::revisions::routes::restore_revision(&state, &api, ip, id, previous.number).await
    }
    .await;
    back_or_error(result, &back)
}

/// `POST /a/{id}/revisions/{n}/restore`: the history's Restore.
async fn restore_revision(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    Path((id, number)): Path<(String, String)>,
) -> Response {
    let back = format!("/a/{id}/history");
    let result = async {
        let api = api?;
        let (id, number) = numbered(&id, &number)?;
        crate::revisions::routes::restore_revision(&state, &api, ip, id, number).await
    }
    .await;
    back_or_error(result, &back)
}

#[derive(Debug, Deserialize)]
struct SlugForm {
    slug: String,
}

/// `POST /a/{id}/slug`: (Pro) the page's own address.
async fn choose_slug(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    id: Result<crate::http::params::IdPath, AppError>,
    input: Input<SlugForm>,
) -> Response {
    let mut back = "/".to_string();
    let result = async {
        let (api, id) = (api?, id?.0);
        back = format!("/a/{id}");
        let slug = crate::aides::model::Slug::parse(input.value.slug.trim())
            .map_err(|m| AppError::invalid("slug", m))?;
        crate::aides::routes::update_aide(&state, &api, ip, id, None, Some(slug)).await
    }
    .await;
    match result {
        Ok(row) => Redirect::to(&format!("/a/{}", row.id)).into_response(),
        Err(e) => error_page(e, &back),
    }
}

/// `POST /a/{id}/versions/{n}/publish`: the history's "Publish this version again".
async fn republish(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    Path((id, number)): Path<(String, String)>,
) -> Response {
    let back = format!("/a/{id}/history");
    let result = async {
        let api = api?;
        let (id, number) = numbered(&id, &number)?;
        crate::publishing::routes::republish_version(&state, &api, ip, id, number).await
    }
    .await;
    back_or_error(result, &back)
}

/// After a form whose success goes back to `back`: there, or the error as a page.
fn back_or_error<T>(result: Result<T, AppError>, back: &str) -> Response {
    match result {
        Ok(_) => Redirect::to(back).into_response(),
        Err(e) => error_page(e, back),
    }
}

/// An aide's id and a number from the path; anything malformed is nobody's (404).
fn numbered(id: &str, number: &str) -> Result<(Uuid, i32), AppError> {
    match (id.parse::<Uuid>(), number.parse::<i32>()) {
        (Ok(id), Ok(number)) => Ok((id, number)),
        _ => Err(AppError::not_found()),
    }
}

/// `POST /account/export`: starts an export, back to the account page.
async fn export_data(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
) -> Response {
    let result = async {
        let api = api?;
        crate::account::routes::start_export(&state, &api, ip).await
    }
    .await;
    back_or_error(result, "/account?export=started#data")
}

#[derive(Template)]
#[template(path = "delete_account.html")]
struct DeleteAccountPage {
    layout: Layout,
    email: String,
    code_step: bool,
    minutes: i64,
    grace_days: u32,
}

#[derive(Debug, Default, Deserialize)]
struct DeleteParams {
    step: Option<String>,
}

impl DeleteAccountPage {
    fn new(state: &AppState, email: &str, code_step: bool) -> Self {
        DeleteAccountPage {
            layout: Layout::signed_in("Delete your account", email),
            email: email.to_string(),
            code_step,
            minutes: crate::account::deletion::CODE_MINUTES,
            grace_days: state.config.limits.account_deletion_grace_days,
        }
    }
}

/// `GET /account/delete`: type your address (or, with `?step=code`, the code).
async fn delete_account_page(
    State(state): State<AppState>,
    user: Option<CurrentUser>,
    Query(params): Query<DeleteParams>,
) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/").into_response());
    };
    let tx = state.db.user(user.user_id).await?;
    let me = crate::auth::routes::me_summary(&tx).await?;
    tx.rollback();
    let Some((email, _)) = me else {
        return Ok(Redirect::to("/").into_response());
    };
    let page = DeleteAccountPage::new(&state, &email, params.step.as_deref() == Some("code"));
    Ok(render(StatusCode::OK, &page, &app_csp(&state.config)))
}

#[derive(Debug, Deserialize)]
struct DeleteForm {
    email: String,
}

/// `POST /account/delete`: sends the code, then asks for it.
async fn delete_account_send(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    input: Input<DeleteForm>,
) -> Response {
    let result = async {
        let api = api?;
        crate::account::routes::send_deletion_code(&state, &api, ip, &input.value.email).await?;
        let tx = state.db.user(api.user_id()).await?;
        let me = crate::auth::routes::me_summary(&tx).await?;
        tx.rollback();
        me.ok_or_else(AppError::unauthorized)
    }
    .await;
    match result {
        Ok((email, _)) => render(
            StatusCode::OK,
            &DeleteAccountPage::new(&state, &email, true),
            &app_csp(&state.config),
        ),
        Err(e) => error_page(e, "/account/delete"),
    }
}

#[derive(Debug, Deserialize)]
struct CodeForm {
    code: String,
}

#[derive(Template)]
#[template(path = "account_deleted.html")]
struct AccountDeletedPage {
    layout: Layout,
    day: String,
}

/// `POST /account/delete/confirm`: with the right code, the deletion starts and the person is
/// signed out.
async fn delete_account_confirm(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
    input: Input<CodeForm>,
) -> Response {
    let result = async {
        let api = api?;
        crate::account::routes::confirm_deletion_code(&state, &api, ip, &input.value.code).await
    }
    .await;
    match result {
        Ok(purge_after) => {
            let page = AccountDeletedPage {
                layout: Layout::new("Account being deleted"),
                day: purge_after.format("%B %-d, %Y").to_string(),
            };
            let mut response = render(StatusCode::OK, &page, super::BASIC_CSP);
            response.headers_mut().insert(
                axum::http::header::SET_COOKIE,
                crate::auth::session::clear_cookie(&state.config.app_url),
            );
            response
        }
        Err(e) => error_page(e, "/account/delete?step=code"),
    }
}

/// `POST /account/delete/cancel`: keeps the account.
async fn delete_account_cancel(
    State(state): State<AppState>,
    api: Result<ApiUser, AppError>,
    ClientIp(ip): ClientIp,
) -> Response {
    let result = async {
        let api = api?;
        crate::account::routes::cancel_account_deletion(&state, &api, ip).await
    }
    .await;
    back_or_error(result, "/account?deletion=cancelled")
}
