-- Operations: what every server counts, shared through the database so alerts see the whole
-- deployment, and what the alerting has already said. Runs as aide_owner.

-- Per-minute counts each server adds to (requests, 5xx answers, refused Stripe signatures, failed
-- webhooks, dead-lettered email). Kept two days.
create table ops_counts (
    minute timestamptz not null,
    name text not null
        constraint ops_counts_name_format check (name ~ '^[a-z][a-z0-9_.]*$' and length(name) <= 64),
    count bigint not null default 0 constraint ops_counts_count_check check (count >= 0),
    primary key (minute, name)
);

alter table ops_counts enable row level security;
alter table ops_counts force row level security;

create policy ops_counts_owner_all on ops_counts to aide_owner using (true) with check (true);
create policy ops_counts_system_all on ops_counts to aide_system using (true) with check (true);

grant select, insert, update, delete on ops_counts to aide_system;

-- Each alert's last message: an alert still firing is posted again only after the cooldown
-- ("still firing ×N"), and the daily digest once a day.
create table alert_state (
    key text primary key
        constraint alert_state_key_format check (key ~ '^[a-z][a-z0-9_.]*$' and length(key) <= 64),
    firing boolean not null default false,
    last_sent_at timestamptz,
    -- Evaluations it fired in without a message since the last one.
    suppressed integer not null default 0 constraint alert_state_suppressed_check check (suppressed >= 0)
);

alter table alert_state enable row level security;
alter table alert_state force row level security;

create policy alert_state_owner_all on alert_state to aide_owner using (true) with check (true);
create policy alert_state_system_all on alert_state to aide_system using (true) with check (true);

grant select, insert, update on alert_state to aide_system;

-- Turns by time, for the alert on model provider errors and the digest.
create index ai_turns_created_at on ai_turns (created_at);

-- The daily digest's figures since `since`. The system role may not read the audit log, so the
-- plan changes are counted here, as numbers only.
create function ops_digest(since timestamptz)
returns table (sign_ups bigint, pro_started bigint, pro_ended bigint, turns bigint,
               turns_failed bigint, cost_micros bigint)
language sql
stable
security definer
set search_path = pg_catalog, public
as $$
    select
        (select count(*) from users where created_at >= since),
        (select count(*) from audit_log
          where action = 'billing.plan_changed' and created_at >= since
            and details ->> 'to' = 'pro'),
        (select count(*) from audit_log
          where action = 'billing.plan_changed' and created_at >= since
            and details ->> 'from' = 'pro'),
        (select count(*) from ai_turns where created_at >= since),
        (select count(*) from ai_turns where created_at >= since and status = 'failed'),
        (select coalesce(sum(cost_micros), 0)::bigint from ai_turns where created_at >= since)
$$;

revoke all on function ops_digest(timestamptz) from public;
grant execute on function ops_digest(timestamptz) to aide_system;
