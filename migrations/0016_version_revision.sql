-- Which workspace revision each published version was made from, so history can show them side
-- by side. Not a foreign key: revisions are pruned, versions are kept. Null for versions
-- published before revisions existed. Runs as aide_owner.

alter table published_versions
    add column revision integer constraint published_versions_revision_check check (revision >= 1);
