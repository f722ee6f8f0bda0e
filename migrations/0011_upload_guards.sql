-- Uploads and publishes without a database connection held while bytes move. Runs as aide_owner.
--
-- An upload (or a publish) first records, in a short transaction of its own, which blob it is
-- about to write (or read): a pending_blobs row. Then it moves the bytes to or from object storage
-- with no transaction open, and finally, in a second short transaction, records the file (or the
-- version) and removes its row. The storage worker never deletes a workspace blob that a pending
-- row names, so the bytes cannot vanish in between. When the row goes without a file referring to
-- the blob (the upload was refused, failed or abandoned), a trigger queues the blob for removal.
-- Rows older than an hour belong to requests that died; the cleanup job removes them.

create table pending_blobs (
    id bigint generated always as identity primary key,
    aide_id uuid not null,
    user_id uuid not null,
    sha256 bytea not null constraint pending_blobs_sha256_length check (octet_length(sha256) = 32),
    created_at timestamptz not null default now(),
    constraint pending_blobs_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

create index pending_blobs_aide_id_sha256 on pending_blobs (aide_id, sha256);
create index pending_blobs_user_id on pending_blobs (user_id);
create index pending_blobs_created_at on pending_blobs (created_at);

alter table pending_blobs enable row level security;
alter table pending_blobs force row level security;

create policy pending_blobs_owner_all on pending_blobs to aide_owner using (true) with check (true);
create policy pending_blobs_user_rows on pending_blobs to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- The storage worker checks every aide's rows; the cleanup job removes abandoned ones.
create policy pending_blobs_system_select on pending_blobs for select to aide_system using (true);
create policy pending_blobs_system_delete on pending_blobs for delete to aide_system using (true);

grant select, insert, delete on pending_blobs to aide_user;
grant select, delete on pending_blobs to aide_system;

-- Queues a workspace blob for removal unless something still needs it: a file of its aide, or a
-- pending row. The one rule both triggers below apply.
create function queue_blob_cleanup(aide uuid, sha bytea) returns void
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    -- Deleted with its aide: the aide's prefix entry removes everything.
    if not exists (select 1 from aides where id = aide) then
        return;
    end if;
    if exists (select 1 from workspace_files where aide_id = aide and sha256 = sha)
       or exists (select 1 from pending_blobs where aide_id = aide and sha256 = sha) then
        return;
    end if;
    insert into storage_cleanup (prefix)
        values ('aides/' || aide::text || '/blobs/' || encode(sha, 'hex'));
end
$$;

revoke all on function queue_blob_cleanup(uuid, bytea) from public;

create function pending_blobs_queue_blob_cleanup() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    perform queue_blob_cleanup(old.aide_id, old.sha256);
    return null;
end
$$;

revoke all on function pending_blobs_queue_blob_cleanup() from public;

create trigger pending_blobs_queue_blob_cleanup after delete on pending_blobs
    for each row execute function pending_blobs_queue_blob_cleanup();

-- A file's old bytes follow the same rule (0010 did not know of pending rows).
create or replace function workspace_files_queue_blob_cleanup() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    if tg_op = 'UPDATE' and new.sha256 = old.sha256 then
        return null;
    end if;
    perform queue_blob_cleanup(old.aide_id, old.sha256);
    return null;
end
$$;
