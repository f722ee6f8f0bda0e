-- A bound on how much text one conversation keeps. Runs as aide_owner.
--
-- Each conversation counts the bytes of its messages' content, kept by the trigger that already
-- touches the conversation on every new message; appending checks the count under the
-- conversation's row lock. The trigger now runs with the owner's rights, so the count is a column
-- no runtime role may write.

alter table conversations add column content_bytes bigint not null default 0
    constraint conversations_content_bytes_check check (content_bytes >= 0);

update conversations c set content_bytes = coalesce(
    (select sum(octet_length(m.content)) from conversation_messages m where m.conversation_id = c.id),
    0);

create or replace function conversation_messages_touch_conversation() returns trigger
language plpgsql
security definer
set search_path = pg_catalog, public
as $$
begin
    update conversations
    set updated_at = now(), content_bytes = content_bytes + octet_length(new.content)
    where id = new.conversation_id;
    return null;
end
$$;

revoke all on function conversation_messages_touch_conversation() from public;

