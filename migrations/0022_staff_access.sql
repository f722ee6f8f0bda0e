-- Staff access ("break-glass"), enforced by the database. Runs as aide_owner.
--
-- An operator is an account whose email is in `operators` (managed by `aide operator add`,
-- never by the app). Access starts with a grant: one target, a reason of 20 characters or more,
-- a category, at most 60 minutes, read-only, never renewed, never on oneself or another
-- operator. The aide_support role can only call the functions below; each checks a live grant of
-- the calling operator and records what it read in the target's audit trail in the same
-- statement, and opening a grant emails the person (unless a legal hold is recorded).

create table operators (
    email text primary key
        constraint operators_email_normalised check (email = lower(btrim(email)) and email like '%_@_%'),
    added_at timestamptz not null default now()
);

alter table operators enable row level security;
alter table operators force row level security;
create policy operators_owner_all on operators to aide_owner using (true) with check (true);

create table support_grants (
    id uuid primary key default gen_random_uuid(),
    -- Staff are known by their address; their own account may come and go.
    operator_email text not null,
    target_id uuid not null references users (id) on delete cascade,
    reason text not null
        constraint support_grants_reason_length check (length(btrim(reason)) between 20 and 1000),
    category text not null
        constraint support_grants_category_check check (category in ('support', 'abuse', 'legal')),
    -- A legal hold: the person is not told (only for category legal).
    legal_hold boolean not null default false
        constraint support_grants_hold_check check (not legal_hold or category = 'legal'),
    opened_at timestamptz not null default now(),
    expires_at timestamptz not null,
    closed_at timestamptz,
    -- Whether the end (closed or expired) has been posted to Slack.
    end_posted boolean not null default false,
    constraint support_grants_length_check check (expires_at <= opened_at + interval '60 minutes')
);

create index support_grants_target_id on support_grants (target_id);
create index support_grants_unposted on support_grants (expires_at) where not end_posted;

alter table support_grants enable row level security;
alter table support_grants force row level security;
create policy support_grants_owner_all on support_grants to aide_owner using (true) with check (true);
-- The alert loop posts grants' ends to Slack.
create policy support_grants_system_select on support_grants for select to aide_system using (true);
create policy support_grants_system_update on support_grants for update to aide_system using (true) with check (true);
grant select (id, operator_email, category, expires_at, closed_at, end_posted) on support_grants to aide_system;
grant update (end_posted) on support_grants to aide_system;

-- The support scope: the operator's session checked, then role aide_support with the operator's
-- user id for the rest of the transaction.
create function enter_support_scope(session_id uuid, operator_id uuid) returns void
language plpgsql volatile
as $$
begin
    perform set_config('role', 'aide_system', true);
    perform assert_session_live(session_id, operator_id);
    perform set_config('role', 'aide_support', true);
    perform set_config('app.user_id', operator_id::text, true);
end
$$;

revoke all on function enter_support_scope(uuid, uuid) from public;
grant execute on function enter_support_scope(uuid, uuid) to aide_app;

-- The calling operator's address, or an error: the caller must be an operator.
create function support_operator() returns text
language plpgsql stable security definer
set search_path = pg_catalog, public
as $$
declare
    found text;
begin
    select u.email into found
      from users u join operators o on o.email = u.email
     where u.id = current_app_user_id();
    if found is null then
        raise exception 'only operators have staff access' using errcode = 'insufficient_privilege';
    end if;
    return found;
end
$$;

revoke all on function support_operator() from public;

-- A live grant of the calling operator, or an error. Returns its target.
create function support_grant_target(grant_id uuid) returns uuid
language plpgsql stable security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid;
begin
    select g.target_id into target
      from support_grants g
     where g.id = grant_id and g.operator_email = support_operator()
       and g.closed_at is null and g.expires_at > now();
    if target is null then
        raise exception 'no live grant of yours with that id (expired, closed or not yours)'
            using errcode = 'insufficient_privilege';
    end if;
    return target;
end
$$;

revoke all on function support_grant_target(uuid) from public;

create function support_record(target uuid, grant_id uuid, action text, details jsonb) returns void
language sql security definer
set search_path = pg_catalog, public
as $$
    insert into audit_log (user_id, action, resource_type, resource_id, details)
    select target, action, 'support_grant', grant_id,
           details || jsonb_build_object('operator', g.operator_email, 'category', g.category)
      from support_grants g where g.id = grant_id
$$;

revoke all on function support_record(uuid, uuid, text, jsonb) from public;

-- Opens a grant on the account with address `target_email`.
create function support_open_grant(target_email text, reason text, category text, minutes integer,
                                   legal_hold boolean)
returns table (id uuid, target_id uuid, expires_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    caller text := support_operator();
    target uuid;
    made support_grants;
begin
    if minutes is null or minutes < 1 or minutes > 60 then
        raise exception 'a grant lasts 1 to 60 minutes' using errcode = 'invalid_parameter_value';
    end if;
    if reason is null or length(btrim(reason)) < 20 then
        raise exception 'the reason must be at least 20 characters' using errcode = 'invalid_parameter_value';
    end if;
    if category is null or category not in ('support', 'abuse', 'legal') then
        raise exception 'the category must be support, abuse or legal' using errcode = 'invalid_parameter_value';
    end if;
    if legal_hold and category <> 'legal' then
        raise exception 'a legal hold is only for category legal' using errcode = 'invalid_parameter_value';
    end if;
    select u.id into target from users u where u.email = lower(btrim(target_email));
    if target is null then
        raise exception 'no account has that address' using errcode = 'no_data_found';
    end if;
    if lower(btrim(target_email)) = caller then
        raise exception 'staff access is never on oneself' using errcode = 'insufficient_privilege';
    end if;
    if exists (select 1 from operators o where o.email = lower(btrim(target_email))) then
        raise exception 'staff access is never on another operator' using errcode = 'insufficient_privilege';
    end if;
    if exists (select 1 from support_grants g
                where g.operator_email = caller and g.target_id = target
                  and g.closed_at is null and g.expires_at > now()) then
        raise exception 'a grant on this account is open already; grants are never renewed'
            using errcode = 'insufficient_privilege';
    end if;
    insert into support_grants (operator_email, target_id, reason, category, legal_hold, expires_at)
    values (caller, target, btrim(reason), category, legal_hold, now() + make_interval(mins => minutes))
    returning * into made;
    perform support_record(target, made.id, 'support.grant_opened',
        jsonb_build_object('minutes', minutes, 'reason', made.reason, 'legal_hold', legal_hold));
    if not legal_hold then
        insert into email_outbox (kind, to_address, subject, text_body, html_body, deliver_before)
        select 'staff_access', u.email, 'AIde staff opened access to your account',
               format(E'Someone on the AIde team opened read-only access to your account at %s UTC, for up to %s minutes.\n\nCategory: %s\nReason given: %s\n\nEverything they view is listed under "Access by staff" on your account page. If you did not ask for help, reply to this email.\n',
                      to_char(made.opened_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), minutes, category, made.reason),
               format('<!doctype html><html><body style="font-family:system-ui,sans-serif;line-height:1.5"><h1 style="font-size:20px">AIde staff opened access to your account</h1><p>Someone on the AIde team opened read-only access to your account at %s UTC, for up to %s minutes.</p><p>Category: %s<br>Reason given: %s</p><p>Everything they view is listed under “Access by staff” on your account page.</p></body></html>',
                      to_char(made.opened_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI'), minutes, category,
                      replace(replace(replace(made.reason, '&', '&amp;'), '<', '&lt;'), '>', '&gt;')),
               now() + interval '1 day'
          from users u where u.id = target;
    end if;
    return query select made.id, made.target_id, made.expires_at;
end
$$;

-- Ends one of the calling operator's grants early.
create function support_close_grant(grant_id uuid) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid := support_grant_target(grant_id);
begin
    update support_grants set closed_at = now(), end_posted = true where id = grant_id;
    perform support_record(target, grant_id, 'support.grant_closed', '{}'::jsonb);
    return true;
end
$$;

create function support_account(grant_id uuid)
returns table (email text, name text, tier text, billing_status text, created_at timestamptz,
               aides bigint, deletion_requested_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid := support_grant_target(grant_id);
begin
    perform support_record(target, grant_id, 'support.read', jsonb_build_object('what', 'account'));
    return query
        select u.email, u.name, u.tier, u.billing_status, u.created_at,
               (select count(*) from aides a where a.user_id = u.id), u.deletion_requested_at
          from users u where u.id = target;
end
$$;

create function support_aides(grant_id uuid)
returns table (id uuid, title text, slug text, status text, created_at timestamptz, updated_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid := support_grant_target(grant_id);
begin
    perform support_record(target, grant_id, 'support.read', jsonb_build_object('what', 'aides'));
    return query
        select a.id, a.title, a.slug, a.status, a.created_at, a.updated_at
          from aides a where a.user_id = target order by a.updated_at desc;
end
$$;

create function support_conversation(grant_id uuid, aide uuid)
returns table (id bigint, role text, content text, created_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid := support_grant_target(grant_id);
begin
    if not exists (select 1 from aides a where a.id = aide and a.user_id = target) then
        raise exception 'that aide is not the account''s' using errcode = 'no_data_found';
    end if;
    perform support_record(target, grant_id, 'support.read',
                           jsonb_build_object('what', 'conversation', 'aide', aide));
    return query
        select m.id, m.role, m.content, m.created_at
          from conversation_messages m join conversations c on c.id = m.conversation_id
         where c.aide_id = aide and c.user_id = target
         order by m.id;
end
$$;

create function support_files(grant_id uuid, aide uuid)
returns table (path text, size_bytes bigint, content_type text, updated_at timestamptz)
language plpgsql volatile security definer
set search_path = pg_catalog, public
as $$
declare
    target uuid := support_grant_target(grant_id);
begin
    if not exists (select 1 from aides a where a.id = aide and a.user_id = target) then
        raise exception 'that aide is not the account''s' using errcode = 'no_data_found';
    end if;
    perform support_record(target, grant_id, 'support.read',
                           jsonb_build_object('what', 'files', 'aide', aide));
    return query
        select f.path, f.size_bytes, f.content_type, f.updated_at
          from workspace_files f where f.aide_id = aide and f.user_id = target
         order by f.path;
end
$$;

revoke all on function support_open_grant(text, text, text, integer, boolean) from public;
revoke all on function support_close_grant(uuid) from public;
revoke all on function support_account(uuid) from public;
revoke all on function support_aides(uuid) from public;
revoke all on function support_conversation(uuid, uuid) from public;
revoke all on function support_files(uuid, uuid) from public;
grant execute on function support_open_grant(text, text, text, integer, boolean) to aide_support;
grant execute on function support_close_grant(uuid) to aide_support;
grant execute on function support_account(uuid) to aide_support;
grant execute on function support_aides(uuid) to aide_support;
grant execute on function support_conversation(uuid, uuid) to aide_support;
grant execute on function support_files(uuid, uuid) to aide_support;
