//! Aides: a person's living pages. Models at three boundaries (requests that validate, rows,
//! responses without internal fields), the repository, and the routes.

pub mod model;
pub(crate) mod repo;
mod routes;

pub use routes::router;
pub(crate) use routes::slug_conflict;

/// The slug of the caller's aide `id` (None inside when it has none yet); None when the aide is
/// not theirs.
pub(crate) async fn find_slug(
    tx: &crate::db::UserTx,
    id: uuid::Uuid,
) -> Result<Option<Option<String>>, crate::db::Error> {
    Ok(repo::find(tx, id).await?.map(|row| row.slug))
}
