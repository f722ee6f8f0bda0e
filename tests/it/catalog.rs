//! Checks over the catalog, so a new table without RLS, without policies, or with a TRUNCATE
//! grant fails the suite, and any change to a role's privileges shows up as a snapshot diff.

use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::support::TestDb;

const RUNTIME_ROLES: [&str; 3] = ["aide_app", "aide_user", "aide_system"];

#[tokio::test]
async fn every_table_has_row_level_security_enabled_and_forced() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let tables: Vec<(String, bool, bool, String)> = conn
        .query(
            "select c.relname::text, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner)::text
             from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname = 'public' and c.relkind in ('r', 'p')
             order by 1",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert!(
        tables.len() >= 8,
        "expected the schema's tables, found {tables:?}"
    );
    for (table, enabled, forced, owner) in &tables {
        assert!(enabled, "{table}: row-level security is not enabled");
        assert!(forced, "{table}: row-level security is not forced");
        assert_eq!(owner, "aide_owner", "{table}: must belong to aide_owner");
    }
}

#[tokio::test]
async fn every_table_a_runtime_role_may_touch_has_a_policy_for_it() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let missing: Vec<(String, String)> = conn
        .query(
            "select c.relname::text, r.rolname::text
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         cross join pg_roles r
         where n.nspname = 'public' and c.relkind in ('r', 'p')
           and r.rolname in ('aide_user', 'aide_system')
           and (has_table_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE, DELETE')
                or has_any_column_privilege(r.oid, c.oid, 'SELECT, INSERT, UPDATE'))
           and not exists (
               select 1 from pg_policy p
               where p.polrelid = c.oid and (r.oid = any (p.polroles) or 0 = any (p.polroles)))
         order by 1, 2",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        missing.is_empty(),
        "tables granted without a policy: {missing:?}"
    );
}

#[tokio::test]
async fn no_role_but_the_owner_can_truncate_or_bypass_rls() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let truncaters: Vec<(String, String)> = conn
        .query(
            "select c.relname::text, r.rolname::text
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         cross join pg_roles r
         where n.nspname = 'public' and c.relkind in ('r', 'p')
           and not r.rolsuper and r.rolname <> 'aide_owner'
           and has_table_privilege(r.oid, c.oid, 'TRUNCATE')
         order by 1, 2",
            &[],
        )
        .await
        .expect("catalog")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(truncaters.is_empty(), "TRUNCATE granted: {truncaters:?}");

    let roles: Vec<(String, bool, bool, bool, bool, bool, bool)> = conn

        .query(

            "select rolname::text, rolsuper, rolbypassrls, rolcanlogin, rolinherit, rolcreaterole, rolcreatedb
             from pg_roles where rolname like 'aide\\_%' order by 1",

            &[],

        )

        .await

        .expect("roles")

        .iter()

        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5), r.get(6)))

        .collect();
    let expected = vec![
        // name, super, bypassrls, login, inherit, createrole, createdb
        (
            "aide_app".to_string(),
            false,
            false,
            true,
            false,
            false,
            false,
        ),
        (
            "aide_owner".to_string(),
            false,
            false,
            false,
            true,
            false,
            false,
        ),
        (
            "aide_support".to_string(),
            false,
            false,
            false,
            true,
            false,
            false,
        ),
        (
            "aide_system".to_string(),
            false,
            false,
            false,
            true,
            false,
            false,
        ),
        (
            "aide_user".to_string(),
            false,
            false,
            false,
            true,
            false,
            false,
        ),
    ];
    assert_eq!(roles, expected);

    // The login role reaches the scope roles only by SET ROLE, and nothing else.
    let memberships: Vec<(String, String)> = conn
        .query(
            "select pg_get_userbyid(roleid)::text, pg_get_userbyid(member)::text
         from pg_auth_members
         where pg_get_userbyid(member) in ('aide_app', 'aide_user', 'aide_system', 'aide_owner')
         order by 1, 2",
            &[],
        )
        .await
        .expect("memberships")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        memberships,
        vec![
            ("aide_support".to_string(), "aide_app".to_string()),
            ("aide_system".to_string(), "aide_app".to_string()),
            ("aide_user".to_string(), "aide_app".to_string()),
        ]
    );
}

#[tokio::test]
async fn the_login_role_holds_no_privileges_of_its_own() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let held: Vec<String> = column(
        &conn,
        "select c.relname::text
         from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname in ('public', 'aide_meta') and c.relkind in ('r', 'p', 'v', 'S')
           and (has_table_privilege('aide_app', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                or has_any_column_privilege('aide_app', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))",
        &[],
    )
    .await
    .expect("catalog");
    assert!(held.is_empty(), "aide_app holds privileges on {held:?}");

    // The migration bookkeeping is for the administrator alone.
    let meta: Vec<String> = column(
        &conn,
        "select r.rolname::text from pg_roles r
         where r.rolname like 'aide\\_%' and has_schema_privilege(r.oid, 'aide_meta', 'USAGE')",
        &[],
    )
    .await
    .expect("schema privileges");
    assert!(meta.is_empty(), "roles with access to aide_meta: {meta:?}");
}

/// Every table and column privilege the runtime roles hold, and every policy. A change here is a
/// security decision: update the snapshot deliberately.
#[tokio::test]
async fn privilege_and_policy_snapshot() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let roles: &[&str] = &RUNTIME_ROLES;
    let table_grants: Vec<String> = column(
        &conn,
        "select format('%s %s: %s', a.grantee::regrole, c.relname,
                       string_agg(a.privilege_type, ', ' order by a.privilege_type))
         from pg_class c
         join pg_namespace n on n.oid = c.relnamespace
         cross join lateral aclexplode(c.relacl) a
         where n.nspname = 'public' and a.grantee in (select oid from pg_roles where rolname = any ($1))
         group by a.grantee, c.relname
         order by 1",
        &[&roles],
    )
    .await
    .expect("table grants");
    let column_grants: Vec<String> = column(
        &conn,
        "select format('%s %s.%s: %s', x.grantee::regrole, c.relname, a.attname,
                       string_agg(x.privilege_type, ', ' order by x.privilege_type))
         from pg_attribute a
         join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
         cross join lateral aclexplode(a.attacl) x
         where n.nspname = 'public' and x.grantee in (select oid from pg_roles where rolname = any ($1))
         group by x.grantee, c.relname, a.attname
         order by 1",
        &[&roles],
    )
    .await
    .expect("column grants");
    let policies: Vec<String> = column(
        &conn,
        "select format('%s %s: %s to %s', tablename, policyname, cmd, array_to_string(roles, ','))
         from pg_policies where schemaname = 'public' order by tablename, policyname",
        &[],
    )
    .await
    .expect("policies");

    let expected_table_grants = [
        "aide_system account_deletion_codes: DELETE, INSERT, SELECT, UPDATE",
        "aide_system account_exports: SELECT",
        "aide_system ai_turns: SELECT",
        "aide_system aides: SELECT",
        "aide_system alert_state: INSERT, SELECT, UPDATE",
        "aide_system audit_log: INSERT",
        "aide_system billing_sync_tickets: USAGE",
        "aide_system email_outbox: DELETE, INSERT, SELECT, UPDATE",
        "aide_system magic_links: DELETE, INSERT, SELECT, UPDATE",
        "aide_system ops_counts: DELETE, INSERT, SELECT, UPDATE",
        "aide_system pending_blobs: DELETE, SELECT",
        "aide_system published_files: SELECT",
        "aide_system published_versions: SELECT",
        "aide_system rate_limits: DELETE, INSERT, SELECT, UPDATE",
        "aide_system sessions: DELETE, INSERT, SELECT, UPDATE",
        "aide_system storage_cleanup: DELETE, SELECT, UPDATE",
        "aide_system stripe_events: DELETE, INSERT, SELECT",
        "aide_system users: DELETE, INSERT, SELECT, UPDATE",
        "aide_system workspace_files: SELECT",
        "aide_system workspace_revision_files: SELECT",
        "aide_system workspace_revisions: SELECT",
        "aide_user account_exports: INSERT, SELECT",
        "aide_user ai_turns: INSERT, SELECT",
        "aide_user aides: DELETE, INSERT, SELECT",
        "aide_user audit_log: INSERT, SELECT",
        "aide_user conversation_messages: INSERT, SELECT",
        "aide_user conversations: DELETE, INSERT, SELECT",
        "aide_user pending_blobs: DELETE, INSERT, SELECT",
        "aide_user published_files: INSERT, SELECT",
        "aide_user published_versions: INSERT, SELECT",
        "aide_user users: SELECT",
        "aide_user workspace_files: DELETE, INSERT, SELECT",
        "aide_user workspace_revision_files: SELECT",
        "aide_user workspace_revisions: SELECT",
    ];
    let expected_column_grants = [
        "aide_system account_exports.error: UPDATE",
        "aide_system account_exports.finished_at: UPDATE",
        "aide_system account_exports.status: UPDATE",
        "aide_system ai_turns.counted: UPDATE",
        "aide_system ai_turns.duration_ms: UPDATE",
        "aide_system ai_turns.error_code: UPDATE",
        "aide_system ai_turns.finished_at: UPDATE",
        "aide_system ai_turns.status: UPDATE",
        "aide_system support_grants.category: SELECT",
        "aide_system support_grants.closed_at: SELECT",
        "aide_system support_grants.end_posted: SELECT, UPDATE",
        "aide_system support_grants.expires_at: SELECT",
        "aide_system support_grants.id: SELECT",
        "aide_system support_grants.operator_email: SELECT",
        "aide_user account_exports.error: UPDATE",
        "aide_user account_exports.expires_at: UPDATE",
        "aide_user account_exports.file_count: UPDATE",
        "aide_user account_exports.finished_at: UPDATE",
        "aide_user account_exports.sha256: UPDATE",
        "aide_user account_exports.size_bytes: UPDATE",
        "aide_user account_exports.status: UPDATE",
        "aide_user ai_turns.assistant_message_id: UPDATE",
        "aide_user ai_turns.cache_read_tokens: UPDATE",
        "aide_user ai_turns.cache_write_tokens: UPDATE",
        "aide_user ai_turns.cost_micros: UPDATE",
        "aide_user ai_turns.counted: UPDATE",
        "aide_user ai_turns.duration_ms: UPDATE",
        "aide_user ai_turns.error_code: UPDATE",
        "aide_user ai_turns.finished_at: UPDATE",
        "aide_user ai_turns.first_event_ms: UPDATE",
        "aide_user ai_turns.input_tokens: UPDATE",
        "aide_user ai_turns.output_tokens: UPDATE",
        "aide_user ai_turns.provider_first_byte_ms: UPDATE",
        "aide_user ai_turns.provider_request_ids: UPDATE",
        "aide_user ai_turns.revision: UPDATE",
        "aide_user ai_turns.rounds: UPDATE",
        "aide_user ai_turns.status: UPDATE",
        "aide_user ai_turns.tool_calls_applied: UPDATE",
        "aide_user ai_turns.tool_calls_failed: UPDATE",
        "aide_user aides.requested_slug: UPDATE",
        "aide_user aides.slug: UPDATE",
        "aide_user aides.status: UPDATE",
        "aide_user aides.title: UPDATE",
        "aide_user conversations.updated_at: UPDATE",
        "aide_user users.name: UPDATE",
        "aide_user workspace_files.content_type: UPDATE",
        "aide_user workspace_files.sha256: UPDATE",
        "aide_user workspace_files.size_bytes: UPDATE",
    ];
    let expected_policies = [
        "account_deletion_codes account_deletion_codes_owner_all: ALL to aide_owner",
        "account_deletion_codes account_deletion_codes_system_all: ALL to aide_system",
        "account_exports account_exports_owner_all: ALL to aide_owner",
        "account_exports account_exports_system_select: SELECT to aide_system",
        "account_exports account_exports_system_update: UPDATE to aide_system",
        "account_exports account_exports_user_rows: ALL to aide_user",
        "ai_turns ai_turns_owner_all: ALL to aide_owner",
        "ai_turns ai_turns_system_select: SELECT to aide_system",
        "ai_turns ai_turns_system_update: UPDATE to aide_system",
        "ai_turns ai_turns_user_rows: ALL to aide_user",
        "aides aides_owner_all: ALL to aide_owner",
        "aides aides_system_select: SELECT to aide_system",
        "aides aides_user_rows: ALL to aide_user",
        "alert_state alert_state_owner_all: ALL to aide_owner",
        "alert_state alert_state_system_all: ALL to aide_system",
        "audit_log audit_log_owner_all: ALL to aide_owner",
        "audit_log audit_log_system_insert: INSERT to aide_system",
        "audit_log audit_log_user_insert: INSERT to aide_user",
        "audit_log audit_log_user_select: SELECT to aide_user",
        "conversation_messages conversation_messages_owner_all: ALL to aide_owner",
        "conversation_messages conversation_messages_user_rows: ALL to aide_user",
        "conversations conversations_owner_all: ALL to aide_owner",
        "conversations conversations_user_rows: ALL to aide_user",
        "email_outbox email_outbox_owner_all: ALL to aide_owner",
        "email_outbox email_outbox_system_all: ALL to aide_system",
        "magic_links magic_links_owner_all: ALL to aide_owner",
        "magic_links magic_links_system_all: ALL to aide_system",
        "operators operators_owner_all: ALL to aide_owner",
        "ops_counts ops_counts_owner_all: ALL to aide_owner",
        "ops_counts ops_counts_system_all: ALL to aide_system",
        "pending_blobs pending_blobs_owner_all: ALL to aide_owner",
        "pending_blobs pending_blobs_system_delete: DELETE to aide_system",
        "pending_blobs pending_blobs_system_select: SELECT to aide_system",
        "pending_blobs pending_blobs_user_rows: ALL to aide_user",
        "published_files published_files_owner_all: ALL to aide_owner",
        "published_files published_files_system_select: SELECT to aide_system",
        "published_files published_files_user_rows: ALL to aide_user",
        "published_versions published_versions_owner_all: ALL to aide_owner",
        "published_versions published_versions_system_select: SELECT to aide_system",
        "published_versions published_versions_user_rows: ALL to aide_user",
        "rate_limits rate_limits_owner_all: ALL to aide_owner",
        "rate_limits rate_limits_system_all: ALL to aide_system",
        "retired_slugs retired_slugs_owner_all: ALL to aide_owner",
        "sessions sessions_owner_all: ALL to aide_owner",
        "sessions sessions_system_all: ALL to aide_system",
        "storage_cleanup storage_cleanup_owner_all: ALL to aide_owner",
        "storage_cleanup storage_cleanup_system_all: ALL to aide_system",
        "stripe_events stripe_events_owner_all: ALL to aide_owner",
        "stripe_events stripe_events_system_all: ALL to aide_system",
        "support_grants support_grants_owner_all: ALL to aide_owner",
        "support_grants support_grants_system_select: SELECT to aide_system",
        "support_grants support_grants_system_update: UPDATE to aide_system",
        "users users_owner_all: ALL to aide_owner",
        "users users_self_select: SELECT to aide_user",
        "users users_self_update: UPDATE to aide_user",
        "users users_system_all: ALL to aide_system",
        "workspace_files workspace_files_owner_all: ALL to aide_owner",
        "workspace_files workspace_files_system_select: SELECT to aide_system",
        "workspace_files workspace_files_user_rows: ALL to aide_user",
        "workspace_revision_files workspace_revision_files_owner_all: ALL to aide_owner",
        "workspace_revision_files workspace_revision_files_system_select: SELECT to aide_system",
        "workspace_revision_files workspace_revision_files_user_select: SELECT to aide_user",
        "workspace_revisions workspace_revisions_owner_all: ALL to aide_owner",
        "workspace_revisions workspace_revisions_system_select: SELECT to aide_system",
        "workspace_revisions workspace_revisions_user_select: SELECT to aide_user",
    ];
    assert_eq!(table_grants, expected_table_grants);
    assert_eq!(column_grants, expected_column_grants);
    assert_eq!(policies, expected_policies);
}

/// Every user-scope policy compares against current_app_user_id(), the fail-closed reading of
/// app.user_id, rather than reading the setting itself.
#[tokio::test]
async fn user_policies_use_the_fail_closed_user_id() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let policies: Vec<(String, String, String)> = conn
        .query(
            "select policyname::text, coalesce(qual, ''), coalesce(with_check, '')
         from pg_policies where schemaname = 'public' and 'aide_user' = any (roles)",
            &[],
        )
        .await
        .expect("policies")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert!(!policies.is_empty());
    for (name, using, check) in policies {
        for expr in [&using, &check].into_iter().filter(|e| !e.is_empty()) {
            assert!(
                expr.contains("current_app_user_id()") && !expr.contains("current_setting"),
                "{name}: {expr}"
            );
        }
    }
}

/// Functions that run with their owner's rights are few, pinned, owned by aide_owner, fix their
/// search_path, and are executable only by the role they serve.
#[tokio::test]
async fn security_definer_functions_are_pinned_and_narrow() {
    let t = TestDb::new().await;
    let conn = t.admin_conn().await;
    let functions: Vec<(String, String, bool, Vec<String>)> = conn
        .query(
            "select p.proname::text, pg_get_userbyid(p.proowner)::text,
                    coalesce(array_to_string(p.proconfig, ',') like '%search_path=%', false),
                    array(select r.rolname::text from pg_roles r
                          where r.rolname like 'aide\\_%' and has_function_privilege(r.oid, p.oid, 'EXECUTE')
                          order by 1)
             from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             where n.nspname = 'public' and p.prosecdef
             order by 1",
            &[],
        )
        .await
        .expect("functions")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        functions,
        vec![
            (
                "aides_guard_slugs".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "aides_queue_storage_cleanup".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "anonymise_audit".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_system".to_string()],
            ),
            (
                "consume_turn".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_user".to_string()],
            ),
            (
                "conversation_messages_touch_conversation".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "ops_digest".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_system".to_string()],
            ),
            (
                "pending_blobs_queue_blob_cleanup".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "queue_blob_cleanup".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "record_revision".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_user".to_string()],
            ),
            (
                "refund_turn".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_user".to_string()],
            ),
            (
                "support_account".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_aides".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_close_grant".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_conversation".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_files".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_grant_target".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "support_open_grant".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string(), "aide_support".to_string()],
            ),
            (
                "support_operator".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "support_record".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "workspace_files_queue_blob_cleanup".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
            (
                "workspace_revision_files_queue_blob_cleanup".to_string(),
                "aide_owner".to_string(),
                true,
                vec!["aide_owner".to_string()],
            ),
        ]
    );
    let public: bool = conn
        .query_one(
            "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a
                        where p.proname = 'consume_turn' and a.grantee = 0)",
            &[],
        )
        .await
        .expect("acl")
        .get(0);
    assert!(!public, "PUBLIC must not execute consume_turn");
    for function in ["record_revision", "refund_turn"] {
        let public: bool = conn
            .query_one(
                "select exists (select 1 from pg_proc p, aclexplode(p.proacl) a
                            where p.proname = $1 and a.grantee = 0)",
                &[&function],
            )
            .await
            .expect("acl")
            .get(0);
        assert!(!public, "PUBLIC must not execute {function}");
    }
}

/// The first column of every row a catalog query returns.
async fn column(
    conn: &Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(conn
        .query(sql, params)
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}
