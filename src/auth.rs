//! Passwordless sign-in: magic links (with a one-time code for other devices), revocable JWT
//! sessions, and the rate limits that guard them.

mod email_address;
pub mod jwt;
mod message;
mod pages;
pub(crate) mod repo;
pub(crate) mod routes;
pub mod session;
pub mod tokens;

pub use email_address::EmailAddress;
pub use routes::router;
pub use session::{
    ApiUser, CurrentUser, SessionKey, SessionUser, bearer_token, carries_credentials, cookie_value,
    session_cookie,
};

/// Removes links and sessions that can no longer be used. Run by the background jobs.
pub async fn delete_stale(db: &crate::db::Db) -> Result<(u64, u64), crate::db::Error> {
    let tx = db.system().await?;
    let (counts, ()) =
        futures_util::future::try_join(repo::delete_stale(&tx), tx.commit_queued()).await?;
    Ok(counts)
}
