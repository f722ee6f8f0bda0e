-- Slugs that cannot change hands. Runs as aide_owner.
--
-- A page's address is shared and bookmarked, and its version URLs are called permanent. So once
-- an aide has been published under a slug, renaming or deleting it does not free that slug for
-- anyone else: it is kept in retired_slugs for its owner, who may take it back for any of their
-- aides. A retired slug whose owner deleted their account stays retired for good.
--
-- A slug chosen for an aide that has never been published is only a request (requested_slug):
-- it holds nothing and so tells nobody else anything; it becomes the aide's slug when the aide
-- is first published, or is refused then if it was taken meanwhile.

alter table aides add column requested_slug text
    constraint aides_requested_slug_format check (
        requested_slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and length(requested_slug) between 3 and 100
    );

grant update (requested_slug) on aides to aide_user;

-- Slugs held by aides that were never published become requests.
update aides a set requested_slug = a.slug, slug = null
where a.slug is not null
  and not exists (select 1 from published_versions v where v.aide_id = a.id and v.user_id = a.user_id);

create table retired_slugs (
    slug text primary key,
    user_id uuid references users (id) on delete set null,
    retired_at timestamptz not null default now()
);

create index retired_slugs_user_id on retired_slugs (user_id);

alter table retired_slugs enable row level security;
alter table retired_slugs force row level security;

create policy retired_slugs_owner_all on retired_slugs to aide_owner using (true) with check (true);

-- Guards every slug an aide takes, and retires every slug a published aide gives up. With the
-- owner's rights: no runtime role reads or writes retired_slugs directly.
create function aides_guard_slugs() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    -- Two transactions taking and giving up one slug at once must see each other's rows: each
    -- first takes a lock per slug it touches, in a fixed order, so the checks below run on
    -- committed state.
    perform pg_advisory_xact_lock(hashtext('slug:' || s))
    from (select distinct s from unnest(array[
              case when tg_op <> 'DELETE' then new.slug end,
              case when tg_op <> 'INSERT' then old.slug end]) as s
          where s is not null order by s) as slugs;
    if tg_op in ('INSERT', 'UPDATE') and new.slug is not null
       and (tg_op = 'INSERT' or new.slug is distinct from old.slug) then
        if exists (select 1 from retired_slugs r
                   where r.slug = new.slug and r.user_id is distinct from new.user_id) then
            -- Reported as the slug's own unique constraint, which the app maps to SLUG_TAKEN.
            raise exception 'slug % is retired', new.slug
                using errcode = 'unique_violation', constraint = 'aides_slug_key';
        end if;
        delete from retired_slugs where slug = new.slug and user_id = new.user_id;
    end if;
    if tg_op in ('UPDATE', 'DELETE') and old.slug is not null
       and (tg_op = 'DELETE' or new.slug is distinct from old.slug)
       and exists (select 1 from published_versions v
                   where v.aide_id = old.id and v.user_id = old.user_id) then
        -- When the whole account is being deleted its row is already gone: retired for good.
        insert into retired_slugs (slug, user_id)
            values (old.slug, (select u.id from users u where u.id = old.user_id))
            on conflict (slug) do update set user_id = excluded.user_id, retired_at = now();
    end if;
    if tg_op = 'DELETE' then
        return old;
    end if;
    return new;
end
$$;

revoke all on function aides_guard_slugs() from public;

-- BEFORE, so a deleted aide's versions (removed by the cascade after the row) are still there.
create trigger aides_guard_slugs before insert or update of slug or delete on aides
    for each row execute function aides_guard_slugs();
