-- History and the AI turn. Runs as aide_owner.
--
-- Revisions: every change to an aide's workspace (a turn, an upload, a deletion, a restore) records
-- the files it left as a numbered revision. Rows only: the bytes are content-addressed blobs, which
-- a revision keeps from being removed. Restoring a revision copies its rows back and records a new
-- revision, so nothing is ever lost by undoing. Each aide keeps a bounded number of revisions.
--
-- Turns: one row per AI turn, metered exactly. The turn's start counts one of the week's turns and
-- stores the user's message and this row, in one transaction; a turn that fails without changing
-- the page gives the turn back in the transaction that marks it failed.

create table workspace_revisions (
    aide_id uuid not null,
    user_id uuid not null,
    number integer not null constraint workspace_revisions_number_check check (number >= 1),
    cause text not null
        constraint workspace_revisions_cause_check
        check (cause in ('import', 'turn', 'upload', 'delete', 'restore')),
    turn_id uuid,
    restored_from integer,
    file_count integer not null,
    size_bytes bigint not null,
    created_at timestamptz not null default now(),
    constraint workspace_revisions_pkey primary key (aide_id, user_id, number),
    constraint workspace_revisions_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

create index workspace_revisions_user_id on workspace_revisions (user_id);

create table workspace_revision_files (
    aide_id uuid not null,
    user_id uuid not null,
    revision integer not null,
    path text not null,
    size_bytes bigint not null,
    content_type text not null,
    sha256 bytea not null,
    constraint workspace_revision_files_pkey primary key (aide_id, user_id, revision, path),
    constraint workspace_revision_files_revision_fkey foreign key (aide_id, user_id, revision)
        references workspace_revisions (aide_id, user_id, number) on delete cascade
);

create index workspace_revision_files_blob on workspace_revision_files (aide_id, sha256);
create index workspace_revision_files_user_id on workspace_revision_files (user_id);

alter table workspace_revisions enable row level security;
alter table workspace_revisions force row level security;
alter table workspace_revision_files enable row level security;
alter table workspace_revision_files force row level security;

create policy workspace_revisions_owner_all on workspace_revisions to aide_owner
    using (true) with check (true);
create policy workspace_revisions_user_select on workspace_revisions for select to aide_user
    using (user_id = current_app_user_id());
create policy workspace_revisions_system_select on workspace_revisions for select to aide_system
    using (true);
create policy workspace_revision_files_owner_all on workspace_revision_files to aide_owner
    using (true) with check (true);
create policy workspace_revision_files_user_select on workspace_revision_files for select to aide_user
    using (user_id = current_app_user_id());
create policy workspace_revision_files_system_select on workspace_revision_files for select
    to aide_system using (true);

-- Users read their history; only record_revision below writes it.
grant select on workspace_revisions, workspace_revision_files to aide_user, aide_system;

-- Records the caller's aide's current files as its next revision and drops the revisions older
-- than the newest `keep`. Takes the aide's row lock, so revisions are numbered one after another.
-- Returns the new number; raises no_data_found when the aide is not the caller's.
create function record_revision(aide uuid, cause text, turn uuid, restored_from integer, keep integer)
returns integer
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
declare
    owner uuid := current_app_user_id();
    made integer;
begin
    perform 1 from aides where id = aide and user_id = owner for update;
    if not found then
        raise exception 'no such aide' using errcode = 'no_data_found';
    end if;
    select coalesce(max(number), 0) + 1 into made
        from workspace_revisions where aide_id = aide and user_id = owner;
    insert into workspace_revisions
        (aide_id, user_id, number, cause, turn_id, restored_from, file_count, size_bytes)
        select aide, owner, made, cause, turn, restored_from, count(*), coalesce(sum(size_bytes), 0)
        from workspace_files where aide_id = aide and user_id = owner;
    insert into workspace_revision_files
        (aide_id, user_id, revision, path, size_bytes, content_type, sha256)
        select aide, owner, made, path, size_bytes, content_type, sha256
        from workspace_files where aide_id = aide and user_id = owner;
    delete from workspace_revisions
        where aide_id = aide and user_id = owner and number <= made - greatest(keep, 1);
    return made;
end
$$;

revoke all on function record_revision(uuid, text, uuid, integer, integer) from public;
grant execute on function record_revision(uuid, text, uuid, integer, integer) to aide_user;

-- A blob stays while a revision names it.
create or replace function queue_blob_cleanup(aide uuid, sha bytea) returns void
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
       or exists (select 1 from workspace_revision_files where aide_id = aide and sha256 = sha)
       or exists (select 1 from pending_blobs where aide_id = aide and sha256 = sha) then
        return;
    end if;
    insert into storage_cleanup (prefix)
        values ('aides/' || aide::text || '/blobs/' || encode(sha, 'hex'));
end
$$;

create function workspace_revision_files_queue_blob_cleanup() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    perform queue_blob_cleanup(old.aide_id, old.sha256);
    return null;
end
$$;

revoke all on function workspace_revision_files_queue_blob_cleanup() from public;

create trigger workspace_revision_files_queue_blob_cleanup after delete on workspace_revision_files
    for each row execute function workspace_revision_files_queue_blob_cleanup();

-- Every aide that has files starts its history with them.
insert into workspace_revisions (aide_id, user_id, number, cause, file_count, size_bytes)
    select aide_id, user_id, 1, 'import', count(*), sum(size_bytes)
    from workspace_files group by aide_id, user_id;
insert into workspace_revision_files (aide_id, user_id, revision, path, size_bytes, content_type, sha256)
    select aide_id, user_id, 1, path, size_bytes, content_type, sha256 from workspace_files;

-- turns ------------------------------------------------------------------------------------------

create table ai_turns (
    id uuid primary key default gen_random_uuid(),
    aide_id uuid not null,
    user_id uuid not null,
    -- The client's key for the request: a second submit with it returns this turn.
    client_turn_id text not null
        constraint ai_turns_client_turn_id_length check (length(client_turn_id) between 1 and 100),
    status text not null default 'running'
        constraint ai_turns_status_check
        check (status in ('running', 'completed', 'failed', 'interrupted')),
    user_message_id bigint not null,
    assistant_message_id bigint,
    -- The revision the turn read, and the one it made.
    base_revision integer not null,
    revision integer,
    -- Whether the turn is counted against the week's allowance (false once given back), and the
    -- week it was counted in: a refund in a later week gives nothing back.
    counted boolean not null default true,
    week_start timestamptz not null,
    provider text not null constraint ai_turns_provider_length check (length(provider) <= 40),
    model text not null constraint ai_turns_model_length check (length(model) <= 200),
    -- A hash of the system prompt and tools, never the prompt itself.
    prompt_version text not null constraint ai_turns_prompt_version_length check (length(prompt_version) <= 64),
    rounds integer not null default 0,
    tool_calls_applied integer not null default 0,
    tool_calls_failed integer not null default 0,
    input_tokens bigint not null default 0,
    output_tokens bigint not null default 0,
    cache_read_tokens bigint not null default 0,
    cache_write_tokens bigint not null default 0,
    cost_micros bigint not null default 0,
    provider_request_ids text[] not null default '{}',
    provider_first_byte_ms integer,
    first_event_ms integer,
    duration_ms integer,
    error_code text constraint ai_turns_error_code_length check (length(error_code) <= 64),
    -- A turn still running after this is failed and given back by the janitor.
    deadline timestamptz not null,
    created_at timestamptz not null default now(),
    finished_at timestamptz,
    constraint ai_turns_client_turn_id_key unique (user_id, client_turn_id),
    constraint ai_turns_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

-- One running turn per aide.
create unique index ai_turns_one_running on ai_turns (aide_id) where status = 'running';
create index ai_turns_aide_id_created_at on ai_turns (aide_id, created_at desc, id desc);
create index ai_turns_user_id on ai_turns (user_id);
create index ai_turns_running_deadline on ai_turns (deadline) where status = 'running';

alter table ai_turns enable row level security;
alter table ai_turns force row level security;

create policy ai_turns_owner_all on ai_turns to aide_owner using (true) with check (true);
create policy ai_turns_user_rows on ai_turns to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- The janitor fails turns left running by a process that died.
create policy ai_turns_system_select on ai_turns for select to aide_system using (true);
create policy ai_turns_system_update on ai_turns for update to aide_system using (true) with check (true);

grant select, insert on ai_turns to aide_user;
grant update (status, assistant_message_id, revision, counted, rounds, tool_calls_applied,
              tool_calls_failed, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,
              cost_micros, provider_request_ids, provider_first_byte_ms, first_event_ms,
              duration_ms, error_code, finished_at)
    on ai_turns to aide_user;
grant select on ai_turns to aide_system;
grant update (status, counted, error_code, finished_at, duration_ms) on ai_turns to aide_system;

-- Gives the caller's turn back (the janitor, in system scope, does the same with plain statements): marks it not counted and, when it was counted in the user's
-- current week, takes one off the week's count. Returns whether a turn was given back.
create function refund_turn(turn uuid) returns boolean
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
declare
    owner uuid;
    week timestamptz;
begin
    update ai_turns set counted = false
        where id = turn and counted and user_id = current_app_user_id()
        returning user_id, week_start into owner, week;
    if owner is null then
        return false;
    end if;
    update users set turn_count = turn_count - 1
        where id = owner and turn_week_start = week and turn_count > 0;
    return true;
end
$$;

revoke all on function refund_turn(uuid) from public;
grant execute on function refund_turn(uuid) to aide_user;
