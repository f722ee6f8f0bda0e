//! `/api/aides`: list, create, read, rename, choose a slug, archive, restore, delete.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use futures_util::future::{try_join, try_join3};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::model::{Aide, AidePage, AideRow, CreateAide, Slug, Status, Title, UpdateAide};
use super::repo;
use crate::audit::{self, Entry};
use crate::auth::ApiUser;
use crate::cursor::TimeCursor;
use crate::db;
use crate::error::AppError;
use crate::http::SizedJson;
use crate::http::client_ip::ClientIp;
use crate::http::input::JsonBody;
use crate::http::params::{IdPath, QueryParams, page_size};
use crate::state::AppState;
use crate::tier::Tier;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(read, update, delete))
        .routes(routes!(archive))
        .routes(routes!(restore))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// draft, published or archived; all but archived when left out.
    #[param(value_type = Option<Status>)]
    status: Option<String>,
    /// From the previous page's `next_cursor`.
    cursor: Option<String>,
    /// 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<u32>,
}

/// The caller's aides, most recently updated first.
#[utoipa::path(get, path = "/api/aides", tag = "aides", params(ListParams),
    responses((status = 200, body = AidePage),
              (status = 401, body = crate::error::ErrorBody),
              (status = 422, description = "Bad status, cursor or limit", body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    api: ApiUser,
    QueryParams(params): QueryParams<ListParams>,
) -> Result<SizedJson<AidePage>, AppError> {
    let status = params
        .status
        .as_deref()
        .map(Status::parse)
        .transpose()
        .map_err(|m| AppError::invalid("status", m))?;
    let cursor = params
        .cursor
        .as_deref()
        .map(TimeCursor::decode)
        .transpose()?;
    let limit = page_size(params.limit)?;
    // One more than asked tells whether there is a next page.
    let tx = api.begin_read(&state.db).await?;
    let mut rows = repo::list(&tx, status, cursor, limit + 1).await?;
    tx.finish();
    let next_cursor = crate::cursor::next_page(&mut rows, limit, |r| {
        TimeCursor {
            at: r.updated_at,
            id: r.id,
        }
        .encode()
    });
    let size_hint = 64 + 256 * rows.len();
    Ok(SizedJson(
        AidePage {
            items: rows.into_iter().map(Aide::from).collect(),
            next_cursor,
        },
        size_hint,
    ))
}

/// Creates an aide. Free accounts may hold 5 that are not archived.
#[utoipa::path(post, path = "/api/aides", tag = "aides", request_body = CreateAide,
    responses((status = 201, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "AIDE_LIMIT_REACHED", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    body: Option<JsonBody<CreateAide>>,
) -> Result<(StatusCode, Json<Aide>), AppError> {
    let request = body.map(|JsonBody(b)| b).unwrap_or_default();
    let row = create_aide(&state, &api, ip, request.title.as_deref()).await?;
    Ok((StatusCode::CREATED, Json(row.into())))
}

/// Creates an aide titled `title` ("Untitled" when None), within the free plan's limit, with
/// its audit row (the JSON route and the web app's form both come here).
pub(crate) async fn create_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    title: Option<&str>,
) -> Result<AideRow, AppError> {
    let title = match title {
        Some(raw) => Title::parse(raw).map_err(|m| AppError::invalid("title", m))?,
        None => Title::parse("Untitled").map_err(|m| AppError::invalid("title", m))?,
    };
    let tx = api.begin(&state.db).await?;
    // One round trip: the account locked, its aides counted, the aide inserted (and all of it
    // rolled back when the count says no).
    let (tier, active, row) = try_join3(
        repo::lock_account(&tx),
        repo::count_active(&tx),
        repo::insert(&tx, title.as_str()),
    )
    .await?;
    check_aide_limit(state, tier, active)?;
    try_join(
        audit::record_user(
            &tx,
            &Entry::new("aide.create", "aide").resource(row.id).ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    Ok(row)
}

/// One aide.
#[utoipa::path(get, path = "/api/aides/{id}", tag = "aides",
    params(("id" = uuid::Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, description = "No such aide of yours", body = crate::error::ErrorBody),
              (status = 422, description = "Malformed id", body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn read(
    State(state): State<AppState>,
    api: ApiUser,
    IdPath(id): IdPath,
) -> Result<Json<Aide>, AppError> {
    let tx = api.begin_read(&state.db).await?;
    let row = repo::find(&tx, id).await?.ok_or_else(AppError::not_found)?;
    tx.finish();
    Ok(Json(row.into()))
}

/// Renames an aide, or (Pro) chooses its slug.
#[utoipa::path(patch, path = "/api/aides/{id}", tag = "aides", request_body = UpdateAide,
    params(("id" = uuid::Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "PRO_REQUIRED: slugs are a Pro feature", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, description = "SLUG_TAKEN", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(id): IdPath,
    JsonBody(request): JsonBody<UpdateAide>,
) -> Result<Json<Aide>, AppError> {
    let title = request
        .title
        .as_deref()
        .map(Title::parse)
        .transpose()
        .map_err(|m| AppError::invalid("title", m))?;
    let slug = request
        .slug
        .as_deref()
        .map(Slug::parse)
        .transpose()
        .map_err(|m| AppError::invalid("slug", m))?;
    if title.is_none() && slug.is_none() {
        return Err(AppError::invalid(
            "title",
            "give a title or a slug to change",
        ));
    }
    Ok(Json(
        update_aide(&state, &api, ip, id, title, slug).await?.into(),
    ))
}

/// Renames aide `id`, or (Pro) gives it the slug, with its audit row.
pub(crate) async fn update_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    id: uuid::Uuid,
    title: Option<Title>,
    slug: Option<Slug>,
) -> Result<AideRow, AppError> {
    let tx = api.begin(&state.db).await?;
    let before = repo::find(&tx, id).await?.ok_or_else(AppError::not_found)?;
    if slug.is_some() && !repo::tier(&tx).await?.is_pro() {
        return Err(AppError::forbidden(
            "PRO_REQUIRED",
            "Choosing your page's address is a Pro feature. Upgrade to Pro to pick a slug; free pages get one assigned when first published.",
        ));
    }
    let row = repo::update(
        &tx,
        id,
        title.as_ref().map(Title::as_str),
        slug.as_ref().map(Slug::as_str),
    )
    .await
    .map_err(slug_conflict)?
    .ok_or_else(AppError::not_found)?;
    let mut changed = Vec::new();
    if title.is_some() && row.title != before.title {
        changed.push("title");
    }
    if slug.is_some() && row.slug != before.slug {
        changed.push("slug");
    }
    try_join(
        audit::record_user(
            &tx,
            &Entry::new("aide.update", "aide")
                .resource(id)
                .details(serde_json::json!({ "changed": changed, "slug": row.slug }))
                .ip(ip),
        ),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(id, &[before.slug.as_deref(), row.slug.as_deref()]);
    Ok(row)
}

/// Archives an aide: it leaves the default list and stops counting toward the free limit.
#[utoipa::path(post, path = "/api/aides/{id}/archive", tag = "aides",
    params(("id" = uuid::Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn archive(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(id): IdPath,
) -> Result<Json<Aide>, AppError> {
    Ok(Json(archive_aide(&state, &api, ip, id).await?.into()))
}

/// Archives aide `id` of `api`'s, with its audit row.
pub(crate) async fn archive_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    id: uuid::Uuid,
) -> Result<AideRow, AppError> {
    let tx = api.begin(&state.db).await?;
    let row = repo::set_status(&tx, id, Status::Archived)
        .await?
        .ok_or_else(AppError::not_found)?;
    try_join(
        audit::record_user(&tx, &Entry::new("aide.archive", "aide").resource(id).ip(ip)),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(id, &[row.slug.as_deref()]);
    Ok(row)
}

/// Brings an archived aide back as a draft, within the free limit.
#[utoipa::path(post, path = "/api/aides/{id}/restore", tag = "aides",
    params(("id" = uuid::Uuid, Path, description = "The aide's id")),
    responses((status = 200, body = Aide),
              (status = 401, body = crate::error::ErrorBody),
              (status = 403, description = "AIDE_LIMIT_REACHED", body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn restore(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(id): IdPath,
) -> Result<Json<Aide>, AppError> {
    Ok(Json(restore_aide(&state, &api, ip, id).await?.into()))
}

/// Brings aide `id` of `api`'s back from the archive (within the free limit), with its audit
/// row; one that is not archived is returned as it is.
pub(crate) async fn restore_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    id: uuid::Uuid,
) -> Result<AideRow, AppError> {
    let tx = api.begin(&state.db).await?;
    // One round trip: the aide, the account locked and its aides counted.
    let (current, tier, active) = try_join3(
        repo::find(&tx, id),
        repo::lock_account(&tx),
        repo::count_active(&tx),
    )
    .await?;
    let current = current.ok_or_else(AppError::not_found)?;
    if current.status != Status::Archived {
        return Ok(current);
    }
    check_aide_limit(state, tier, active)?;
    let row = repo::set_status(&tx, id, Status::Draft)
        .await?
        .ok_or_else(AppError::not_found)?;
    try_join(
        audit::record_user(&tx, &Entry::new("aide.restore", "aide").resource(id).ip(ip)),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(id, &[row.slug.as_deref()]);
    Ok(row)
}

/// Deletes an aide with its conversation and versions.
#[utoipa::path(delete, path = "/api/aides/{id}", tag = "aides",
    params(("id" = uuid::Uuid, Path, description = "The aide's id")),
    responses((status = 204, description = "Deleted"),
              (status = 401, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody)),
    security(("session_cookie" = []), ("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    api: ApiUser,
    ClientIp(ip): ClientIp,
    IdPath(id): IdPath,
) -> Result<StatusCode, AppError> {
    delete_aide(&state, &api, ip, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes aide `id` of `api`'s, with its audit row; its stored objects go after the commit.
pub(crate) async fn delete_aide(
    state: &AppState,
    api: &ApiUser,
    ip: std::net::IpAddr,
    id: uuid::Uuid,
) -> Result<(), AppError> {
    let tx = api.begin(&state.db).await?;
    if !repo::delete(&tx, id).await? {
        return Err(AppError::not_found());
    }
    // The deletion queued the aide's objects for removal (a trigger); remove them once committed.
    try_join(
        audit::record_user(&tx, &Entry::new("aide.delete", "aide").resource(id).ip(ip)),
        tx.commit_queued(),
    )
    .await?;
    state.page_changed(id, &[]);
    state.page_cache.forget(id);
    state.storage_cleanup_wake.notify_one();
    Ok(())
}

/// Refuses one more active aide for a free account at its limit, given the aides it holds that
/// are not archived (`active`), counted after locking the account row (see
/// [`repo::lock_account`]), so concurrent creates and restores are counted one after another.
fn check_aide_limit(state: &AppState, tier: Tier, active: i64) -> Result<(), AppError> {
    if tier.is_pro() {
        return Ok(());
    }
    let limit = state.config.limits.free_max_aides;
    if active >= i64::from(limit) {
        return Err(AppError::forbidden(
            "AIDE_LIMIT_REACHED",
            format!(
                "Free accounts can keep {limit} aides that are not archived. Archive or delete one, or upgrade to Pro for unlimited aides."
            ),
        ));
    }
    Ok(())
}

/// A slug someone else holds (or once published under) is a conflict, named by the constraint.
pub(crate) fn slug_conflict(e: db::Error) -> AppError {
    if e.constraint() == Some("aides_slug_key") {
        AppError::conflict(
            "SLUG_TAKEN",
            "That address is taken, or was used by another page. Choose another slug.",
        )
    } else {
        e.into()
    }
}
