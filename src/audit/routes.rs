//! `GET /api/audit`: the caller's own audit trail, newest first.

use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::ApiUser;
use crate::cursor::{decode_id_cursor, encode_id_cursor};
use crate::error::AppError;
use crate::http::params::{PageParams, QueryParams, page_size};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

/// One entry of the caller's audit trail.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    /// Such as `auth.sign_in`, `aide.create`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<Uuid>,
    pub details: serde_json::Value,
    pub ip_address: Option<String>,
    #[serde(serialize_with = "crate::time::rfc3339")]
    pub created_at: DateTime<Utc>,
}

impl crate::db::FromRow for AuditEntry {
    fn from_row(row: &crate::db::Row) -> Result<Self, crate::db::Error> {
        Ok(AuditEntry {
            id: row.try_get("id")?,
            action: row.try_get("action")?,
            resource_type: row.try_get("resource_type")?,
            resource_id: row.try_get("resource_id")?,
            details: row.try_get("details")?,
            ip_address: row.try_get("ip_address")?,
            created_at: row.try_get("created_at")?,
        })
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// The caller's own audit entries, newest first.
#[utoipa::path(get, path = "/api/audit", tag = "audit", params(PageParams),
    responses((status = 200, body = AuditPage),
              (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<AuditPage>, AppError> {
    let before = params.cursor.as_deref().map(decode_id_cursor).transpose()?;
    let limit = page_size(params.limit)?;
    let tx = api.begin_read(&state.db).await?;
    let mut items = super::list(&tx, before, limit + 1).await?;
    tx.finish();
    let next_cursor = crate::cursor::next_page(&mut items, limit, |e| encode_id_cursor(e.id));
    Ok(Json(AuditPage { items, next_cursor }))
}
