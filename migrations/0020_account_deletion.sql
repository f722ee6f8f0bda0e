-- Leaving without a trace: deletion asked for with a code sent to the account's email, a grace
-- period during which the account can come back, then a purge. Runs as aide_owner.

alter table users
    add column deletion_requested_at timestamptz,
    -- When the purge may run; set with deletion_requested_at, cleared with it.
    add column purge_after timestamptz,
    add constraint users_deletion_check check ((deletion_requested_at is null) = (purge_after is null));

create index users_purge_after on users (purge_after) where purge_after is not null;

-- Pages stop at once when an account is being deleted, and come back if it is not: every server
-- forgets what it knows of public pages.
create trigger users_notify_page_change_deletion after update of deletion_requested_at on users
    for each row when (old.deletion_requested_at is distinct from new.deletion_requested_at)
    execute function notify_page_change();

-- The code that confirms a deletion: one live code per account, its hash only.
create table account_deletion_codes (
    user_id uuid primary key references users (id) on delete cascade,
    code_hash bytea not null constraint account_deletion_codes_hash_length check (octet_length(code_hash) = 32),
    attempts integer not null default 0 constraint account_deletion_codes_attempts_check check (attempts >= 0),
    expires_at timestamptz not null,
    created_at timestamptz not null default now()
);

alter table account_deletion_codes enable row level security;
alter table account_deletion_codes force row level security;

create policy account_deletion_codes_owner_all on account_deletion_codes to aide_owner using (true) with check (true);
create policy account_deletion_codes_system_all on account_deletion_codes to aide_system using (true) with check (true);

grant select, insert, update, delete on account_deletion_codes to aide_system;

-- The audit trail stays append-only, with one more change allowed than the foreign key's: at
-- purge, a deleted account's rows lose their user id, their client address, and a resource id that
-- was the account itself. What was done, to what else, and when, remain.
create or replace function audit_log_refuse_change() returns trigger
language plpgsql
as $$
begin
    if tg_op = 'UPDATE' then
        if old.user_id is not null and new.user_id is null
           and (new.ip_address is null or new.ip_address = old.ip_address)
           and (new.resource_id is not distinct from old.resource_id
                or (new.resource_id is null and old.resource_id = old.user_id))
           and (to_jsonb(new) - 'user_id' - 'ip_address' - 'resource_id')
               = (to_jsonb(old) - 'user_id' - 'ip_address' - 'resource_id') then
            return new;
        end if;
    end if;
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

-- The purge's one change to the audit trail (see above), for the system role, which may not
-- update audit rows itself.
create function anonymise_audit(target uuid) returns bigint
language sql
security definer
set search_path = pg_catalog, public
as $$
    with changed as (
        update audit_log
           set user_id = null,
               ip_address = null,
               resource_id = case when resource_id = target then null else resource_id end
         where user_id = target
        returning 1
    )
    select count(*) from changed
$$;

revoke all on function anonymise_audit(uuid) from public;
grant execute on function anonymise_audit(uuid) to aide_system;
