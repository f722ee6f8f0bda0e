//! `GET /api/aides/{id}/revisions` and `POST /api/aides/{id}/revisions/{n}/restore`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::repo::{self, Cause, Revision};
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::error::AppError;
use crate::http::client_ip::ClientIp;
use crate::http::params::{IdPath, NumberPath, PageParams, QueryParams, page_size};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(restore))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RevisionPage {
    pub items: Vec<Revision>,
    pub next_cursor: Option<String>,
}

/// The aide's revisions, newest first.
#[utoipa::path(get, path = "/api/aides/{id}/revisions", tag = "revisions",
    params(("id" = uuid::Uuid, Path, description = "The aide's id"), PageParams),
    responses((status = 200, body = RevisionPage),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(aide): IdPath,
    QueryParams(params): QueryParams<PageParams>,
) -> Result<Json<RevisionPage>, AppError> {
    let before = params
        .cursor
        .as_deref()
        .map(crate::cursor::decode_id_cursor)
        .transpose()?
        .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
    let limit = page_size(params.limit)?;
    let tx = api.begin_read(&state.db).await?;
    let items =
        crate::aides::of_owned_aide(&tx, aide, repo::list(&tx, aide, before, limit + 1)).await;
    tx.finish();
    let mut items = items?;
    let next_cursor = crate::cursor::next_page(&mut items, limit, |r| {
        crate::cursor::encode_id_cursor(i64::from(r.number))
    });
    Ok(Json(RevisionPage { items, next_cursor }))
}

/// Brings revision n's files back as the newest revision. Nothing is lost: the revision this
/// replaces stays in the history. Uses no turn.
#[utoipa::path(post, path = "/api/aides/{id}/revisions/{n}/restore", tag = "revisions",
    params(("id" = uuid::Uuid, Path, description = "The aide's id"),
           ("n" = i32, Path, description = "The revision to bring back")),
    responses((status = 201, body = Revision),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such aide or revision (older ones are dropped)", body = crate::error::ErrorBody),
              (status = 413, description = "AIDE_STORAGE_FULL or AIDE_FILE_LIMIT: the revision is larger than the plan now allows", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(aide): IdPath,
    NumberPath(number): NumberPath,
) -> Result<(StatusCode, Json<Revision>), AppError> {
    let newest = restore_revision(&state, &api, ip, aide, number).await?;
    Ok((StatusCode::CREATED, Json(newest)))
}

/// Brings revision `number` of aide `aide` back as its newest revision, with its audit row.
pub(crate) async fn restore_revision(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    aide: uuid::Uuid,
    number: i32,
) -> Result<Revision, AppError> {
    let tx = api.begin(&state.db).await?;
    // One round trip: the aide locked (and its owner's plan), and the revision.
    let (tier, revision) = futures_util::future::try_join(
        crate::files::repo::lock_aide(&tx, aide),
        repo::find(&tx, aide, number),
    )
    .await?;
    let tier = tier.ok_or_else(AppError::not_found)?;
    let revision = revision.ok_or_else(|| {
        AppError::client(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("There is no revision {number} of this aide (only the newest are kept)."),
        )
    })?;
    let limits = state.config.limits.tier(tier);
    crate::files::quota::check_revision(
        &limits,
        revision.size_bytes as u64,
        revision.file_count as u32,
    )?;
    let (_, _, newest, (), ()) = futures_util::future::try_join5(
        repo::copy_back(&tx, aide, number),
        repo::record(
            &tx,
            aide,
            Cause::Restore,
            None,
            Some(number),
            limits.revisions_kept,
        ),
        repo::newest(&tx, aide),
        audit::record_user(
            &tx,
            &Entry::new("revision.restore", "aide")
                .resource(aide)
                .details(serde_json::json!({"restored_from": number}))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    drop(tx);
    // Files the restore replaced, or revisions it dropped, may leave bytes nothing uses.
    state.storage_cleanup_wake.notify_one();
    newest.ok_or_else(|| AppError::Internal(anyhow::anyhow!("no revision after recording one")))
}
