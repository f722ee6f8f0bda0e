//! Re-syncing a customer: read their subscriptions from Stripe and store what they say. Webhooks,
//! the checkout return and the reconcile job all end here; none applies an event's payload.
//!
//! A re-sync takes a ticket (a database sequence) before it asks Stripe, and writes only over
//! the state of an earlier ticket. So re-syncs of one customer take effect in the order they
//! began: an older one that answers late cannot overwrite what a newer one read, and no
//! connection is held while Stripe answers. The re-sync that began after Stripe's last change
//! (the one its webhook started, at the latest) reads the final state and wins.

use futures_util::future::try_join;

use super::repo::{self, Plan, Synced};
use super::stripe::{StripeError, Subscription};
use crate::audit::{self, Entry};
use crate::db::{self, UserId};
use crate::state::AppState;
use crate::tier::Tier;

/// What started a re-sync (for the audit trail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Webhook,
    CheckoutReturn,
    Reconcile,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Webhook => "webhook",
            Cause::CheckoutReturn => "checkout_return",
            Cause::Reconcile => "reconcile",
        }
    }
}

/// The Stripe event a re-sync handles, recorded with its effect.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub id: &'a str,
    pub kind: &'a str,
}

/// How a re-sync ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Stored. `changed`: the plan or the subscription's status differs from before.
    Applied { user: UserId, changed: bool },
    /// A re-sync that began later had already written; nothing stored.
    Stale,
    /// No user has this customer.
    UnknownCustomer,
    /// The event was handled before.
    Duplicate,
}

impl Outcome {
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied { .. } => "applied",
            Outcome::Stale => "stale",
            Outcome::UnknownCustomer => "unknown_customer",
            Outcome::Duplicate => "duplicate",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Db(#[from] db::Error),
    #[error("billing is not configured")]
    NotConfigured,
}

/// Which of a customer's subscriptions decides the plan: among those for the Pro price, one that
/// grants or may still grant access before one that is over, then the newest.
pub fn current(subscriptions: &[Subscription], price: &str) -> Option<Subscription> {
    let rank = |status: &str| match status {
        "active" | "trialing" => 0,
        "past_due" => 1,
        "unpaid" | "paused" | "incomplete" => 2,
        _ => 3,
    };
    subscriptions
        .iter()
        .filter(|s| s.prices.iter().any(|p| p == price))
        .min_by_key(|s| (rank(&s.status), -s.created))
        .cloned()
}

fn synced(subscription: Option<Subscription>) -> Synced {
    match subscription {
        Some(s) => Synced {
            status: Some(s.status),
            subscription: Some(s.id),
            period_end: s.cancel_at.or(s.current_period_end),
            cancel_at_period_end: s.cancel_at_period_end || s.cancel_at.is_some(),
        },
        None => Synced {
            status: None,
            subscription: None,
            period_end: None,
            cancel_at_period_end: false,
        },
    }
}

/// Re-syncs `customer` from Stripe; with `event`, records it in the same transaction, and a
/// second delivery of it has no effect.
pub async fn resync(
    state: &AppState,
    customer: &str,
    event: Option<&Event<'_>>,
    cause: Cause,
) -> Result<Outcome, SyncError> {
    let (Some(stripe), Some(config)) = (state.stripe.as_ref(), state.config.billing.as_ref())
    else {
        return Err(SyncError::NotConfigured);
    };
    let tx = state.db.system().await?;
    let (ticket, found, seen) = futures_util::future::try_join3(
        repo::next_ticket(&tx),
        repo::customer(&tx, customer),
        async {
            match event {
                Some(e) => repo::event_seen(&tx, e.id).await,
                None => Ok(false),
            }
        },
    )
    .await?;
    tx.commit().await?;
    if seen {
        return Ok(Outcome::Duplicate);
    }
    let Some(found) = found else {
        if let Some(e) = event {
            let tx = state.db.system().await?;
            let (first, ()) = try_join(
                repo::record_event(&tx, e.id, e.kind, "unknown_customer"),
                tx.commit_queued(),
            )
            .await?;
            if !first {
                return Ok(Outcome::Duplicate);
            }
        }
        return Ok(Outcome::UnknownCustomer);
    };

    let subscriptions = stripe.list_subscriptions(customer).await?;
    let now = synced(current(&subscriptions, &config.price_id));

    let tx = state.db.system().await?;
    let (before, after) = try_join(
        repo::plan_locked(&tx, found.user),
        repo::apply(&tx, found.user, &now, ticket, config.past_due_grace),
    )
    .await?;
    let outcome = match (&before, &after) {
        (Some(before), Some(after)) => Outcome::Applied {
            user: found.user,
            changed: before.tier != after.tier || before.status != after.status,
        },
        _ => Outcome::Stale,
    };
    if let Some(e) = event {
        let recorded = match outcome {
            Outcome::Applied { .. } => "applied",
            _ => "stale",
        };
        if !repo::record_event(&tx, e.id, e.kind, recorded).await? {
            // Delivered twice at once: the other delivery took effect.
            tx.rollback();
            return Ok(Outcome::Duplicate);
        }
    }
    if let (Some(before), Some(after)) = (&before, &after)
        && before.tier != after.tier
    {
        audit::record_system(
            &tx,
            &Entry::new("billing.plan_changed", "user")
                .user(found.user)
                .resource(found.user.0)
                .details(serde_json::json!({
                    "from": before.tier.as_str(), "to": after.tier.as_str(),
                    "status": after.status, "cause": cause.as_str(),
                })),
        )
        .await?;
    }
    // The email belongs to the event, whichever re-sync's state wins (a newer one's, when this
    // one is stale: the row as locked).
    let failed_payment = event.is_some_and(|e| e.kind == "invoice.payment_failed");
    let plan_now = after.as_ref().or(before.as_ref());
    if let (true, Some(plan)) = (failed_payment, plan_now) {
        let email = super::message::payment_failed(state, &found.email, plan, config);
        crate::email::outbox::enqueue(&tx, &email).await?;
    }
    tx.commit().await?;
    if failed_payment && plan_now.is_some() {
        state.outbox_wake.notify_one();
    }
    if let (Some(before), Some(after)) = (&before, &after)
        && before.tier != after.tier
    {
        plan_changed(state, found.user, before, after);
    }
    Ok(outcome)
}

/// After a plan change commits: public pages lose or regain the footer at once here (other
/// processes hear of it through the tier trigger's notification).
pub fn plan_changed(state: &AppState, user: UserId, before: &Plan, after: &Plan) {
    state.live_pages.evict("*");
    tracing::info!(
        user_id = %user,
        from = before.tier.as_str(),
        to = after.tier.as_str(),
        status = after.status.as_deref().unwrap_or("none"),
        "plan changed"
    );
}

/// Moves past-due subscriptions whose grace has run out to the free plan; how many.
pub async fn expire_grace(state: &AppState) -> Result<usize, db::Error> {
    let Some(config) = state.config.billing.as_ref() else {
        return Ok(0);
    };
    let tx = state.db.system().await?;
    let expired = repo::expire_grace(&tx, config.past_due_grace).await?;
    for user in &expired {
        audit::record_system(
            &tx,
            &Entry::new("billing.plan_changed", "user")
                .user(UserId(*user))
                .resource(*user)
                .details(serde_json::json!({
                    "from": Tier::Pro.as_str(), "to": Tier::Free.as_str(),
                    "status": "past_due", "cause": "grace_ended",
                })),
        )
        .await?;
    }
    tx.commit().await?;
    if !expired.is_empty() {
        state.live_pages.evict("*");
        tracing::info!(
            users = expired.len(),
            "past-due grace ended: moved to the free plan"
        );
    }
    Ok(expired.len())
}

/// What one reconcile pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Customers re-read from Stripe.
    pub checked: usize,
    /// Of those, how many had a plan or status that differed from Stripe's (a webhook was lost or
    /// not yet delivered).
    pub corrected: usize,
    /// Re-syncs that failed (tried again next pass).
    pub failed: usize,
}

/// Re-syncs up to `limit` customers whose subscription is not over and that nothing has read
/// from Stripe for `not_read_for`, one after another, a little apart (Stripe's rate limits).
pub async fn reconcile(
    state: &AppState,
    limit: i64,
    not_read_for: std::time::Duration,
) -> Result<Reconciled, db::Error> {
    let tx = state.db.system().await?;
    let customers = repo::reconcile_batch(&tx, limit, not_read_for).await?;
    tx.rollback();
    let mut done = Reconciled::default();
    for customer in customers {
        match resync(state, &customer, None, Cause::Reconcile).await {
            Ok(Outcome::Applied { changed, .. }) => {
                done.checked += 1;
                done.corrected += usize::from(changed);
            }
            Ok(_) => done.checked += 1,
            Err(e) => {
                done.failed += 1;
                tracing::warn!(error = %e, "reconcile: a re-sync failed; next pass tries again");
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(id: &str, status: &str, created: i64, price: &str) -> Subscription {
        Subscription {
            id: id.into(),
            status: status.into(),
            created,
            cancel_at_period_end: false,
            cancel_at: None,
            prices: vec![price.into()],
            current_period_end: None,
        }
    }

    #[test]
    fn the_subscription_that_decides_is_the_live_one_for_our_price() {
        let all = vec![
            sub("sub_old", "canceled", 1, "price_pro"),
            sub("sub_live", "active", 2, "price_pro"),
            sub("sub_other", "active", 3, "price_other"),
            sub("sub_new_canceled", "canceled", 4, "price_pro"),
        ];
        assert_eq!(
            current(&all, "price_pro").map(|s| s.id),
            Some("sub_live".into())
        );
        assert_eq!(
            current(&all[..1], "price_pro").map(|s| s.id),
            Some("sub_old".into())
        );
        assert_eq!(current(&all[2..3], "price_pro"), None);
        let both_over = vec![
            sub("a", "canceled", 1, "price_pro"),
            sub("b", "incomplete_expired", 5, "price_pro"),
        ];
        assert_eq!(
            current(&both_over, "price_pro").map(|s| s.id),
            Some("b".into())
        );
    }

    #[test]
    fn a_cancellation_for_a_date_reads_as_ending_then() {
        let mut s = sub("s", "active", 1, "p");
        s.current_period_end = chrono::DateTime::from_timestamp(2_000, 0);
        s.cancel_at = chrono::DateTime::from_timestamp(1_500, 0);
        let now = synced(Some(s));
        assert!(now.cancel_at_period_end);
        assert_eq!(now.period_end.map(|t| t.timestamp()), Some(1_500));
        assert_eq!(synced(None).status, None);
    }
}
