-- The six tables of the specification, plus sessions (server-side revocation of JWT sessions) and
-- conversation_messages (one row per message, so appending message 1,000 costs what appending
-- message 10 does). Runs as aide_owner.
--
-- Row-level security, in short:
--   * every table has RLS enabled and forced, so even the owner is subject to it;
--   * aide_user's policies compare the row's user_id with current_app_user_id(), which is NULL
--     unless app.user_id holds a well-formed UUID, so a missing, empty or malformed context
--     matches nothing (fail closed);
--   * aide_system's policies allow the rows its jobs need, and its grants limit the jobs;
--   * aide_owner has an explicit all-rows policy, for data migrations that must get past FORCE.

-- The user id of the current transaction, or NULL.
--
-- The server sets app.user_id transaction-locally. Once such a setting ends, current_setting(...,
-- true) returns '' rather than NULL on that pooled connection, and a bare ::uuid cast would raise;
-- anything that is not a well-formed UUID yields NULL instead, so policies match no row.
create function current_app_user_id() returns uuid
language sql stable parallel safe
as $$
    select case
        when pg_catalog.current_setting('app.user_id', true)
             ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
        then pg_catalog.current_setting('app.user_id', true)::uuid
    end
$$;

create function set_updated_at() returns trigger
language plpgsql
as $$
begin
    new.updated_at := now();
    return new;
end
$$;

-- users ---------------------------------------------------------------------------------------

create table users (
    id uuid primary key default gen_random_uuid(),
    -- Stored normalised (trimmed, lower case), so the unique constraint is case-insensitive.
    email text not null
        constraint users_email_normalised check (email = lower(btrim(email)) and email like '%_@_%')
        constraint users_email_length check (length(email) <= 320),
    name text constraint users_name_length check (length(name) <= 200),
    tier text not null default 'free' constraint users_tier_check check (tier in ('free', 'pro')),
    stripe_customer_id text,
    stripe_sub_id text,
    turn_count integer not null default 0 constraint users_turn_count_check check (turn_count >= 0),
    turn_week_start timestamptz not null default now(),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint users_email_key unique (email),
    constraint users_stripe_customer_id_key unique (stripe_customer_id),
    constraint users_stripe_sub_id_key unique (stripe_sub_id)
);

create trigger users_set_updated_at before update on users
    for each row execute function set_updated_at();

alter table users enable row level security;
alter table users force row level security;

create policy users_owner_all on users to aide_owner using (true) with check (true);
create policy users_self_select on users for select to aide_user
    using (id = current_app_user_id());
create policy users_self_update on users for update to aide_user
    using (id = current_app_user_id()) with check (id = current_app_user_id());
create policy users_system_all on users to aide_system using (true) with check (true);

-- A user reads their own row and may change only harmless columns: never tier, turn counts or
-- Stripe ids, which system scope (billing webhooks, turn accounting) maintains.
grant select on users to aide_user;
grant update (name) on users to aide_user;
grant select, insert, update, delete on users to aide_system;

-- magic_links: system scope only --------------------------------------------------------------

create table magic_links (
    id uuid primary key default gen_random_uuid(),
    email text not null
        constraint magic_links_email_normalised check (email = lower(btrim(email))),
    -- SHA-256 of the token. The token itself is never stored.
    token_hash bytea not null
        constraint magic_links_token_hash_length check (octet_length(token_hash) = 32),
    -- The client address that asked for the link, for per-IP rate limits.
    requested_ip inet,
    expires_at timestamptz not null,
    consumed_at timestamptz,
    created_at timestamptz not null default now(),
    constraint magic_links_token_hash_key unique (token_hash),
    constraint magic_links_expiry_check check (expires_at > created_at)
);

create index magic_links_email_created_at on magic_links (email, created_at);
create index magic_links_requested_ip_created_at on magic_links (requested_ip, created_at)
    where requested_ip is not null;
create index magic_links_expires_at on magic_links (expires_at);

alter table magic_links enable row level security;
alter table magic_links force row level security;

create policy magic_links_owner_all on magic_links to aide_owner using (true) with check (true);
create policy magic_links_system_all on magic_links to aide_system using (true) with check (true);

grant select, insert, update, delete on magic_links to aide_system;

-- sessions: system scope only -----------------------------------------------------------------

create table sessions (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references users (id) on delete cascade,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz,
    ip_address inet,
    user_agent text constraint sessions_user_agent_length check (length(user_agent) <= 512),
    constraint sessions_expiry_check check (expires_at > created_at)
);

create index sessions_user_id on sessions (user_id);
create index sessions_expires_at on sessions (expires_at);

alter table sessions enable row level security;
alter table sessions force row level security;

create policy sessions_owner_all on sessions to aide_owner using (true) with check (true);
create policy sessions_system_all on sessions to aide_system using (true) with check (true);

grant select, insert, update, delete on sessions to aide_system;

-- aides ---------------------------------------------------------------------------------------

create table aides (
    id uuid primary key default gen_random_uuid(),
    user_id uuid not null references users (id) on delete cascade,
    title text not null default 'Untitled'
        constraint aides_title_length check (length(btrim(title)) between 1 and 200),
    slug text
        constraint aides_slug_format check (
            slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(slug) between 3 and 100
        ),
    status text not null default 'draft'
        constraint aides_status_check check (status in ('draft', 'published', 'archived')),
    -- Derived from the id, so no one can point an aide at another aide's objects.
    r2_prefix text not null generated always as ('aides/' || id::text || '/') stored,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint aides_slug_key unique (slug),
    -- Target of the composite foreign keys that keep child rows' user_id equal to their aide's.
    constraint aides_id_user_id_key unique (id, user_id)
);

-- The caller's aides, most recently updated first.
create index aides_user_id_updated_at on aides (user_id, updated_at desc, id desc);

create trigger aides_set_updated_at before update on aides
    for each row execute function set_updated_at();

alter table aides enable row level security;
alter table aides force row level security;

create policy aides_owner_all on aides to aide_owner using (true) with check (true);
create policy aides_user_rows on aides to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
-- Public pages are looked up by slug without a user.
create policy aides_system_select on aides for select to aide_system using (true);

grant select, insert, delete on aides to aide_user;
grant update (title, slug, status) on aides to aide_user;
grant select on aides to aide_system;

-- conversations -------------------------------------------------------------------------------

-- One conversation per aide. user_id repeats the aide's owner (kept equal by the composite
-- foreign key) so the policy is an indexed comparison, not a subquery on aides.
create table conversations (
    id uuid primary key default gen_random_uuid(),
    aide_id uuid not null,
    user_id uuid not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    -- One conversation per aide. user_id is in the key (the aide decides it anyway) so that a
    -- unique violation, checked before the foreign key, cannot tell one user about another's aide.
    constraint conversations_aide_id_user_id_key unique (aide_id, user_id),
    constraint conversations_id_user_id_key unique (id, user_id),
    constraint conversations_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

create index conversations_user_id on conversations (user_id);

create trigger conversations_set_updated_at before update on conversations
    for each row execute function set_updated_at();

alter table conversations enable row level security;
alter table conversations force row level security;

create policy conversations_owner_all on conversations to aide_owner using (true) with check (true);
create policy conversations_user_rows on conversations to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());

grant select, insert, delete on conversations to aide_user;
-- Only the trigger below touches a conversation after it is created.
grant update (updated_at) on conversations to aide_user;

-- The messages of a conversation, one row each, oldest first by id.
create table conversation_messages (
    id bigint generated always as identity primary key,
    conversation_id uuid not null,
    user_id uuid not null,
    role text not null
        constraint conversation_messages_role_check check (role in ('user', 'assistant', 'system')),
    content text not null
        constraint conversation_messages_content_length check (length(content) <= 100000),
    metadata jsonb not null default '{}'
        constraint conversation_messages_metadata_object check (jsonb_typeof(metadata) = 'object'),
    created_at timestamptz not null default now(),
    constraint conversation_messages_conversation_fkey foreign key (conversation_id, user_id)
        references conversations (id, user_id) on delete cascade
);

create index conversation_messages_conversation_id on conversation_messages (conversation_id, id);
create index conversation_messages_user_id on conversation_messages (user_id);

-- Appending a message is what updates a conversation.
create function conversation_messages_touch_conversation() returns trigger
language plpgsql
as $$
begin
    update conversations set updated_at = now() where id = new.conversation_id;
    return null;
end
$$;

create trigger conversation_messages_touch_conversation after insert on conversation_messages
    for each row execute function conversation_messages_touch_conversation();

alter table conversation_messages enable row level security;
alter table conversation_messages force row level security;

create policy conversation_messages_owner_all on conversation_messages to aide_owner
    using (true) with check (true);
create policy conversation_messages_user_rows on conversation_messages to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());

grant select, insert on conversation_messages to aide_user;

-- published_versions --------------------------------------------------------------------------

-- Immutable snapshots: no role but the owner may update them; they go with their aide.
create table published_versions (
    id uuid primary key default gen_random_uuid(),
    aide_id uuid not null,
    user_id uuid not null,
    version integer not null constraint published_versions_version_check check (version >= 1),
    r2_key text not null,
    notes text constraint published_versions_notes_length check (length(notes) <= 1000),
    size_bytes bigint not null constraint published_versions_size_check check (size_bytes >= 0),
    published_at timestamptz not null default now(),
    -- user_id is in the key for the same reason as in conversations.
    constraint published_versions_aide_id_version_key unique (aide_id, user_id, version),
    constraint published_versions_aide_fkey foreign key (aide_id, user_id)
        references aides (id, user_id) on delete cascade
);

create index published_versions_user_id on published_versions (user_id);

alter table published_versions enable row level security;
alter table published_versions force row level security;

create policy published_versions_owner_all on published_versions to aide_owner
    using (true) with check (true);
create policy published_versions_user_rows on published_versions to aide_user
    using (user_id = current_app_user_id()) with check (user_id = current_app_user_id());
create policy published_versions_system_select on published_versions for select to aide_system
    using (true);

grant select, insert on published_versions to aide_user;
grant select on published_versions to aide_system;

-- audit_log: append-only ----------------------------------------------------------------------

create table audit_log (
    id bigint generated always as identity primary key,
    -- Set to NULL, and nothing else changed, when the user's account is deleted.
    user_id uuid references users (id) on delete set null,
    action text not null
        constraint audit_log_action_format check (action ~ '^[a-z][a-z0-9_.]*$'),
    resource_type text not null
        constraint audit_log_resource_type_format check (resource_type ~ '^[a-z][a-z0-9_]*$'),
    resource_id uuid,
    details jsonb not null default '{}'
        constraint audit_log_details_object check (jsonb_typeof(details) = 'object'),
    ip_address inet,
    created_at timestamptz not null default now()
);

-- A user's own entries, newest first.
create index audit_log_user_id_id on audit_log (user_id, id desc);

-- Refuses every UPDATE, DELETE and TRUNCATE, whoever asks, except the one update a foreign key
-- makes when a user is deleted: user_id set to NULL with every other column unchanged.
create function audit_log_refuse_change() returns trigger
language plpgsql
as $$
begin
    if tg_op = 'UPDATE' then
        if old.user_id is not null and new.user_id is null
           and (to_jsonb(new) - 'user_id') = (to_jsonb(old) - 'user_id') then
            return new;
        end if;
    end if;
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger audit_log_append_only before update or delete on audit_log
    for each row execute function audit_log_refuse_change();
create trigger audit_log_no_truncate before truncate on audit_log
    for each statement execute function audit_log_refuse_change();

alter table audit_log enable row level security;
alter table audit_log force row level security;

create policy audit_log_owner_all on audit_log to aide_owner using (true) with check (true);
create policy audit_log_user_select on audit_log for select to aide_user
    using (user_id = current_app_user_id());
create policy audit_log_user_insert on audit_log for insert to aide_user
    with check (user_id = current_app_user_id());
create policy audit_log_system_insert on audit_log for insert to aide_system with check (true);

grant select, insert on audit_log to aide_user;
grant insert on audit_log to aide_system;
