-- Opening a request's user scope in one statement. Runs as aide_owner.

-- Checks the session as aide_system (assert_session_live raises SQLSTATE 28000 unless it is live),
-- then becomes aide_user with app.user_id set, every setting transaction-local: what three
-- statements did, in one. Invoker's rights, so each step runs with the grants of the role it has
-- switched to; only the login role may call it, at the start of a transaction.
create function enter_user_scope(session_id uuid, owner uuid) returns void
language plpgsql volatile
as $$
begin
    perform set_config('role', 'aide_system', true);
    perform assert_session_live(session_id, owner);
    perform set_config('role', 'aide_user', true);
    perform set_config('app.user_id', owner::text, true);
end
$$;

revoke all on function enter_user_scope(uuid, uuid) from public;
grant execute on function enter_user_scope(uuid, uuid) to aide_app;
