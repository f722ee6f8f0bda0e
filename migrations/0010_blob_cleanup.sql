-- Removing workspace blobs that no file refers to any more. Runs as aide_owner.
--
-- Workspace files are stored content-addressed, at aides/{aide}/blobs/{sha256}. When a file is
-- deleted or replaced by different bytes and no other file of the aide has the old bytes, the old
-- blob's key is queued in storage_cleanup (by a trigger, in the same transaction). The storage
-- worker checks again, under a lock that uploads and publishes share, that nothing refers to it
-- before deleting it. An aide's own deletion is left to its prefix entry (see 0008).

alter table storage_cleanup drop constraint storage_cleanup_prefix_format;
alter table storage_cleanup add constraint storage_cleanup_prefix_format check (
    prefix ~ '^aides/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/$'
    or prefix ~ '^aides/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/blobs/[0-9a-f]{64}$'
);

create function workspace_files_queue_blob_cleanup() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    if tg_op = 'UPDATE' and new.sha256 = old.sha256 then
        return null;
    end if;
    -- Deleted with its aide: the aide's prefix entry removes everything.
    if not exists (select 1 from aides where id = old.aide_id) then
        return null;
    end if;
    if exists (select 1 from workspace_files where aide_id = old.aide_id and sha256 = old.sha256) then
        return null;
    end if;
    insert into storage_cleanup (prefix)
        values ('aides/' || old.aide_id::text || '/blobs/' || encode(old.sha256, 'hex'));
    return null;
end
$$;

revoke all on function workspace_files_queue_blob_cleanup() from public;

create trigger workspace_files_queue_blob_cleanup after delete or update of sha256 on workspace_files
    for each row execute function workspace_files_queue_blob_cleanup();
