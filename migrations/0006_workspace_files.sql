-- Workspace files: an aide's draft page files. The bytes live in object storage as
-- content-addressed blobs (aides/{aide_id}/blobs/{sha256}); this table maps each path to its blob,
-- so a failed write leaves at most an unreferenced blob, never a path pointing at missing bytes.
-- Runs as aide_owner.

create table workspace_files (
    aide_id uuid not null,
    user_id uuid not null,
    path text not null
        constraint workspace_files_path_length check (length(path) between 1 and 512),
    size_bytes bigint not null constraint workspace_files_size_check check (size_bytes >= 0),
    content_type text not null
        constraint workspace_files_content_type_length check (length(content_type) <= 200),
    sha256 bytea not null constraint workspace_files_sha256_length check (octet_length(sha256) = 32),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- user_id is in the key so a conflict cannot tell one user about another's files.
    constraint workspace_files_pkey primary key (aide_id, user_id, path),
    constraint workspace_files_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

create index workspace_files_user_id on workspace_files (user_id);

create trigger workspace_files_set_updated_at before update on workspace_files
    for each row execute function set_updated_at();

alter table workspace_files enable row level security;
alter table workspace_files force row level security;

create policy workspace_files_owner_all on workspace_files to aide_owner using (true) with check (true);
create policy workspace_files_user_rows on workspace_files to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- Publishing and clean-up read every aide's files.
create policy workspace_files_system_select on workspace_files for select to aide_system using (true);

grant select, insert, delete on workspace_files to aide_user;
grant update (size_bytes, content_type, sha256) on workspace_files to aide_user;
grant select on workspace_files to aide_system;
