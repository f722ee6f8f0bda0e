-- The files of each published version, so a version can be served (and restored) exactly as it
-- was. Their bytes live in the published bucket at `{published_versions.r2_key}{path}`.
-- Runs as aide_owner.

-- Target of the foreign key below.
alter table published_versions
    add constraint published_versions_aide_user_version_key unique (aide_id, user_id, version);

create table published_files (
    aide_id uuid not null,
    user_id uuid not null,
    version integer not null,
    path text not null constraint published_files_path_length check (length(path) between 1 and 512),
    size_bytes bigint not null constraint published_files_size_check check (size_bytes >= 0),
    content_type text not null
        constraint published_files_content_type_length check (length(content_type) <= 200),
    sha256 bytea not null constraint published_files_sha256_length check (octet_length(sha256) = 32),
    constraint published_files_pkey primary key (aide_id, user_id, version, path),
    constraint published_files_version_fkey foreign key (aide_id, user_id, version)
        references published_versions (aide_id, user_id, version) on delete cascade
);

create index published_files_user_id on published_files (user_id);

alter table published_files enable row level security;
alter table published_files force row level security;

create policy published_files_owner_all on published_files to aide_owner using (true) with check (true);
create policy published_files_user_rows on published_files to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- Public pages are served from system scope.
create policy published_files_system_select on published_files for select to aide_system using (true);

grant select, insert on published_files to aide_user;
grant select on published_files to aide_system;
