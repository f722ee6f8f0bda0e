//! With no user context (never set, empty, left over from an ended transaction, or malformed),
//! user scope sees nothing and changes nothing, and raises no error doing so.

use sqlx::{Connection, PgConnection};

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
async fn assert_sees_and_changes_nothing(conn: &mut PgConnection, a: &Owned, label: &str) {
    for table in USER_TABLES {
        let count: i64 = sqlx::query_scalar(&format!("select count(*) from {table}"))
            .fetch_one(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{label}: select from {table} raised {e}"));
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
        let done = sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{label}: update of {table} raised {e}"));
        assert_eq!(done.rows_affected(), 0, "{label}: update of {table}");
    }
    for table in ["aides", "conversations", "pending_blobs"] {
        let done = sqlx::query(&format!("delete from {table}"))
            .execute(&mut *conn)
            .await
            .unwrap_or_else(|e| panic!("{label}: delete from {table} raised {e}"));
        assert_eq!(done.rows_affected(), 0, "{label}: delete from {table}");
    }

    // Inserts are checked against the policy: a row for any user is refused. Each runs in a
    // savepoint so the transaction can go on.
    let inserts = [
        "insert into aides (user_id, title) values ($1, 'x')",
        "insert into audit_log (user_id, action, resource_type) values ($1, 'x', 'x')",
    ];
    for sql in inserts {
        let mut savepoint = conn.begin().await.expect("savepoint");
        let result = sqlx::query(sql)
            .bind(a.user.0)
            .execute(&mut *savepoint)
            .await;
        assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE, "{label}: {sql}");
        savepoint.rollback().await.expect("rollback to savepoint");
    }
}

async fn begin_as_user_role(conn: &mut PgConnection) {
    sqlx::raw_sql("begin; set local role aide_user")
        .execute(&mut *conn)
        .await
        .expect("begin as aide_user");
}

async fn assert_untouched(t: &TestDb, a: &Owned) {
    let mut tx = t.db.user(a.user).await.expect("user scope");
    let (aides, title, messages, audits): (i64, String, i64, i64) = sqlx::query_as(
        "select (select count(*) from aides), (select title from aides where id = $1),
                (select count(*) from conversation_messages), (select count(*) from audit_log)",
    )
    .bind(a.aide)
    .fetch_one(tx.conn())
    .await
    .expect("query");
    assert_eq!(
        (aides, title.as_str(), messages, audits),
        (1, "Groceries", 1, 1)
    );
}

#[tokio::test]
async fn a_context_never_set_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let mut conn = t.login_conn().await;
    let setting: Option<String> = sqlx::query_scalar("select current_setting('app.user_id', true)")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(setting, None, "a fresh connection has no app.user_id");
    begin_as_user_role(&mut conn).await;
    assert_sees_and_changes_nothing(&mut conn, &a, "unset").await;
    sqlx::raw_sql("rollback")
        .execute(&mut conn)
        .await
        .expect("rollback");
    assert_untouched(&t, &a).await;
}

#[tokio::test]
async fn an_empty_context_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let mut conn = t.login_conn().await;
    begin_as_user_role(&mut conn).await;
    sqlx::query("select set_config('app.user_id', '', true)")
        .execute(&mut conn)
        .await
        .expect("set empty");
    assert_sees_and_changes_nothing(&mut conn, &a, "empty").await;
    sqlx::raw_sql("rollback")
        .execute(&mut conn)
        .await
        .expect("rollback");
    assert_untouched(&t, &a).await;
}

/// After a transaction-local setting ends, current_setting returns '' on that connection: the
/// state a pooled connection is in when the next transaction forgets to set a user.
#[tokio::test]
async fn a_context_left_over_from_an_ended_transaction_matches_nothing() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let mut conn = t.login_conn().await;
    sqlx::query("begin")
        .execute(&mut conn)
        .await
        .expect("begin");
    sqlx::query("select set_config('app.user_id', $1, true)")
        .bind(a.user.to_string())
        .execute(&mut conn)
        .await
        .expect("set");
    sqlx::query("commit")
        .execute(&mut conn)
        .await
        .expect("commit");
    let setting: Option<String> = sqlx::query_scalar("select current_setting('app.user_id', true)")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(setting.as_deref(), Some(""));
    begin_as_user_role(&mut conn).await;
    assert_sees_and_changes_nothing(&mut conn, &a, "left over").await;
    sqlx::raw_sql("rollback")
        .execute(&mut conn)
        .await
        .expect("rollback");
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
    let mut conn = t.login_conn().await;
    for value in &malformed {
        begin_as_user_role(&mut conn).await;
        sqlx::query("select set_config('app.user_id', $1, true)")
            .bind(value)
            .execute(&mut conn)
            .await
            .expect("set malformed");
        assert_sees_and_changes_nothing(&mut conn, &a, &format!("malformed {value:?}")).await;
        sqlx::raw_sql("rollback")
            .execute(&mut conn)
            .await
            .expect("rollback");
    }
    assert_untouched(&t, &a).await;
}

/// The same id in upper case is still that user: the check is on the UUID, not its spelling.
#[tokio::test]
async fn an_upper_case_id_is_the_same_user() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    let mut conn = t.login_conn().await;
    begin_as_user_role(&mut conn).await;
    sqlx::query("select set_config('app.user_id', $1, true)")
        .bind(a.user.to_string().to_uppercase())
        .execute(&mut conn)
        .await
        .expect("set");
    let count: i64 = sqlx::query_scalar("select count(*) from aides")
        .fetch_one(&mut conn)
        .await
        .expect("query");
    assert_eq!(count, 1);
}
