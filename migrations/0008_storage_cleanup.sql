-- Objects to remove after an aide is deleted. Runs as aide_owner.
--
-- Deleting an aide queues its storage prefix here in the same transaction (a trigger, so no path
-- from user scope can queue anything else); a background worker removes the objects from both
-- buckets after the commit and retries on failure.

create table storage_cleanup (
    id bigint generated always as identity primary key,
    prefix text not null
        constraint storage_cleanup_prefix_format
        check (prefix ~ '^aides/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/$'),
    attempts integer not null default 0 constraint storage_cleanup_attempts_check check (attempts >= 0),
    next_attempt_at timestamptz not null default now(),
    last_error text,
    created_at timestamptz not null default now()
);

create index storage_cleanup_due on storage_cleanup (next_attempt_at);

alter table storage_cleanup enable row level security;
alter table storage_cleanup force row level security;

create policy storage_cleanup_owner_all on storage_cleanup to aide_owner using (true) with check (true);
create policy storage_cleanup_system_all on storage_cleanup to aide_system using (true) with check (true);

grant select, update, delete on storage_cleanup to aide_system;

create function aides_queue_storage_cleanup() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    insert into storage_cleanup (prefix) values (old.r2_prefix);
    return null;
end
$$;

revoke all on function aides_queue_storage_cleanup() from public;

create trigger aides_queue_storage_cleanup after delete on aides
    for each row execute function aides_queue_storage_cleanup();
