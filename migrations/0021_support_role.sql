-- run-as: admin
--
-- aide_support: staff access to a person's data, only with a grant. It holds no table privileges
-- at all, only EXECUTE on the security-definer functions of 0022, each of which checks an
-- unexpired grant and writes the audit row in the same statement as the read. No login; the
-- server enters it per transaction, after checking the operator's session (like aide_user).
do $$
begin
    if not exists (select 1 from pg_roles where rolname = 'aide_support') then
        create role aide_support nologin;
    end if;
end
$$;

grant aide_support to aide_app;
grant usage on schema public to aide_support;
