//! Cross-user isolation on every table, CRUD within one's own rows, the columns a user may
//! change, and the append-only audit log.

use aide::db::ToSql;
use uuid::Uuid;

use crate::support::{
    INSUFFICIENT_PRIVILEGE, Owned, Scoped, TestDb, exec, scalar, seed_user, sqlstate,
};

/// SQLSTATE 23503: foreign key violation.
const FOREIGN_KEY_VIOLATION: &str = "23503";

/// Runs `sql` with `binds` in a savepoint of `tx`, returning its SQLSTATE, or None on success.
async fn attempt(tx: &impl Scoped, sql: &str, binds: &[Uuid]) -> Option<String> {
    tx.run("savepoint attempt", &[]).await.expect("savepoint");
    let params: Vec<&(dyn ToSql + Sync)> = binds
        .iter()
        .map(|bind| bind as &(dyn ToSql + Sync))
        .collect();
    let result = tx.run(sql, &params).await;
    tx.run("rollback to savepoint attempt", &[])
        .await
        .expect("rollback to savepoint");
    tx.run("release savepoint attempt", &[])
        .await
        .expect("release savepoint");
    match result {
        Ok(_) => None,
        Err(e) => Some(sqlstate::<()>(Err(e))),
    }
}

/// A count of rows in `table` matching `id_column = id`, seen from `tx`.
async fn visible(tx: &impl Scoped, table: &str, id_column: &str, id: impl ToString) -> i64 {
    scalar(
        tx,
        &format!("select count(*) from {table} where {id_column}::text = $1"),
        &[&id.to_string()],
    )
    .await
    .expect("count")
}

/// Every row A owns, read in A's own scope: used to prove B changed nothing.
async fn snapshot(t: &TestDb, a: &Owned) -> serde_json::Value {
    let tx = t.db.user(a.user).await.expect("user scope");
    scalar(
        &tx,
        "select jsonb_build_object(
            'user', (select to_jsonb(u) - 'updated_at' from users u),
            'aides', (select jsonb_agg(to_jsonb(x) order by id) from aides x),
            'conversations', (select jsonb_agg(to_jsonb(x) order by id) from conversations x),
            'messages', (select jsonb_agg(to_jsonb(x) order by id) from conversation_messages x),
            'versions', (select jsonb_agg(to_jsonb(x) order by id) from published_versions x),
            'audit', (select jsonb_agg(to_jsonb(x) order by id) from audit_log x),
            'files', (select jsonb_agg(to_jsonb(x) order by path) from workspace_files x),
            'published', (select jsonb_agg(to_jsonb(x) order by version, path) from published_files x))",
        &[],
    )
    .await
    .expect("snapshot")
}

#[tokio::test]
async fn another_user_can_neither_see_nor_change_nor_create_rows() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    let before = snapshot(&t, &a).await;

    let tx = t.db.user(b.user).await.expect("B's scope");

    // SELECT: none of A's rows, in any table; B's own are there.
    let probes: [(&str, &str, String, String); 6] = [
        ("users", "id", a.user.to_string(), b.user.to_string()),
        ("aides", "id", a.aide.to_string(), b.aide.to_string()),
        (
            "conversations",
            "id",
            a.conversation.to_string(),
            b.conversation.to_string(),
        ),
        (
            "conversation_messages",
            "id",
            a.message.to_string(),
            b.message.to_string(),
        ),
        (
            "published_versions",
            "id",
            a.version.to_string(),
            b.version.to_string(),
        ),
        ("audit_log", "id", a.audit.to_string(), b.audit.to_string()),
    ];
    for (table, column, theirs, mine) in &probes {
        assert_eq!(
            visible(&tx, table, column, theirs).await,
            0,
            "B sees A's {table} row"
        );
        assert_eq!(
            visible(&tx, table, column, mine).await,
            1,
            "B sees its own {table} row"
        );
    }

    // UPDATE and DELETE of A's rows touch nothing. (`returning 1` reads no column, so it adds
    // no policy or grant to the statement; exec counts the rows it returns.)
    let changes = [
        (
            "update users set name = 'stolen' where id = $1 returning 1",
            a.user.0,
        ),
        (
            "update aides set title = 'stolen' where id = $1 returning 1",
            a.aide,
        ),
        (
            "update aides set status = 'archived' where id = $1 returning 1",
            a.aide,
        ),
        (
            "update conversations set updated_at = now() where id = $1 returning 1",
            a.conversation,
        ),
        ("delete from aides where id = $1 returning 1", a.aide),
        (
            "delete from conversations where id = $1 returning 1",
            a.conversation,
        ),
    ];
    for (sql, id) in changes {
        let done = exec(&tx, sql, &[&id])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(done, 0, "{sql}");
    }

    // Messages, versions and accounts cannot be updated or deleted from user scope at all (no
    // grant), so A's are as safe as B's own.
    let refused = [
        format!(
            "update conversation_messages set content = 'x' where id = {}",
            a.message
        ),
        format!("delete from conversation_messages where id = {}", a.message),
        format!(
            "update published_versions set r2_key = 'x' where id = '{}'",
            a.version
        ),
        format!("delete from published_versions where id = '{}'", a.version),
        format!("delete from users where id = '{}'", a.user),
        format!("delete from audit_log where id = {}", a.audit),
    ];
    for sql in &refused {
        assert_eq!(
            attempt(&tx, sql, &[]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }

    // Workspace files: none of A's visible, changeable or removable.
    let files: i64 = scalar(
        &tx,
        "select count(*) from workspace_files where aide_id = $1",
        &[&a.aide],
    )
    .await
    .expect("count");
    assert_eq!(files, 0);
    for sql in [
        "update workspace_files set size_bytes = 0 where aide_id = $1 returning 1",
        "delete from workspace_files where aide_id = $1 returning 1",
    ] {
        let done = exec(&tx, sql, &[&a.aide]).await.expect(sql);
        assert_eq!(done, 0, "{sql}");
    }
    let plant =
        "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
                 values ($1, $2, 'index.html', 1, 'text/html', sha256('x'::bytea))";
    assert_eq!(
        attempt(&tx, plant, &[a.aide, a.user.0]).await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        attempt(&tx, plant, &[a.aide, b.user.0]).await.as_deref(),
        Some(FOREIGN_KEY_VIOLATION),
        "no unique-key oracle: the key includes the owner"
    );

    // Pending blobs: none of A's visible or removable, and none can be planted on A's aide.
    let pending: i64 = scalar(
        &tx,
        "select count(*) from pending_blobs where aide_id = $1",
        &[&a.aide],
    )
    .await
    .expect("count");
    assert_eq!(pending, 0);
    let done = exec(
        &tx,
        "delete from pending_blobs where aide_id = $1 returning 1",
        &[&a.aide],
    )
    .await
    .expect("delete");
    assert_eq!(done, 0);
    let plant =
        "insert into pending_blobs (aide_id, user_id, sha256) values ($1, $2, sha256('x'::bytea))";
    assert_eq!(
        attempt(&tx, plant, &[a.aide, a.user.0]).await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        attempt(&tx, plant, &[a.aide, b.user.0]).await.as_deref(),
        Some(FOREIGN_KEY_VIOLATION)
    );

    // Published files: invisible, and immutable for everyone in user scope.
    let published: i64 = scalar(
        &tx,
        "select count(*) from published_files where aide_id = $1",
        &[&a.aide],
    )
    .await
    .expect("count");
    assert_eq!(published, 0);
    for sql in [
        format!(
            "update published_files set size_bytes = 0 where aide_id = '{}'",
            a.aide
        ),
        format!("delete from published_files where aide_id = '{}'", a.aide),
    ] {
        assert_eq!(
            attempt(&tx, &sql, &[]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }
    let plant_version = "insert into published_files (aide_id, user_id, version, path, size_bytes, content_type, sha256)
                         values ($1, $2, 1, 'evil.html', 1, 'text/html', sha256('x'::bytea))";
    assert_eq!(
        attempt(&tx, plant_version, &[a.aide, a.user.0])
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        attempt(&tx, plant_version, &[a.aide, b.user.0])
            .await
            .as_deref(),
        Some(FOREIGN_KEY_VIOLATION)
    );

    // INSERT of rows belonging to A is refused by the policy's check.
    for sql in [
        "insert into aides (user_id, title) values ($1, 'planted')",
        "insert into audit_log (user_id, action, resource_type) values ($1, 'planted', 'aide')",
    ] {
        assert_eq!(
            attempt(&tx, sql, &[a.user.0]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }
    // Children of A's aide: with A's user_id the policy refuses; with B's own user_id the
    // composite foreign key finds no such (aide, owner) pair.
    let child_inserts = [
        "insert into conversations (aide_id, user_id) values ($1, $2)",
        // Version 1 exists for A's aide: the attempt must not learn that from a unique violation.
        "insert into published_versions (aide_id, user_id, version, r2_key, size_bytes)
         values ($1, $2, 1, 'k', 1)",
    ];
    for sql in child_inserts {
        assert_eq!(
            attempt(&tx, sql, &[a.aide, a.user.0]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql} as A"
        );
        assert_eq!(
            attempt(&tx, sql, &[a.aide, b.user.0]).await.as_deref(),
            Some(FOREIGN_KEY_VIOLATION),
            "{sql} as B"
        );
    }
    let message = "insert into conversation_messages (conversation_id, user_id, role, content)
                   values ($1, $2, 'user', 'planted')";
    assert_eq!(
        attempt(&tx, message, &[a.conversation, a.user.0])
            .await
            .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    assert_eq!(
        attempt(&tx, message, &[a.conversation, b.user.0])
            .await
            .as_deref(),
        Some(FOREIGN_KEY_VIOLATION)
    );
    // Users are created by system scope only.
    assert_eq!(
        attempt(
            &tx,
            "insert into users (id, email) values ($1, 'evil@example.com')",
            &[Uuid::new_v4()]
        )
        .await
        .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    // B cannot hand its own aide to A: user_id is not a column users may update.
    assert_eq!(
        attempt(
            &tx,
            "update aides set user_id = $1 where id = $2",
            &[a.user.0, b.aide]
        )
        .await
        .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    tx.commit().await.expect("commit B");

    assert_eq!(snapshot(&t, &a).await, before, "A's data must be unchanged");
}

#[tokio::test]
async fn sign_in_tables_are_system_scope_only() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;

    let sys = t.db.system().await.expect("system scope");
    exec(
        &sys,
        "insert into magic_links (email, token_hash, code_hash, expires_at)
         values ('a@example.com', sha256('token'::bytea), sha256('code'::bytea), now() + interval '15 minutes')",
        &[],
    )
    .await
    .expect("system inserts a magic link");
    exec(
        &sys,
        "insert into sessions (user_id, expires_at) values ($1, now() + interval '1 day')",
        &[&a.user.0],
    )
    .await
    .expect("system inserts a session");
    sys.commit().await.expect("commit");

    let tx = t.db.user(a.user).await.expect("user scope");
    for sql in [
        "select count(*) from magic_links",
        "update magic_links set consumed_at = now()",
        "delete from magic_links",
        "insert into magic_links (email, token_hash, code_hash, expires_at) values ('a@example.com', sha256('t2'::bytea), sha256('c'::bytea), now() + interval '1 minute')",
        "select count(*) from sessions",
        "update sessions set revoked_at = now()",
        "delete from sessions",
        "select count(*) from email_outbox",
        "delete from email_outbox",
        "select count(*) from rate_limits",
        "delete from rate_limits",
        "select count(*) from storage_cleanup",
        "delete from storage_cleanup",
        "select count(*) from retired_slugs",
        "delete from retired_slugs",
        "insert into retired_slugs (slug) values ('stolen-slug')",
    ] {
        assert_eq!(
            attempt(&tx, sql, &[]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }
    assert_eq!(
        attempt(
            &tx,
            "insert into sessions (user_id, expires_at) values ($1, now() + interval '1 day')",
            &[a.user.0]
        )
        .await
        .as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
}

#[tokio::test]
async fn crud_within_ones_own_rows() {
    let t = TestDb::new().await;
    let user = t.create_user("a@example.com").await;
    let tx = t.db.user(user).await.expect("user scope");

    let rows = tx
        .unregistered(
            "insert into aides (user_id) values ($1) returning id, title, status, r2_prefix",
            &[&user.0],
        )
        .await
        .expect("create");
    let (aide, title, status, prefix): (Uuid, String, String, String) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_eq!(title, "Untitled");
    assert_eq!(status, "draft");
    assert_eq!(prefix, format!("aides/{aide}/"));

    let rows = tx
        .unregistered(
            "select created_at, updated_at from aides where id = $1",
            &[&aide],
        )
        .await
        .expect("read");
    let (created, updated_before): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        (rows[0].get(0), rows[0].get(1));
    assert_eq!(created, updated_before);
    tx.commit().await.expect("commit");

    // updated_at is kept by the database.
    let tx = t.db.user(user).await.expect("user scope");
    let updated_after: chrono::DateTime<chrono::Utc> = scalar(
        &tx,
        "update aides set title = 'Trip plan', slug = 'trip-plan' where id = $1 returning updated_at",
        &[&aide],
    )
    .await
    .expect("update");
    assert!(updated_after > updated_before);

    let conversation: Uuid = scalar(
        &tx,
        "insert into conversations (aide_id, user_id) values ($1, $2) returning id",
        &[&aide, &user.0],
    )
    .await
    .expect("conversation");
    for content in ["first", "second"] {
        exec(
            &tx,
            "insert into conversation_messages (conversation_id, user_id, role, content)
             values ($1, $2, 'user', $3)",
            &[&conversation, &user.0, &content],
        )
        .await
        .expect("message");
    }
    let contents: Vec<String> = tx
        .unregistered(
            "select content from conversation_messages where conversation_id = $1 order by id",
            &[&conversation],
        )
        .await
        .expect("messages")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(contents, ["first", "second"]);

    // Versions are unique per aide.
    let insert_version =
        "insert into published_versions (aide_id, user_id, version, r2_key, size_bytes)
                          values ($1, $2, 1, 'k', 1)";
    assert_eq!(attempt(&tx, insert_version, &[aide, user.0]).await, None);
    exec(&tx, insert_version, &[&aide, &user.0])
        .await
        .expect("version 1");
    assert_eq!(
        attempt(&tx, insert_version, &[aide, user.0])
            .await
            .as_deref(),
        Some("23505"),
        "a second version 1 is a unique violation"
    );

    // Deleting the aide takes its conversation, messages and versions with it.
    let deleted = exec(&tx, "delete from aides where id = $1 returning 1", &[&aide])
        .await
        .expect("delete");
    assert_eq!(deleted, 1);
    let rows = tx
        .unregistered(
            "select (select count(*) from conversations), (select count(*) from conversation_messages),
                    (select count(*) from published_versions)",
            &[],
        )
        .await
        .expect("count");
    let left: (i64, i64, i64) = (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(left, (0, 0, 0));
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn a_user_changes_their_name_and_nothing_else_of_their_account() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let tx = t.db.user(a.user).await.expect("user scope");
    let done = exec(
        &tx,
        "update users set name = 'Ada' where id = $1 returning 1",
        &[&a.user.0],
    )
    .await
    .expect("rename");
    assert_eq!(done, 1);
    for sql in [
        "update users set tier = 'pro' where id = $1",
        "update users set turn_count = 0 where id = $1",
        "update users set turn_week_start = now() where id = $1",
        "update users set stripe_customer_id = 'cus_x' where id = $1",
        "update users set stripe_sub_id = 'sub_x' where id = $1",
        "update users set email = 'other@example.com' where id = $1",
        "delete from users where id = $1",
    ] {
        assert_eq!(
            attempt(&tx, sql, &[a.user.0]).await.as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{sql}"
        );
    }
}

#[tokio::test]
async fn emails_are_unique_whatever_their_case_and_stored_normalised() {
    let t = TestDb::new().await;
    t.create_user("ada@example.com").await;
    let sys = t.db.system().await.expect("system scope");
    assert_eq!(
        attempt(
            &sys,
            "insert into users (email) values ('ada@example.com')",
            &[]
        )
        .await
        .as_deref(),
        Some("23505")
    );
    // Anything not normalised is refused outright, so 'Ada@Example.com' can never sit beside it.
    let result = exec(
        &sys,
        "insert into users (email) values ('Ada@Example.com')",
        &[],
    )
    .await;
    assert_eq!(sqlstate(result), "23514");
}

#[tokio::test]
async fn the_audit_log_is_append_only_from_user_scope() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let tx = t.db.user(a.user).await.expect("user scope");
    for sql in [
        "update audit_log set action = 'forged' where id = $1",
        "update audit_log set user_id = null where id = $1",
        "delete from audit_log where id = $1",
    ] {
        tx.run("savepoint attempt", &[]).await.expect("savepoint");
        let result = exec(&tx, sql, &[&a.audit]).await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{sql}");
        tx.run("rollback to savepoint attempt", &[])
            .await
            .expect("rollback");
    }
    assert_eq!(
        attempt(&tx, "truncate audit_log", &[]).await.as_deref(),
        Some(INSUFFICIENT_PRIVILEGE)
    );
    let count: i64 = scalar(&tx, "select count(*) from audit_log", &[])
        .await
        .expect("count");
    assert_eq!(count, 1);
}

#[tokio::test]
async fn the_audit_log_is_append_only_from_system_scope() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let sys = t.db.system().await.expect("system scope");
    exec(
        &sys,
        "insert into audit_log (user_id, action, resource_type) values ($1, 'auth.sign_in', 'user')",
        &[&a.user.0],
    )
    .await
    .expect("system appends");
    for sql in [
        "update audit_log set action = 'forged'",
        "delete from audit_log",
        "truncate audit_log",
        "truncate audit_log cascade",
    ] {
        sys.run("savepoint attempt", &[]).await.expect("savepoint");
        let result = exec(&sys, sql, &[]).await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{sql}");
        sys.run("rollback to savepoint attempt", &[])
            .await
            .expect("rollback");
    }
    sys.commit().await.expect("commit");

    let tx = t.db.user(a.user).await.expect("user scope");
    let count: i64 = scalar(&tx, "select count(*) from audit_log", &[])
        .await
        .expect("count");
    assert_eq!(count, 2);
}

/// The trigger refuses changes even for the owner, which holds every grant: grants are not the
/// only wall.
#[tokio::test]
async fn the_append_only_trigger_holds_even_for_the_owner() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let owner = t.owner_conn().await;
    for sql in [
        "update audit_log set action = 'forged'",
        "update audit_log set user_id = null, action = 'forged'",
        "delete from audit_log",
        "truncate audit_log",
    ] {
        let result = owner.execute(sql, &[]).await;
        let Some(e) = result.as_ref().err().and_then(|e| e.as_db_error()) else {
            panic!("{sql} must fail in the database, got {result:?}");
        };
        assert_eq!(e.code().code(), INSUFFICIENT_PRIVILEGE, "{sql}");
        assert!(
            e.message().contains("append-only"),
            "{sql}: {}",
            e.message()
        );
    }
    let count: i64 = scalar(
        &owner,
        "select count(*) from audit_log where user_id = $1",
        &[&a.user.0],
    )
    .await
    .expect("count");
    assert_eq!(count, 1);
}

/// Deleting a user keeps their audit rows, detached: user_id becomes NULL and nothing else moves.
#[tokio::test]
async fn deleting_a_user_detaches_their_audit_rows_and_removes_their_data() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    let owner = t.owner_conn().await;
    let before: serde_json::Value = scalar(
        &owner,
        "select to_jsonb(x) - 'user_id' from audit_log x where id = $1",
        &[&a.audit],
    )
    .await
    .expect("before");

    let sys = t.db.system().await.expect("system scope");
    let done = exec(
        &sys,
        "delete from users where id = $1 returning 1",
        &[&a.user.0],
    )
    .await
    .expect("delete user");
    assert_eq!(done, 1);
    sys.commit().await.expect("commit");

    let row = owner
        .query_one(
            "select user_id, to_jsonb(x) - 'user_id' from audit_log x where id = $1",
            &[&a.audit],
        )
        .await
        .expect("after");
    let (user_id, after): (Option<Uuid>, serde_json::Value) = (row.get(0), row.get(1));
    assert_eq!(user_id, None);
    assert_eq!(after, before);

    let row = owner
        .query_one(
            "select (select count(*) from aides where user_id = $1),
                    (select count(*) from conversation_messages where user_id = $1),
                    (select count(*) from aides where user_id = $2)",
            &[&a.user.0, &b.user.0],
        )
        .await
        .expect("left");
    let left: (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(left, (0, 0, 1), "A's data is gone, B's is not");
}
