-- Billing: each user's subscription as last read from Stripe, and the Stripe events already
-- handled. The plan (`users.tier`) is derived from the synced state only, by the server's
-- re-sync. Runs as aide_owner.

alter table users
    add column billing_status text
        constraint users_billing_status_check check (billing_status in
            ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled',
             'unpaid', 'paused')),
    add column billing_period_end timestamptz,
    add column billing_cancel_at_period_end boolean not null default false,
    -- When the subscription became past_due (kept while it stays so): the grace runs from here.
    add column billing_past_due_since timestamptz,
    add column billing_synced_at timestamptz,
    -- The ticket of the re-sync that wrote this state. A re-sync takes a ticket before it asks
    -- Stripe and writes only over an older one, so a slower re-sync that began earlier never
    -- overwrites what a later one read.
    add column billing_sync_ticket bigint not null default 0,
    add constraint users_stripe_customer_id_shape check (stripe_customer_id like 'cus\_%');

create sequence billing_sync_tickets;
grant usage on sequence billing_sync_tickets to aide_system;

-- Re-syncs the reconcile job still has to look at: a customer whose subscription is not over.
create index users_billing_open on users (billing_synced_at)
    where stripe_customer_id is not null
      and (billing_status is null or billing_status not in ('canceled', 'incomplete_expired'));

-- Every Stripe event handled, recorded in the transaction of its effect: a second delivery
-- finds it and has no effect. Kept 30 days (Stripe retries for three).
create table stripe_events (
    id text primary key constraint stripe_events_id_shape check (id like 'evt\_%' and length(id) <= 255),
    type text not null constraint stripe_events_type_length check (length(type) <= 100),
    -- What handling it did: applied, stale (a newer re-sync had already written), unknown_customer,
    -- ignored (a type that changes nothing).
    outcome text not null
        constraint stripe_events_outcome_check
        check (outcome in ('applied', 'stale', 'unknown_customer', 'ignored')),
    received_at timestamptz not null default now()
);

create index stripe_events_received_at on stripe_events (received_at);

alter table stripe_events enable row level security;
alter table stripe_events force row level security;

create policy stripe_events_owner_all on stripe_events to aide_owner using (true) with check (true);
create policy stripe_events_system_all on stripe_events to aide_system using (true) with check (true);

grant select, insert, delete on stripe_events to aide_system;
