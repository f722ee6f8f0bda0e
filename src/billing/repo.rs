//! Every query billing makes. System scope, but for the signed-in user's own view.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{self, SystemTx, UserId, UserTx};
use crate::tier::Tier;

/// A user, as a customer's re-sync finds them.
#[derive(Debug, Clone)]
pub struct Customer {
    pub user: UserId,
    pub email: String,
}

impl db::FromRow for Customer {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Customer {
            user: UserId(row.try_get("id")?),
            email: row.try_get("email")?,
        })
    }
}

/// The plan and subscription state of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub tier: Tier,
    pub status: Option<String>,
    pub period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
    pub past_due_since: Option<DateTime<Utc>>,
}

impl db::FromRow for Plan {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Plan {
            tier: row.try_get("tier")?,
            status: row.try_get("billing_status")?,
            period_end: row.try_get("billing_period_end")?,
            cancel_at_period_end: row.try_get("billing_cancel_at_period_end")?,
            past_due_since: row.try_get("billing_past_due_since")?,
        })
    }
}

/// What checkout needs to know of the user.
#[derive(Debug, Clone)]
pub struct Account {
    pub email: String,
    pub tier: Tier,
    pub customer: Option<String>,
}

impl db::FromRow for Account {
    fn from_row(row: &db::Row) -> Result<Self, db::Error> {
        Ok(Account {
            email: row.try_get("email")?,
            tier: row.try_get("tier")?,
            customer: row.try_get("stripe_customer_id")?,
        })
    }
}

/// The subscription state a re-sync read from Stripe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub status: Option<String>,
    pub subscription: Option<String>,
    pub period_end: Option<DateTime<Utc>>,
    pub cancel_at_period_end: bool,
}

crate::statement! {
    NEXT_TICKET: System = "select nextval('billing_sync_tickets')";
    CUSTOMER: System = "select id, email from users where stripe_customer_id = $1";
    EVENT_SEEN: System = "select exists (select 1 from stripe_events where id = $1)";
    /// The plan before a re-sync writes, the row locked until commit.
    PLAN_LOCKED: System = "select tier, billing_status, billing_period_end,
            billing_cancel_at_period_end, billing_past_due_since
         from users where id = $1 for update";
    /// Writes what a re-sync read, unless a re-sync with a later ticket wrote first; the plan
    /// follows from it: active or trialing is Pro, past_due is Pro for `$7` seconds from when it
    /// began, anything else is free.
    APPLY: System = "update users set
            billing_past_due_since = case when $2::text = 'past_due'
                then coalesce(billing_past_due_since, now()) end,
            tier = case
                when $2::text in ('active', 'trialing') then 'pro'
                when $2::text = 'past_due'
                     and coalesce(billing_past_due_since, now()) > now() - make_interval(secs => $7::float8)
                    then 'pro'
                else 'free' end,
            billing_status = $2, stripe_sub_id = $3, billing_period_end = $4,
            billing_cancel_at_period_end = $5, billing_synced_at = now(), billing_sync_ticket = $6
         where id = $1 and billing_sync_ticket < $6
         returning tier, billing_status, billing_period_end, billing_cancel_at_period_end,
            billing_past_due_since";
    RECORD_EVENT: System = "insert into stripe_events (id, type, outcome) values ($1, $2, $3)
         on conflict (id) do nothing returning id";
    ACCOUNT: System = "select email, tier, stripe_customer_id from users where id = $1";
    SET_CUSTOMER: System = "update users set stripe_customer_id = $2
         where id = $1 and stripe_customer_id is null";
    /// Past-due subscriptions whose grace (`$1` seconds) has run out lose Pro.
    EXPIRE_GRACE: System = "update users set tier = 'free'
         where tier = 'pro' and billing_status = 'past_due'
           and billing_past_due_since <= now() - make_interval(secs => $1::float8)
         returning id";
    /// Customers whose subscription is not over and that no re-sync has read for `$2` seconds.
    RECONCILE_BATCH: System = "select stripe_customer_id from users
         where stripe_customer_id is not null
           and (billing_status is null or billing_status not in ('canceled', 'incomplete_expired'))
           and (billing_synced_at is null
                or billing_synced_at < now() - make_interval(secs => $2::float8))
         order by billing_synced_at nulls first
         limit $1";
    DELETE_OLD_EVENTS: System = "delete from stripe_events where received_at < now() - interval '30 days'";
    /// Whether the signed-in user has a Stripe customer (user scope).
    OWN_CUSTOMER: User = "select stripe_customer_id is not null from users where id = $1";
    /// The signed-in user's own plan (user scope).
    OWN_PLAN: User = "select tier, billing_status, billing_period_end,
            billing_cancel_at_period_end, billing_past_due_since
         from users where id = $1";
}

pub async fn next_ticket(tx: &SystemTx) -> Result<i64, db::Error> {
    tx.value(&NEXT_TICKET, &[]).await
}

pub async fn customer(tx: &SystemTx, customer: &str) -> Result<Option<Customer>, db::Error> {
    tx.row_opt(&CUSTOMER, &[&customer]).await
}

pub async fn event_seen(tx: &SystemTx, event: &str) -> Result<bool, db::Error> {
    tx.value(&EVENT_SEEN, &[&event]).await
}

pub async fn plan_locked(tx: &SystemTx, user: UserId) -> Result<Option<Plan>, db::Error> {
    tx.row_opt(&PLAN_LOCKED, &[&user.0]).await
}

/// Writes `synced` for `user` under `ticket`; None when a later re-sync wrote first.
pub async fn apply(
    tx: &SystemTx,
    user: UserId,
    synced: &Synced,
    ticket: i64,
    grace: Duration,
) -> Result<Option<Plan>, db::Error> {
    tx.row_opt(
        &APPLY,
        &[
            &user.0,
            &synced.status,
            &synced.subscription,
            &synced.period_end,
            &synced.cancel_at_period_end,
            &ticket,
            &grace.as_secs_f64(),
        ],
    )
    .await
}

/// Records an event handled; false when it was already (a second delivery, handled meanwhile).
pub async fn record_event(
    tx: &SystemTx,
    id: &str,
    kind: &str,
    outcome: &str,
) -> Result<bool, db::Error> {
    let kind: String = kind.chars().take(100).collect();
    Ok(tx
        .value_opt::<String>(&RECORD_EVENT, &[&id, &kind, &outcome])
        .await?
        .is_some())
}

pub async fn account(tx: &SystemTx, user: UserId) -> Result<Option<Account>, db::Error> {
    tx.row_opt(&ACCOUNT, &[&user.0]).await
}

/// Stores the user's customer unless one is stored already; whether it was stored.
pub async fn set_customer(tx: &SystemTx, user: UserId, customer: &str) -> Result<bool, db::Error> {
    Ok(tx.execute(&SET_CUSTOMER, &[&user.0, &customer]).await? == 1)
}

pub async fn expire_grace(tx: &SystemTx, grace: Duration) -> Result<Vec<Uuid>, db::Error> {
    tx.values(&EXPIRE_GRACE, &[&grace.as_secs_f64()]).await
}

pub async fn reconcile_batch(
    tx: &SystemTx,
    limit: i64,
    not_read_for: Duration,
) -> Result<Vec<String>, db::Error> {
    tx.values(&RECONCILE_BATCH, &[&limit, &not_read_for.as_secs_f64()])
        .await
}

pub async fn delete_old_events(tx: &SystemTx) -> Result<u64, db::Error> {
    tx.execute(&DELETE_OLD_EVENTS, &[]).await
}

pub async fn own_plan(tx: &UserTx) -> Result<Option<Plan>, db::Error> {
    tx.row_opt(&OWN_PLAN, &[&tx.user_id().0]).await
}

pub async fn own_customer(tx: &UserTx) -> Result<bool, db::Error> {
    Ok(tx
        .value_opt(&OWN_CUSTOMER, &[&tx.user_id().0])
        .await?
        .unwrap_or(false))
}
