//! The pool and the two scopes: what each transaction runs as, and that nothing leaks between
//! transactions on a pooled connection.

use aide::db::UserId;
use uuid::Uuid;

use crate::support::{INSUFFICIENT_PRIVILEGE, TestDb, seed_user, sqlstate};

#[tokio::test]
async fn pool_starts_and_answers() {
    let t = TestDb::new().await;
    t.db.ping().await.expect("ping");
    let mut tx = t.db.system().await.expect("system scope");
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(tx.conn())
        .await
        .expect("query");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn user_scope_sets_role_and_user_id_for_the_transaction() {
    let t = TestDb::new().await;
    let user = UserId(Uuid::new_v4());
    let mut tx = t.db.user(user).await.expect("user scope");
    assert_eq!(tx.user_id(), user);
    let (role, session_role, setting): (String, String, String) = sqlx::query_as(
        "select current_user::text, session_user::text, current_setting('app.user_id')",
    )
    .fetch_one(tx.conn())
    .await
    .expect("query");
    assert_eq!(role, "aide_user");
    assert_eq!(session_role, "aide_app");
    assert_eq!(setting, user.to_string());
}

#[tokio::test]
async fn system_scope_runs_as_system_role_with_no_user() {
    let t = TestDb::new().await;
    let mut tx = t.db.system().await.expect("system scope");
    let (role, setting): (String, String) =
        sqlx::query_as("select current_user::text, current_setting('app.user_id')")
            .fetch_one(tx.conn())
            .await
            .expect("query");
    assert_eq!(role, "aide_system");
    assert_eq!(setting, "");
}

#[tokio::test]
async fn the_login_role_alone_can_touch_no_table() {
    let t = TestDb::new().await;
    seed_user(&t, "a@example.com").await;
    let mut conn = t.login_conn().await;
    for table in [
        "users",
        "magic_links",
        "sessions",
        "aides",
        "conversations",
        "conversation_messages",
        "published_versions",
        "audit_log",
    ] {
        let result = sqlx::query_scalar::<_, i64>(&format!("select count(*) from {table}"))
            .fetch_one(&mut conn)
            .await;
        assert_eq!(
            sqlstate(result),
            INSUFFICIENT_PRIVILEGE,
            "select from {table}"
        );
    }
    let result = sqlx::query("insert into users (email) values ('x@example.com')")
        .execute(&mut conn)
        .await;
    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}

#[tokio::test]
async fn dropped_transactions_roll_back() {
    let t = TestDb::new().await;
    let a = seed_user(&t, "a@example.com").await;
    {
        let mut tx = t.db.user(a.user).await.expect("user scope");
        sqlx::query("update aides set title = 'changed' where id = $1")
            .bind(a.aide)
            .execute(tx.conn())
            .await
            .expect("update");
        // Dropped without commit.
    }
    let mut tx = t.db.user(a.user).await.expect("user scope");
    let title: String = sqlx::query_scalar("select title from aides where id = $1")
        .bind(a.aide)
        .fetch_one(tx.conn())
        .await
        .expect("select");
    assert_eq!(title, "Groceries");
}

/// 1,000 transactions on a pool of one connection, alternating between two users and system
/// scope: each sees exactly its own context and rows, whatever ran before it on the connection.
#[tokio::test]
async fn no_context_leaks_between_transactions_on_one_connection() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;

    for i in 0..1000 {
        match i % 3 {
            0 | 1 => {
                let me = if i % 3 == 0 { a } else { b };
                let mut tx = t.db.user(me.user).await.expect("user scope");
                let (role, setting, owners): (String, String, Vec<Uuid>) = sqlx::query_as(
                    "select current_user::text, current_setting('app.user_id'),
                            coalesce(array_agg(distinct user_id), '{}') from aides",
                )
                .fetch_one(tx.conn())
                .await
                .expect("query");
                assert_eq!(role, "aide_user", "transaction {i}");
                assert_eq!(setting, me.user.to_string(), "transaction {i}");
                assert_eq!(owners, vec![me.user.0], "transaction {i}");
                // Alternate commit and rollback: neither may leave the context behind.
                if i % 2 == 0 {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback().await.expect("rollback");
                }
            }
            _ => {
                let mut tx = t.db.system().await.expect("system scope");
                let (role, setting): (String, String) = sqlx::query_as(
                    "select current_user::text, current_setting('app.user_id', true)",
                )
                .fetch_one(tx.conn())
                .await
                .expect("query");
                assert_eq!(role, "aide_system", "transaction {i}");
                assert_eq!(setting, "", "transaction {i}");
                tx.commit().await.expect("commit");
            }
        }
    }
}

#[tokio::test]
async fn a_dead_session_fails_the_checked_begin_with_28000_and_leaves_the_pool_clean() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let err = match t.db.user_with_session(a.user, Uuid::new_v4()).await {
        Ok(_) => panic!("a session that does not exist must be refused"),
        Err(e) => e,
    };
    match &err {
        sqlx::Error::Database(e) => {
            assert_eq!(e.code().as_deref(), Some(aide::db::SESSION_NOT_LIVE), "{e}")
        }
        other => panic!("unexpected error: {other:?}"),
    }
    // The one connection is usable again, outside any transaction and scope.
    let mut tx =
        t.db.user(a.user)
            .await
            .expect("user scope after a refused begin");
    let count: i64 = sqlx::query_scalar("select count(*) from aides")
        .fetch_one(tx.conn())
        .await
        .expect("query");
    assert_eq!(count, 1);
}
