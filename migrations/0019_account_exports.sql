-- A person's data, theirs to take: archives of everything they have, made in the background under
-- their own row-level security, downloadable for seven days. Runs as aide_owner.

create table account_exports (
    -- Random (version 4): the download's address holds it, and it cannot be guessed.
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references users (id) on delete cascade,
    status text not null default 'running'
        constraint account_exports_status_check check (status in ('running', 'ready', 'failed', 'expired')),
    -- The archive, once ready.
    size_bytes bigint constraint account_exports_size_check check (size_bytes >= 0),
    sha256 bytea constraint account_exports_sha256_length check (octet_length(sha256) = 32),
    file_count integer,
    error text constraint account_exports_error_length check (length(error) <= 500),
    created_at timestamptz not null default now(),
    finished_at timestamptz,
    expires_at timestamptz,
    constraint account_exports_ready_check check (
        status <> 'ready' or (size_bytes is not null and sha256 is not null and expires_at is not null)
    )
);

-- One export running per user at a time.
create unique index account_exports_one_running on account_exports (user_id) where status = 'running';
create index account_exports_user_id_created_at on account_exports (user_id, created_at desc);
create index account_exports_expires_at on account_exports (expires_at) where status = 'ready';
create index account_exports_running on account_exports (created_at) where status = 'running';

alter table account_exports enable row level security;
alter table account_exports force row level security;

create policy account_exports_owner_all on account_exports to aide_owner using (true) with check (true);
create policy account_exports_user_rows on account_exports to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- The upkeep job: archives past their time, and exports left running by a process that died.
create policy account_exports_system_select on account_exports for select to aide_system using (true);
create policy account_exports_system_update on account_exports for update to aide_system using (true) with check (true);

grant select, insert on account_exports to aide_user;
grant update (status, size_bytes, sha256, file_count, error, finished_at, expires_at)
    on account_exports to aide_user;
grant select on account_exports to aide_system;
grant update (status, error, finished_at) on account_exports to aide_system;
