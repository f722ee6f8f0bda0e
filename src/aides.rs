//! Aides: a person's living pages. Models at three boundaries (requests that validate, rows,
//! responses without internal fields), the repository, and the routes.

pub mod model;
pub(crate) mod repo;
pub(crate) mod routes;

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

/// Runs `query`, a read about the caller's aide `aide`, in the same round trip as the check that
/// the aide is theirs: 404 when it is not (an empty list alone cannot tell).
pub(crate) async fn of_owned_aide<T>(
    tx: &crate::db::UserTx,
    aide: uuid::Uuid,
    query: impl std::future::Future<Output = Result<T, crate::db::Error>>,
) -> Result<T, crate::error::AppError> {
    let (exists, answer) = futures_util::future::try_join(repo::exists(tx, aide), query).await?;
    if exists {
        Ok(answer)
    } else {
        Err(crate::error::AppError::not_found())
    }
}
