-- Checking a session inside the transaction that serves the request. Runs as aide_owner.

-- Raises SQLSTATE 28000 (invalid authorization) unless the session is live: not revoked, not
-- expired, and the given user's. The server calls it as aide_system at the start of a request's
-- transaction, then switches to aide_user, so the check and the request share one round trip and
-- one snapshot. Invoker's rights: aide_system reads sessions under its own grant.
create function assert_session_live(session_id uuid, owner uuid) returns void
language plpgsql stable
as $$
begin
    if not exists (
        select 1 from sessions
        where id = session_id and user_id = owner and revoked_at is null and expires_at > now()
    ) then
        raise exception 'session is not live' using errcode = 'invalid_authorization_specification';
    end if;
end
$$;

revoke all on function assert_session_live(uuid, uuid) from public;
grant execute on function assert_session_live(uuid, uuid) to aide_system;
