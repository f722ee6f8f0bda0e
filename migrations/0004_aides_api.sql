-- The aides API: turn accounting, and indexes for the lookups it makes. Runs as aide_owner.

-- Counts one conversation turn for the current user, atomically: the weekly window restarts
-- when it is more than 7 days old, and a free user at `free_limit` gets no row back (nothing
-- changes). Pro users are never refused. Concurrent calls queue on the user's row, so exactly
-- `free_limit` of any number of simultaneous calls succeed.
--
-- Users may not write their own turn columns (they hold only UPDATE (name) on users): this
-- function, running as the owner, is the one way to change them from user scope, and it only
-- ever touches the row of current_app_user_id(). It runs inside the caller's transaction, so a
-- turn is counted only if the message that used it is stored.
create function consume_turn(free_limit integer)
returns table (turn_count integer, turn_week_start timestamptz)
language sql
security definer
set search_path = pg_catalog, public
as $$
    update users u
    set turn_count = case when u.turn_week_start <= now() - interval '7 days' then 1
                          else u.turn_count + 1 end,
        turn_week_start = case when u.turn_week_start <= now() - interval '7 days' then now()
                               else u.turn_week_start end
    where u.id = current_app_user_id()
      and (u.tier = 'pro'
           or u.turn_week_start <= now() - interval '7 days'
           or u.turn_count < free_limit)
    returning u.turn_count, u.turn_week_start
$$;

revoke all on function consume_turn(integer) from public;
grant execute on function consume_turn(integer) to aide_user;

-- The caller's aides filtered by status, most recently updated first.
create index aides_user_id_status_updated_at on aides (user_id, status, updated_at desc, id desc);
