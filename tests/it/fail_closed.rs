//! With no user context (never set, empty, left over from an ended transaction, or malformed),
//! user scope sees nothing and changes nothing, and raises no error doing so.

use aide::db;
use tokio_postgres::Client;

use crate::support::{INSUFFICIENT_PRIVILEGE, Owned, TestDb, seed_user, sqlstate};

const USER_TABLES: [&str; 9] = [
    "users",
    "aides",
    "conversations",
    "conversation_messages",
    "published_versions",
    "audit_log",
    "workspace_files",
    "published_files",
    "pending_blobs",
];

/// Runs, inside an open transaction already switched to aide_user, every read and write a user
/// could attempt, and checks that none sees or touches a row.
async fn assert_sees_and_changes_nothing(conn: &Client, a: &Owned, label: &str) {
    for table in USER_TABLES {
        let count: i64 = conn
            .query_one(&format!("select count(*) from {table}"), &[])
            .await
            .unwrap_or_else(|e| {
                panic!("{label}: select from {table} raised {}", db::Error::from(e))
            })
            .get(0);
        assert_eq!(count, 0, "{label}: {table} must look empty");
    }

    let updates = [
        ("update users set name = 'x'", "users"),
        ("update aides set title = 'x'", "aides"),
        (
            "update conversations set updated_at = now()",
            "conversations",
        ),
    ];
    for (sql, table) in updates {
        let done = conn
            .execute(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{label}: update of {table} raised {}", db::Error::from(e)));
        assert_eq!(done, 0, "{label}: update of {table}");
    }
    for table in ["aides", "conversations", "pending_blobs"] {
        let done = conn
            .execute(&format!("delete from {table}"), &[])
            .await
            .unwrap_or_else(|e| {
                panic!("{label}: delete from {table} raised {}", db::Error::from(e))
            });
        assert_eq!(done, 0, "{label}: delete from {table}");
    }

    // Inserts are checked against the policy: a row for any user is refused. Each runs in a
    // savepoint so the transaction can go on.
    let inserts = [
        "insert into aides (user_id, title) values ($1, 'x')",
        "insert into audit_log (user_id, action, resource_type) values ($1, 'x', 'x')",
    ];
    for sql in inserts {
        conn.batch_execute("savepoint attempt")
            .await
            .expect("savepoint");
        let result = conn
            .execute(sql, &[&a.user.0])
            .await
            .map_err(db::Error::from);
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{label}: {sql}");
        conn.batch_execute("rollback to savepoint attempt; release savepoint attempt")
            .await
            .expect("rollback to savepoint");
    }
}

async fn begin_as_user_role(conn: &Client) {
    conn.batch_execute("begin; set local role aide_user")
        .await
        .expect("begin as aide_user");
}

async fn assert_untouched(t: &TestDb, a: &Owned) {
    let tx = t.db.user(a.user).await.expect("user scope");
    let rows = tx
        .unregistered(
            "select (select count(*) from aides), (select title from aides where id = $1),
                    (select count(*) from conversation_messages), (select count(*) from audit_log)",
            &[&a.aide],
        )
        .await
        .expect("query");
    let (aides, title, messages, audits): (i64, String, i64, i64) = (
        rows[0].get(0),
        rows[0].get(1),
        rows[0].get(2),
        rows[0].get(3),
    );
    assert_eq!(
        (aides, title.as_str(), messages, audits),
        (1, "Groceries", 1, 1)
    );
}

/// `current_setting('app.user_id', true)` on a bare connection.
async fn user_id_setting(conn: &Client) -> Option<String> {
    conn.query_one("select current_setting('app.user_id', true)", &[])
        .await
        .expect("query")
        .get(0)
}

#[tokio::test]
async fn a_context_never_set_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let conn = t.login_conn().await;
    assert_eq!(
        user_id_setting(&conn).await,
        None,
        "a fresh connection has no app.user_id"
    );
    begin_as_user_role(&conn).await;
    assert_sees_and_changes_nothing(&conn, &a, "unset").await;
    conn.batch_execute("rollback").await.expect("rollback");
    assert_untouched(&t, &a).await;
}

#[tokio::test]
async fn an_empty_context_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let conn = t.login_conn().await;
    begin_as_user_role(&conn).await;
    conn.execute("select set_config('app.user_id', '', true)", &[])
        .await
        .expect("set empty");
    assert_sees_and_changes_nothing(&conn, &a, "empty").await;
    conn.batch_execute("rollback").await.expect("rollback");
    assert_untouched(&t, &a).await;
}

/// After a transaction-local setting ends, current_setting returns '' on that connection: the
/// state a pooled connection is in when the next transaction forgets to set a user.
#[tokio::test]
async fn a_context_left_over_from_an_ended_transaction_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let conn = t.login_conn().await;
    conn.batch_execute("begin").await.expect("begin");
    conn.execute(
        "select set_config('app.user_id', $1, true)",
        &[&a.user.to_string()],
    )
    .await
    .expect("set");
    conn.batch_execute("commit").await.expect("commit");
    assert_eq!(user_id_setting(&conn).await.as_deref(), Some(""));
    begin_as_user_role(&conn).await;
    assert_sees_and_changes_nothing(&conn, &a, "left over").await;
    conn.batch_execute("rollback").await.expect("rollback");
    assert_untouched(&t, &a).await;
}

#[tokio::test]
async fn a_malformed_context_matches_nothing_and_raises_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let user = a.user.to_string();
    let malformed = [
        "not-a-uuid".to_string(),
        "' or true --".to_string(),
        format!("{user} "),
        format!("{user},{user}"),
        user.replace('-', ""),
        format!("{}g", &user[..35]),
    ];
    let conn = t.login_conn().await;
    for value in &malformed {
        begin_as_user_role(&conn).await;
        conn.execute("select set_config('app.user_id', $1, true)", &[value])
            .await
            .expect("set malformed");
        assert_sees_and_changes_nothing(&conn, &a, &format!("malformed {value:?}")).await;
        conn.batch_execute("rollback").await.expect("rollback");
    }
    assert_untouched(&t, &a).await;
}

/// The same id in upper case is still that user: the check is on the UUID, not its spelling.
#[tokio::test]
async fn an_upper_case_id_is_the_same_user() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let conn = t.login_conn().await;
    begin_as_user_role(&conn).await;
    conn.execute(
        "select set_config('app.user_id', $1, true)",
        &[&a.user.to_string().to_uppercase()],
    )
    .await
    .expect("set");
    let count: i64 = conn
        .query_one("select count(*) from aides", &[])
        .await
        .expect("query")
        .get(0);
    assert_eq!(count, 1);
}
