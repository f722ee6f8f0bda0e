-- Tells every server process when a public page may have changed, so each can keep the answer to
-- "is this page live, and what is in it" in memory. Notifications are sent on commit; the
-- payload is the slug, or '*' for "forget everything". Runs as aide_owner.

create function notify_page_change() returns trigger
language plpgsql
as $$
begin
    if tg_table_name = 'aides' then
        if old.slug is not null then
            perform pg_notify('aide_pages', old.slug);
        end if;
        if tg_op = 'UPDATE' and new.slug is not null and new.slug is distinct from old.slug then
            perform pg_notify('aide_pages', new.slug);
        end if;
    elsif tg_table_name = 'published_versions' then
        perform pg_notify('aide_pages',
                          coalesce((select slug from aides where id = new.aide_id), '*'));
    else
        -- A tier change (the footer) touches all of a user's pages: forget everything.
        perform pg_notify('aide_pages', '*');
    end if;
    return null;
end
$$;

create trigger aides_notify_page_change after update or delete on aides
    for each row execute function notify_page_change();
create trigger published_versions_notify_page_change after insert on published_versions
    for each row execute function notify_page_change();
create trigger users_notify_page_change after update of tier on users
    for each row when (old.tier is distinct from new.tier) execute function notify_page_change();
