//! The AI turn: a person's message changes their page, streamed as it happens, metered exactly,
//! never half-applied.
//!
//! - [`routes`]: starting a turn (one transaction: the week's turn, the user's message, the turn's
//!   row), its event stream, its state, the list, and stopping it.
//! - [`runner`]: the turn after its start, in a task of its own: the page read, the model's
//!   rounds ([`engine`]), then one final transaction, or the turn given back.
//! - [`workspace`]: the working copy and the tools that edit it; [`preview`]: a call's input read
//!   while it streams; [`prompt`]: what the model is told; [`hub`]: the turns this process runs.

pub mod engine;
pub mod hub;
pub mod preview;
pub mod prompt;
pub mod repo;
mod routes;
mod runner;
mod terminal;
pub mod workspace;

pub use routes::router;

/// Fails and gives back turns that a dead process left running; returns how many.
pub async fn expire_abandoned(db: &crate::db::Db) -> Result<(i64, i64), crate::db::Error> {
    let tx = db.system().await?;
    let counts = repo::expire(&tx).await?;
    tx.commit().await?;
    Ok(counts)
}
