//! The one listening connection of a process: notifications every server process sends through
//! the database, dispatched here. `aide_pages` (a public page may have changed: forget what is
//! known of it) and `aide_turns` (stop this turn, if it runs here).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::db::Db;
use crate::public::LiveCache;
use crate::turns::hub::TurnHub;

/// Stop a running turn; the payload is its id.
pub const TURNS: &str = "aide_turns";

/// Listens until `shutdown` turns true, reconnecting after failures. While the connection is
/// down, [`LiveCache`] answers nothing from memory (a change may be missed).
pub async fn listen(
    pages: Arc<LiveCache>,
    turns: Arc<TurnHub>,
    db: Db,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match db.listener().await {
            Ok(mut listener) => {
                let subscribed = async {
                    listener.listen(crate::public::PAGES_CHANNEL).await?;
                    listener.listen(TURNS).await
                }
                .await;
                match subscribed {
                    Ok(()) => {
                        pages.set_listening(true);
                        loop {
                            tokio::select! {
                                received = listener.recv() => match received {
                                    Some((channel, payload)) if channel == TURNS => {
                                        if let Ok(turn) = uuid::Uuid::parse_str(&payload) {
                                            turns.cancel(turn);
                                        }
                                    }
                                    Some((_, slug)) => pages.evict(&slug),
                                    // The connection was lost: notifications may have been missed.
                                    None => break,
                                },
                                _ = shutdown.changed() => {}
                            }
                            if *shutdown.borrow() {
                                break;
                            }
                        }
                        pages.set_listening(false);
                    }
                    Err(e) => tracing::warn!(error = %e, "notifications: could not listen"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "notifications: could not connect to listen"),
        }
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
