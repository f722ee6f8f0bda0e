//! Deleting an account, in three steps.
//!
//! 1. **Asking**: the signed-in person types their email address; a six-digit code goes to it
//!    (a session alone, perhaps left open on a shared computer, is not enough).
//! 2. **Confirming** with the code: every session ends, every public page stops being served at
//!    once (the public lookup skips accounts being deleted, and every server forgets its cached
//!    pages), a Pro subscription is cancelled so nothing more is charged, and the grace period
//!    (ACCOUNT_DELETION_GRACE_DAYS, 14) starts. Signing in meanwhile offers to cancel the deletion,
//!    which brings the pages back.
//! 3. **Purging**, after the grace, by a background job that can stop anywhere and run again:
//!    every stored object of the account (both buckets, and its exports) is deleted and the
//!    prefixes listed to be sure none remain; the Stripe customer is deleted; then, in one
//!    transaction, the audit rows lose the account's id, address and self-references, outbox
//!    emails, sign-in links and rate-limit keys that hold the address go, and the user row is
//!    deleted, taking everything it owns with it.

use chrono::{DateTime, Utc};
use futures_util::TryStreamExt;
use object_store::ObjectStore;
use uuid::Uuid;

use crate::audit::{self, Entry};
use crate::db::{self, SystemTx, UserId};
use crate::email::NewEmail;
use crate::state::AppState;
use crate::storage::keys;

/// How long a deletion code works.
pub const CODE_MINUTES: i64 = 15;
/// Wrong codes after which a code is dead.
pub const MAX_ATTEMPTS: i32 = 5;

crate::statement! {
    ACCOUNT: System = "select email, deletion_requested_at, purge_after from users where id = $1";
    SAVE_CODE: System = "insert into account_deletion_codes (user_id, code_hash, expires_at)
         values ($1, $2, now() + make_interval(mins => $3))
         on conflict (user_id) do update set code_hash = excluded.code_hash, attempts = 0,
             expires_at = excluded.expires_at, created_at = now()
         returning expires_at";
    CODE: System = "select code_hash, attempts, expires_at > now() from account_deletion_codes
         where user_id = $1 for update";
    WRONG_CODE: System = "update account_deletion_codes set attempts = attempts + 1 where user_id = $1";
    DROP_CODE: System = "delete from account_deletion_codes where user_id = $1";
    MARK_DELETING: System = "update users
         set deletion_requested_at = now(), purge_after = now() + make_interval(days => $2)
         where id = $1 and deletion_requested_at is null
         returning purge_after";
    CANCEL: System = "update users set deletion_requested_at = null, purge_after = null
         where id = $1 and deletion_requested_at is not null and purge_after > now()
         returning id";
    /// Subscriptions of accounts being deleted that may still charge.
    SUBSCRIPTIONS_TO_CANCEL: System = "select stripe_sub_id from users
         where deletion_requested_at is not null and stripe_sub_id is not null
           and coalesce(billing_status, 'active') not in ('canceled', 'incomplete_expired')
         limit 50";
    MARK_SUBSCRIPTION_CANCELED: System = "update users set billing_status = 'canceled'
         where stripe_sub_id = $1 and deletion_requested_at is not null";
    DUE: System = "select id from users where purge_after <= now() order by purge_after limit 20";
    TARGET: System = "select email, stripe_customer_id from users where id = $1 and purge_after <= now()";
    AIDE_IDS: System = "select id from aides where user_id = $1";
    ANONYMISE_AUDIT: System = "select anonymise_audit($1)";
    DELETE_EMAILS: System = "delete from email_outbox where to_address = $1";
    DELETE_LINKS: System = "delete from magic_links where email = $1";
    DELETE_KEYS: System = "delete from rate_limits
         where strpos(key, $1) > 0 or strpos(key, $2) > 0";
    DELETE_USER: System = "delete from users where id = $1 and purge_after <= now()";
}

/// The account's address and deletion state.
pub async fn account(
    tx: &SystemTx,
    user: UserId,
) -> Result<Option<(String, Option<DateTime<Utc>>, Option<DateTime<Utc>>)>, db::Error> {
    tx.row_opt(&ACCOUNT, &[&user]).await
}

/// Stores a new code for `user` (replacing any other); returns its expiry.
pub async fn save_code(
    tx: &SystemTx,
    user: UserId,
    code: &str,
) -> Result<DateTime<Utc>, db::Error> {
    let hash = crate::auth::tokens::hash_code(user.0, code);
    tx.value(&SAVE_CODE, &[&user, &hash, &(CODE_MINUTES as i32)])
        .await
}

/// Why a code was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRefused {
    /// None was sent, it expired, or too many wrong ones were tried.
    Dead,
    Wrong,
}

/// Checks `code` and, when right, uses it up. A wrong one counts against the code.
pub async fn use_code(
    tx: &SystemTx,
    user: UserId,
    code: &str,
) -> Result<Result<(), CodeRefused>, db::Error> {
    let Some((hash, attempts, live)) = tx.row_opt::<(Vec<u8>, i32, bool)>(&CODE, &[&user]).await?
    else {
        return Ok(Err(CodeRefused::Dead));
    };
    if !live || attempts >= MAX_ATTEMPTS {
        return Ok(Err(CodeRefused::Dead));
    }
    let given = crate::auth::tokens::hash_code(user.0, code);
    if !constant_time_eq(&given, &hash) {
        tx.execute(&WRONG_CODE, &[&user]).await?;
        return Ok(Err(CodeRefused::Wrong));
    }
    tx.execute(&DROP_CODE, &[&user]).await?;
    Ok(Ok(()))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Starts the grace period; None when a deletion is already under way.
pub async fn mark_deleting(
    tx: &SystemTx,
    user: UserId,
    grace_days: u32,
) -> Result<Option<DateTime<Utc>>, db::Error> {
    tx.value_opt(
        &MARK_DELETING,
        &[&user, &i32::try_from(grace_days).unwrap_or(14)],
    )
    .await
}

/// Stops a deletion within its grace; false when none is under way.
pub async fn cancel(tx: &SystemTx, user: UserId) -> Result<bool, db::Error> {
    Ok(tx.value_opt::<Uuid>(&CANCEL, &[&user]).await?.is_some())
}

/// The email carrying the code.
pub fn code_email(state: &AppState, to: &str, code: &str) -> NewEmail {
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let grace = state.config.limits.account_deletion_grace_days;
    let text = format!(
        "Someone signed in to your AIde account asked to delete it.\n\n\
         To confirm, enter this code where you asked: {spaced}\n\
         It works for {CODE_MINUTES} minutes.\n\n\
         After you confirm, your pages stop being served at once and everything is erased after {grace} days; \
         signing in before then can cancel it.\n\n\
         If this was not you, do not enter the code: nothing happens without it. Sign in and end your \
         other sessions from your account page.\n"
    );
    let html = format!(
        "<!doctype html><html><body style=\"font-family:system-ui,sans-serif;line-height:1.5\">\
         <h1 style=\"font-size:20px\">Confirm deleting your AIde account</h1>\
         <p>Someone signed in to your AIde account asked to delete it. To confirm, enter this code where you asked:</p>\
         <p style=\"font-size:24px;letter-spacing:4px\"><strong>{spaced}</strong></p>\
         <p>It works for {CODE_MINUTES} minutes. After you confirm, your pages stop being served at once and everything is erased after {grace} days; signing in before then can cancel it.</p>\
         <p style=\"color:#666\">If this was not you, do not enter the code: nothing happens without it.</p>\
         </body></html>"
    );
    NewEmail {
        kind: "account_deletion_code",
        to: to.to_string(),
        subject: "Confirm deleting your AIde account".to_string(),
        html,
        text,
        deliver_before: Some(Utc::now() + chrono::Duration::minutes(CODE_MINUTES)),
    }
}

/// Cancels, at Stripe, the subscriptions of accounts being deleted that could still charge.
/// Returns how many were cancelled.
pub async fn cancel_subscriptions(state: &AppState) -> anyhow::Result<usize> {
    let Some(stripe) = &state.stripe else {
        return Ok(0);
    };
    let tx = state.db.system().await?;
    let subscriptions: Vec<String> = tx.values(&SUBSCRIPTIONS_TO_CANCEL, &[]).await?;
    tx.rollback();
    // One that fails does not hold up the others; the first failure is returned at the end.
    let mut cancelled = 0;
    let mut first_failure = None;
    for sub in subscriptions {
        let done = async {
            stripe
                .cancel_subscription(&sub)
                .await
                .map_err(|e| anyhow::anyhow!("could not cancel a subscription: {e}"))?;
            let tx = state.db.system().await?;
            tx.execute(&MARK_SUBSCRIPTION_CANCELED, &[&sub]).await?;
            tx.commit().await?;
            Ok::<(), anyhow::Error>(())
        }
        .await;
        match done {
            Ok(()) => cancelled += 1,
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(cancelled),
    }
}

/// Deletes everything under `prefix` in `store`, then lists it to be sure nothing remains.
async fn empty_prefix(store: &dyn ObjectStore, prefix: &str) -> anyhow::Result<()> {
    let prefix = object_store::path::Path::from(prefix);
    let found: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    for object in &found {
        match store.delete(&object.location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let left: Vec<object_store::ObjectMeta> = store.list(Some(&prefix)).try_collect().await?;
    if !left.is_empty() {
        anyhow::bail!("{} objects remain under {prefix}", left.len());
    }
    Ok(())
}

/// Purges `user` if their grace is over: storage, then Stripe, then the database. Each step can be
/// run again; a failure leaves the rest for the next run. True when the account is gone.
pub async fn purge_one(state: &AppState, user: UserId) -> anyhow::Result<bool> {
    let tx = state.db.system().await?;
    let target: Option<(String, Option<String>)> = tx.row_opt(&TARGET, &[&user]).await?;
    let aides: Vec<Uuid> = tx.values(&AIDE_IDS, &[&user]).await?;
    tx.rollback();
    let Some((email, customer)) = target else {
        return Ok(false);
    };
    for aide in &aides {
        let prefix = keys::aide_prefix(*aide);
        empty_prefix(state.storage.workspace.as_ref(), &prefix).await?;
        empty_prefix(state.storage.published.as_ref(), &prefix).await?;
    }
    empty_prefix(
        state.storage.workspace.as_ref(),
        &keys::exports_prefix(user.0),
    )
    .await?;
    if let Some(customer) = &customer {
        match &state.stripe {
            Some(stripe) => stripe
                .delete_customer(customer)
                .await
                .map_err(|e| anyhow::anyhow!("could not delete the Stripe customer: {e}"))?,
            None => tracing::warn!(
                user.id = %user.0,
                "purging an account with a Stripe customer while billing is not configured: delete the customer in Stripe's dashboard"
            ),
        }
    }
    let mailbox = crate::auth::EmailAddress::parse(&email)
        .map(|e| e.mailbox_digest())
        .unwrap_or_else(|_| email.clone());
    let tx = state.db.system().await?;
    let anonymised: i64 = tx.value(&ANONYMISE_AUDIT, &[&user]).await?;
    tx.execute(&DELETE_EMAILS, &[&email]).await?;
    tx.execute(&DELETE_LINKS, &[&email]).await?;
    tx.execute(&DELETE_KEYS, &[&mailbox, &user.0.to_string()])
        .await?;
    let deleted = tx.execute(&DELETE_USER, &[&user]).await?;
    audit::record_system(
        &tx,
        &Entry::new("account.purged", "account").details(serde_json::json!({
            "aides": aides.len(),
            "audit_rows_anonymised": anonymised,
        })),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(
        aides = aides.len(),
        audit_rows_anonymised = anonymised,
        "account purged"
    );
    Ok(deleted == 1)
}

/// One pass of the purge job: cancels subscriptions that could still charge, then purges every
/// account whose grace is over. Returns how many accounts were purged.
pub async fn purge_due(state: &AppState) -> anyhow::Result<usize> {
    if let Err(e) = cancel_subscriptions(state).await {
        tracing::warn!(error = %e, "could not cancel a deleted account's subscription; will try again");
        crate::sentry::job_failed("deletion_cancel_subscription", &e);
    }
    let tx = state.db.system().await?;
    let due: Vec<Uuid> = tx.values(&DUE, &[]).await?;
    tx.rollback();
    // An account whose purge fails (Stripe down, say) does not hold up the others; the first
    // failure is returned once every account has had its turn.
    let mut purged = 0;
    let mut first_failure = None;
    for user in due {
        match purge_one(state, UserId(user)).await {
            Ok(true) => purged += 1,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(user.id = %user, error = %e, "an account's purge failed; will try again");
                first_failure.get_or_insert(e);
            }
        }
    }
    match first_failure {
        Some(e) => Err(e),
        None => Ok(purged),
    }
}
