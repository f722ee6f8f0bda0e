//! Staff access ("break-glass"): how an operator reads one person's data for a support case,
//! abuse or a legal request, with a reason, for at most an hour, and with a trail the person sees.
//!
//! The rules are the database's (migration 0022), not this module's: operators are listed by
//! `aide operator add`, never by the app; these routes run in the support scope, as
//! `aide_support`, which has no table privileges and can only call functions that check a live
//! grant of the calling operator and write the audit row in the same statement as the read. This
//! module turns their refusals into answers, and posts a grant's start to Slack at once (its end is
//! posted when it is closed here, or by the alert loop when it expires).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::SessionUser;
use crate::db::{self, SupportTx};
use crate::error::AppError;
use crate::http::input::JsonBody;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(open_grant))
        .routes(routes!(close_grant))
        .routes(routes!(account))
        .routes(routes!(aides))
        .routes(routes!(conversation))
        .routes(routes!(files))
}

crate::statement! {
    OPEN: Support = "select id, target_id, expires_at from support_open_grant($1, $2, $3, $4, $5)";
    CLOSE: Support = "select support_close_grant($1)";
    ACCOUNT: Support = "select email, name, tier, billing_status, created_at, aides, deletion_requested_at
         from support_account($1)";
    AIDES: Support = "select id, title, slug, status, created_at, updated_at from support_aides($1)";
    CONVERSATION: Support = "select id, role, content, created_at from support_conversation($1, $2)";
    FILES: Support = "select path, size_bytes, content_type, updated_at from support_files($1, $2)";
}

/// The database's refusals, as answers: 403 for a rule of staff access, 422 for a bad request,
/// 404 for something that is not there.
fn refusal(e: db::Error) -> AppError {
    let message = e.message().unwrap_or_default().to_string();
    match e.code() {
        Some("42501") => AppError::forbidden("STAFF_ACCESS_REFUSED", message),
        Some("22023" | "23514") => AppError::client(
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            message,
        ),
        Some("P0002") => AppError::client(StatusCode::NOT_FOUND, "NOT_FOUND", message),
        _ => e.into(),
    }
}

async fn support_tx(state: &AppState, user: &SessionUser) -> Result<SupportTx, AppError> {
    Ok(state.db.support(user.user_id(), user.session_id()).await?)
}

/// `POST /api/support/grants`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"email": "person@example.com", "reason": "Ticket 1042: cannot publish their page", "category": "support"}))]
pub struct GrantRequest {
    /// The address of the account to open.
    pub email: String,
    /// Why, in 20 characters or more (a ticket reference and the question).
    pub reason: String,
    /// `support`, `abuse` or `legal`.
    pub category: String,
    /// 1 to 60; 30 when left out.
    pub minutes: Option<i32>,
    /// Category `legal` only: the person is not emailed.
    #[serde(default)]
    pub legal_hold: bool,
}

/// An open grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct Grant {
    pub id: Uuid,
    pub target_id: Uuid,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub expires_at: DateTime<Utc>,
}

/// Opens read-only access to one account, for an operator: audited, emailed to the person (unless
/// a legal hold is recorded) and posted to Slack.
#[utoipa::path(post, path = "/api/support/grants", tag = "support",
    request_body = GrantRequest,
    responses((status = 201, body = Grant),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED: not an operator, oneself, another operator, or a grant already open", body = crate::error::ErrorBody),
              (status = 404, description = "No account has that address", body = crate::error::ErrorBody),
              (status = 422, description = "Reason, category or length refused", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn open_grant(
    State(state): State<AppState>,
    user: SessionUser,
    JsonBody(body): JsonBody<GrantRequest>,
) -> Result<(StatusCode, Json<Grant>), AppError> {
    let minutes = body.minutes.unwrap_or(30);
    check_request(&body, minutes)?;
    let tx = support_tx(&state, &user).await?;
    let (id, target_id, expires_at): (Uuid, Uuid, DateTime<Utc>) = tx
        .row(
            &OPEN,
            &[
                &body.email,
                &body.reason,
                &body.category,
                &minutes,
                &body.legal_hold,
            ],
        )
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    state.outbox_wake.notify_one();
    // The reason stays in the database: free text may name the person.
    post(
        &state,
        format!(
            ":rotating_light: *Staff access opened*: grant `{id}`, category {}, up to {minutes} minutes{}.",
            crate::alerts::escape(&body.category),
            if body.legal_hold {
                ", legal hold (the person is not emailed)"
            } else {
                ""
            },
        ),
    );
    Ok((
        StatusCode::CREATED,
        Json(Grant {
            id,
            target_id,
            expires_at,
        }),
    ))
}

/// The request's own shape, checked before the database judges it: lengths, control characters
/// (PostgreSQL text cannot hold NUL), the category and the length of the grant.
fn check_request(body: &GrantRequest, minutes: i32) -> Result<(), AppError> {
    let controls = |text: &str| {
        text.chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
    };
    if body.email.len() > 320 || body.email.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "email",
            "must be an email address (at most 320 characters)",
        ));
    }
    // Trimmed as the database trims it (`btrim`: spaces only), so both judge the same text.
    let reason = body.reason.trim_matches(' ');
    if controls(reason) {
        return Err(AppError::invalid(
            "reason",
            "must not contain control characters",
        ));
    }
    if !(20..=1000).contains(&reason.chars().count()) {
        return Err(AppError::invalid(
            "reason",
            "must be 20 to 1,000 characters: the request's reference and what it needs",
        ));
    }
    if !matches!(body.category.as_str(), "support" | "abuse" | "legal") {
        return Err(AppError::invalid(
            "category",
            "must be support, abuse or legal",
        ));
    }
    if !(1..=60).contains(&minutes) {
        return Err(AppError::invalid("minutes", "must be 1 to 60"));
    }
    if body.legal_hold && body.category != "legal" {
        return Err(AppError::invalid(
            "legal_hold",
            "is only for category legal",
        ));
    }
    Ok(())
}

/// Posts to Slack without holding up the answer.
fn post(state: &AppState, text: String) {
    if let Some(slack) = state.slack.clone() {
        tokio::spawn(async move {
            slack.post(&text).await;
        });
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Closed {
    pub closed: bool,
}

/// Ends one of the operator's grants before its time.
#[utoipa::path(post, path = "/api/support/grants/{id}/close", tag = "support",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Closed),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED: no live grant of the caller's with that id", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn close_grant(
    State(state): State<AppState>,
    user: SessionUser,
    crate::http::params::IdPath(id): crate::http::params::IdPath,
) -> Result<Json<Closed>, AppError> {
    let tx = support_tx(&state, &user).await?;
    let closed: bool = tx.value(&CLOSE, &[&id]).await.map_err(refusal)?;
    tx.commit().await?;
    post(
        &state,
        format!(":white_check_mark: *Staff access closed*: grant `{id}`, by its operator."),
    );
    Ok(Json(Closed { closed }))
}

/// The account under a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportAccount {
    pub email: String,
    pub name: Option<String>,
    pub tier: String,
    pub billing_status: Option<String>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    pub aides: i64,
    #[serde(serialize_with = "crate::time::rfc3339_opt")]
    pub deletion_requested_at: Option<DateTime<Utc>>,
}

impl db::FromRow for SupportAccount {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(SupportAccount {
            email: row.try_get("email")?,
            name: row.try_get("name")?,
            tier: row.try_get("tier")?,
            billing_status: row.try_get("billing_status")?,
            created_at: row.try_get("created_at")?,
            aides: row.try_get("aides")?,
            deletion_requested_at: row.try_get("deletion_requested_at")?,
        })
    }
}

/// Reads the account under grant `id` (audited).
#[utoipa::path(get, path = "/api/support/grants/{id}/account", tag = "support",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = SupportAccount),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED: no live grant of the caller's with that id", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn account(
    State(state): State<AppState>,
    user: SessionUser,
    crate::http::params::IdPath(id): crate::http::params::IdPath,
) -> Result<Json<SupportAccount>, AppError> {
    let tx = support_tx(&state, &user).await?;
    let account: SupportAccount = tx.row(&ACCOUNT, &[&id]).await.map_err(refusal)?;
    tx.commit().await?;
    Ok(Json(account))
}

/// An aide under a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportAide {
    pub id: Uuid,
    pub title: String,
    pub slug: Option<String>,
    pub status: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl db::FromRow for SupportAide {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(SupportAide {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            slug: row.try_get("slug")?,
            status: row.try_get("status")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Lists the aides of the account under grant `id` (audited).
#[utoipa::path(get, path = "/api/support/grants/{id}/aides", tag = "support",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Vec<SupportAide>),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn aides(
    State(state): State<AppState>,
    user: SessionUser,
    crate::http::params::IdPath(id): crate::http::params::IdPath,
) -> Result<Json<Vec<SupportAide>>, AppError> {
    let tx = support_tx(&state, &user).await?;
    let rows: Vec<SupportAide> = tx.rows(&AIDES, &[&id]).await.map_err(refusal)?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// A message under a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportMessage {
    pub id: i64,
    pub role: String,
    pub content: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl db::FromRow for SupportMessage {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(SupportMessage {
            id: row.try_get("id")?,
            role: row.try_get("role")?,
            content: row.try_get("content")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

/// Path of the routes under one aide of a grant.
#[derive(Debug, Deserialize)]
pub struct GrantAide {
    id: String,
    aide: String,
}

fn grant_aide(path: &GrantAide) -> Result<(Uuid, Uuid), AppError> {
    let id = Uuid::parse_str(&path.id)
        .map_err(|_| AppError::invalid("id", "is not a valid id (a UUID is expected)"))?;
    let aide = Uuid::parse_str(&path.aide)
        .map_err(|_| AppError::invalid("aide", "is not a valid id (a UUID is expected)"))?;
    Ok((id, aide))
}

/// Reads one aide's conversation under grant `id` (audited).
#[utoipa::path(get, path = "/api/support/grants/{id}/aides/{aide}/conversation", tag = "support",
    params(("id" = Uuid, Path), ("aide" = Uuid, Path)),
    responses((status = 200, body = Vec<SupportMessage>),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED", body = crate::error::ErrorBody),
              (status = 404, description = "Not an aide of the account", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn conversation(
    State(state): State<AppState>,
    user: SessionUser,
    Path(path): Path<GrantAide>,
) -> Result<Json<Vec<SupportMessage>>, AppError> {
    let (id, aide) = grant_aide(&path)?;
    let tx = support_tx(&state, &user).await?;
    let rows: Vec<SupportMessage> = tx
        .rows(&CONVERSATION, &[&id, &aide])
        .await
        .map_err(refusal)?;
    tx.commit().await?;
    Ok(Json(rows))
}

/// A file's facts under a grant (never its bytes).
#[derive(Debug, Serialize, ToSchema)]
pub struct SupportFile {
    pub path: String,
    pub size_bytes: i64,
    pub content_type: String,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl db::FromRow for SupportFile {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(SupportFile {
            path: row.try_get("path")?,
            size_bytes: row.try_get("size_bytes")?,
            content_type: row.try_get("content_type")?,
            updated_at: row.try_get("updated_at")?,
        })
    }
}

/// Lists one aide's workspace files under grant `id` (audited).
#[utoipa::path(get, path = "/api/support/grants/{id}/aides/{aide}/files", tag = "support",
    params(("id" = Uuid, Path), ("aide" = Uuid, Path)),
    responses((status = 200, body = Vec<SupportFile>),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "STAFF_ACCESS_REFUSED", body = crate::error::ErrorBody),
              (status = 404, description = "Not an aide of the account", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn files(
    State(state): State<AppState>,
    user: SessionUser,
    Path(path): Path<GrantAide>,
) -> Result<Json<Vec<SupportFile>>, AppError> {
    let (id, aide) = grant_aide(&path)?;
    let tx = support_tx(&state, &user).await?;
    let rows: Vec<SupportFile> = tx.rows(&FILES, &[&id, &aide]).await.map_err(refusal)?;
    tx.commit().await?;
    Ok(Json(rows))
}
