-- run-as: admin
--
-- The roles AIde uses. Roles belong to the whole PostgreSQL cluster rather than to one database,
-- so this migration creates each one only when it is missing (several databases, such as the test
-- databases, share them).
--
--   aide_owner   owns the schema and runs the migrations after this one. No login.
--   aide_user    user scope: every table it may touch has RLS forced and policies keyed on
--                app.user_id. Not a superuser, not an owner, no BYPASSRLS. No login.
--   aide_system  system scope: sign-in, webhooks and background work, with only the grants those
--                jobs need (see 0002). No login.
--   aide_app     the login role the server connects as. It holds no table privileges of its own
--                and does not inherit its roles' privileges (NOINHERIT): each transaction starts
--                with SET LOCAL ROLE aide_user or aide_system, so a query outside a scope fails.
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'aide_owner') then
        create role aide_owner nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'aide_user') then
        create role aide_user nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'aide_system') then
        create role aide_system nologin;
    end if;
    if not exists (select 1 from pg_roles where rolname = 'aide_app') then
        create role aide_app login noinherit;
    end if;
end
$$;

grant aide_user, aide_system to aide_app;

-- The migration runner switches to aide_owner for every later migration, so the objects they
-- create belong to aide_owner rather than to whoever runs the migrations.
grant aide_owner to current_user;

grant usage, create on schema public to aide_owner;
grant usage on schema public to aide_user, aide_system;
revoke create on schema public from public;
