//! Background work besides email: removing what can no longer be used.

use std::time::Duration;

use tokio::sync::watch;

use crate::db::{self, Db};

/// How often the cleanup runs.
pub const CLEANUP_EVERY: Duration = Duration::from_secs(600);

/// One cleanup pass: dead links and sessions, idle rate-limit keys, old finished emails, uploads
/// abandoned part-way.
pub async fn cleanup(db: &Db) -> Result<(), db::Error> {
    let (links, sessions) = crate::auth::delete_stale(db).await?;
    let tx = db.system().await?;
    // Independent deletes: one round trip, commit included.
    let ((rate_keys, emails, pending), (events, ())) = futures_util::future::try_join(
        futures_util::future::try_join3(
            crate::limits::delete_idle(&tx),
            crate::email::outbox::delete_finished(&tx),
            crate::storage::release_abandoned(&tx),
        ),
        futures_util::future::try_join(
            crate::billing::repo::delete_old_events(&tx),
            tx.commit_queued(),
        ),
    )
    .await?;
    tracing::info!(
        deleted.magic_links = links,
        deleted.sessions = sessions,
        deleted.rate_limit_keys = rate_keys,
        deleted.emails = emails,
        deleted.pending_blobs = pending,
        deleted.stripe_events = events,
        "cleanup done"
    );
    Ok(())
}

/// Runs [`cleanup`] now and every [`CLEANUP_EVERY`] until `shutdown` turns true, closing the
/// pool's idle connections each round.
pub async fn run_cleanup(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        db.close_idle();
        if let Err(e) = cleanup(&db).await {
            tracing::warn!(error = %e, "cleanup failed; will try again");
            crate::sentry::job_failed("cleanup", &e);
        }
        tokio::select! {
            () = tokio::time::sleep(CLEANUP_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// How often turns left running by a dead process are looked for.
pub const TURN_JANITOR_EVERY: Duration = Duration::from_secs(30);

/// Fails and gives back turns left running past their deadline (the process running them died),
/// now and every [`TURN_JANITOR_EVERY`], until `shutdown` turns true. Frees their aides for new
/// turns.
pub async fn run_turn_janitor(db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        match crate::turns::expire_abandoned(&db).await {
            Ok((0, _)) => {}
            Ok((failed, refunded)) => {
                tracing::warn!(
                    turns.failed = failed,
                    turns.refunded = refunded,
                    "abandoned turns failed and given back"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "turn janitor failed; will try again");
                crate::sentry::job_failed("turn_janitor", &e);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(TURN_JANITOR_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// How often past-due grace periods are checked.
pub const BILLING_EVERY: Duration = Duration::from_secs(60);
/// How often one server of the deployment reconciles subscriptions with Stripe, and how long a
/// customer goes without being read before a reconcile reads it again.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(15 * 60);
pub const RECONCILE_STALE_AFTER: Duration = Duration::from_secs(3600);
/// Customers one reconcile pass reads at most.
pub const RECONCILE_BATCH: i64 = 500;

/// With billing configured, every [`BILLING_EVERY`]: moves past-due accounts whose grace ended
/// to the free plan; and every [`RECONCILE_EVERY`], on one server of the deployment (the one that
/// takes the shared rate-limit token), re-reads from Stripe the subscriptions not read for an
/// hour, so a lost webhook cannot leave anyone on the wrong plan for long.
pub async fn run_billing(state: crate::state::AppState, mut shutdown: watch::Receiver<bool>) {
    if state.config.billing.is_none() {
        return;
    }
    loop {
        if let Err(e) = crate::billing::sync::expire_grace(&state).await {
            tracing::warn!(error = %e, "billing: grace check failed; will try again");
            crate::sentry::job_failed("billing_grace", &e);
        }
        match reconcile_due(&state.db).await {
            Ok(true) => match crate::billing::sync::reconcile(
                &state,
                RECONCILE_BATCH,
                RECONCILE_STALE_AFTER,
            )
            .await
            {
                Ok(done) => tracing::info!(
                    checked = done.checked,
                    corrected = done.corrected,
                    failed = done.failed,
                    "billing reconciled with Stripe"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "billing: reconcile failed; will try again");
                    crate::sentry::job_failed("billing_reconcile", &e);
                }
            },
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "billing: could not tell whether to reconcile"),
        }
        tokio::select! {
            () = tokio::time::sleep(BILLING_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

/// Whether this server runs the reconcile now: one token every [`RECONCILE_EVERY`] for the
/// whole deployment, in the database.
async fn reconcile_due(db: &Db) -> Result<bool, db::Error> {
    let tx = db.system().await?;
    // Not joined with the commit: a refusal reads the wait in a second statement.
    let verdict = crate::limits::hit(
        &tx,
        "job:billing_reconcile",
        crate::limits::Rate {
            limit: 1,
            period: RECONCILE_EVERY,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(verdict.is_ok())
}

/// How often expired exports are removed and accounts past their grace are purged.
pub const ACCOUNT_UPKEEP_EVERY: Duration = Duration::from_secs(600);

/// Now and every [`ACCOUNT_UPKEEP_EVERY`], until `shutdown` turns true: removes expired export
/// archives, fails exports left running by a process that stopped, cancels the subscriptions of
/// accounts being deleted, and purges the accounts whose grace is over.
pub async fn run_account_upkeep(
    state: crate::state::AppState,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match crate::account::export::upkeep(&state.db, &state.storage).await {
            Ok((0, 0)) => {}
            Ok((expired, abandoned)) => tracing::info!(
                exports.expired = expired,
                exports.abandoned = abandoned,
                "export upkeep done"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "export upkeep failed; will try again");
                crate::sentry::job_failed("export_upkeep", &e);
            }
        }
        match crate::account::deletion::purge_due(&state).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(accounts.purged = purged, "accounts purged"),
            Err(e) => {
                tracing::warn!(error = %e, "account purge failed; will try again");
                crate::sentry::job_failed("account_purge", &e);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(ACCOUNT_UPKEEP_EVERY) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
    }
}
