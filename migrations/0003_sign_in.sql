-- Sign-in: one-time codes on magic links, the email outbox, and shared rate limits.
-- Runs as aide_owner. All three are system scope only.

-- magic_links: a short code for signing in on another device, stored hashed like the token,
-- with the count of wrong attempts (at most 5, then the code is dead).
alter table magic_links
    add column code_hash bytea not null
        constraint magic_links_code_hash_length check (octet_length(code_hash) = 32),
    add column code_attempts integer not null default 0
        constraint magic_links_code_attempts_check check (code_attempts >= 0);

-- Verification by code looks up a person's live links by email.
create index magic_links_email_live on magic_links (email, created_at desc)
    where consumed_at is null;

-- email_outbox: written in the same transaction as what it announces, delivered by a background
-- worker. Its id is the idempotency key sent to the provider, so a retry never sends twice.
-- The bodies (which may hold a sign-in link) are erased once the message is sent or given up on.
create table email_outbox (
    id uuid primary key default gen_random_uuid(),
    kind text not null constraint email_outbox_kind_format check (kind ~ '^[a-z][a-z0-9_]*$'),
    to_address text not null,
    subject text not null,
    html_body text,
    text_body text,
    status text not null default 'pending'
        constraint email_outbox_status_check check (status in ('pending', 'sent', 'dead')),
    attempts integer not null default 0 constraint email_outbox_attempts_check check (attempts >= 0),
    -- When the worker may next try. Claiming a message moves this forward by a lease, so a worker
    -- that dies mid-send leaves the message to be retried, not lost.
    next_attempt_at timestamptz not null default now(),
    -- Not worth delivering after this (a sign-in link that has expired).
    deliver_before timestamptz,
    last_error text,
    provider_id text,
    created_at timestamptz not null default now(),
    sent_at timestamptz,
    constraint email_outbox_bodies_until_done check (
        status = 'pending' or (html_body is null and text_body is null)
    )
);

create index email_outbox_due on email_outbox (next_attempt_at) where status = 'pending';
create index email_outbox_finished on email_outbox (created_at) where status <> 'pending';

alter table email_outbox enable row level security;
alter table email_outbox force row level security;

create policy email_outbox_owner_all on email_outbox to aide_owner using (true) with check (true);
create policy email_outbox_system_all on email_outbox to aide_system using (true) with check (true);

grant select, insert, update, delete on email_outbox to aide_system;

-- rate_limits: one row per limited key, holding the GCRA "theoretical arrival time". Kept in
-- PostgreSQL so every server process shares the same budget. Keys never hold an email address in
-- clear (they hold its hash).
create table rate_limits (
    key text primary key constraint rate_limits_key_length check (length(key) <= 200),
    tat timestamptz not null
);

create index rate_limits_tat on rate_limits (tat);

alter table rate_limits enable row level security;
alter table rate_limits force row level security;

create policy rate_limits_owner_all on rate_limits to aide_owner using (true) with check (true);
create policy rate_limits_system_all on rate_limits to aide_system using (true) with check (true);

grant select, insert, update, delete on rate_limits to aide_system;
