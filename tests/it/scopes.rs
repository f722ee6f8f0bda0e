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

/// A live session of `user`, created through system scope as sign-in does.
async fn live_session(t: &TestDb, user: UserId) -> Uuid {
    let mut tx = t.db.system().await.expect("system scope");
    let id: Uuid = sqlx::query_scalar(
        "insert into sessions (user_id, expires_at) values ($1, now() + interval '1 hour')
         returning id",
    )
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
    .expect("insert session");
    tx.commit().await.expect("commit");
    id
}

#[tokio::test]
async fn a_read_only_scope_sees_the_users_rows_and_refuses_writes() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    seed_user(&t, "b@example.com").await;
    let session = live_session(&t, a.user).await;

    let mut tx =
        t.db.user_read_with_session(a.user, session)
            .await
            .expect("read scope");
    let (role, owners): (String, Vec<Uuid>) =
        sqlx::query_as("select current_user::text, array(select user_id from aides)")
            .fetch_one(tx.conn())
            .await
            .expect("query");
    assert_eq!(role, "aide_user");
    assert_eq!(owners, vec![a.user.0]);
    let write = sqlx::query("update aides set title = 'changed'")
        .execute(tx.conn())
        .await;
    assert_eq!(sqlstate(write), "25006", "read-only transaction");
    tx.finish();

    // The ROLLBACK that finish queued went out; the one connection is clean and writable.
    let mut tx = t.db.user(a.user).await.expect("user scope");
    let title: String = sqlx::query_scalar("select title from aides")
        .fetch_one(tx.conn())
        .await
        .expect("query");
    assert_ne!(title, "changed");
    let updated = sqlx::query("update aides set title = 'changed'")
        .execute(tx.conn())
        .await
        .expect("a read-write scope may write");
    assert_eq!(updated.rows_affected(), 1);
    tx.commit().await.expect("commit");

    // And a dead session is refused here too.
    assert_eq!(
        sqlstate(
            t.db.user_read_with_session(a.user, Uuid::new_v4())
                .await
                .map(|_| ())
        ),
        aide::db::SESSION_NOT_LIVE
    );
}

/// What the one-round-trip read of [`WHO`] returns: the role, the user id setting, and the owners
/// of the aides row-level security lets it see.
const WHO: aide::db::Prepared = aide::db::Prepared::new(
    "test_who",
    "int8",
    "select current_user::text as role, current_setting('app.user_id') as setting,
            array(select user_id from aides) as owners, $1 as echo",
);
const COUNT: aide::db::Prepared =
    aide::db::Prepared::new("test_count", "", "select count(*) as n from aides");

async fn who(
    t: &TestDb,
    caller: aide::db::Caller,
) -> Result<(String, String, Vec<Uuid>, i64), sqlx::Error> {
    use sqlx::Row;
    let rows =
        t.db.reader(caller)
            .rows(&WHO, &aide::db::Args::new().arg(7_i64))
            .await?;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    Ok((
        row.try_get("role")?,
        row.try_get("setting")?,
        row.try_get("owners")?,
        row.try_get("echo")?,
    ))
}

#[tokio::test]
async fn one_round_trip_reads_check_the_session_and_stay_in_the_users_scope() {
    // One read connection, so every read below shares it.
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    seed_user(&t, "b@example.com").await;
    let session = live_session(&t, a.user).await;
    let caller = aide::db::Caller {
        user: a.user,
        session,
    };

    let (role, setting, owners, echo) = who(&t, caller).await.expect("read");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, a.user.to_string());
    assert_eq!(owners, vec![a.user.0]);
    assert_eq!(echo, 7);

    // A session that does not exist, or is another user's, is refused with 28000.
    for dead in [
        aide::db::Caller {
            user: a.user,
            session: Uuid::new_v4(),
        },
        aide::db::Caller {
            user: UserId(Uuid::new_v4()),
            session,
        },
    ] {
        assert_eq!(sqlstate(who(&t, dead).await), aide::db::SESSION_NOT_LIVE);
    }

    // The connection is fine afterwards, and a second statement gets prepared on it too.
    let rows =
        t.db.reader(caller)
            .rows(&COUNT, &aide::db::Args::new())
            .await
            .expect("second statement");
    let n: i64 = sqlx::Row::try_get(&rows[0], "n").expect("n");
    assert_eq!(n, 1);
    assert_eq!(who(&t, caller).await.expect("read again").2, vec![a.user.0]);

    // Revoking the session takes effect at once.
    let revoked = {
        let mut tx = t.db.system().await.expect("system scope");
        sqlx::query("update sessions set revoked_at = now() where id = $1")
            .bind(session)
            .execute(tx.conn())
            .await
            .expect("revoke");
        tx.commit().await.expect("commit");
        who(&t, caller).await
    };
    assert_eq!(
        sqlstate(revoked),
        aide::db::SESSION_NOT_LIVE,
        "revoked at once"
    );
}

#[tokio::test]
async fn a_read_whose_connection_was_closed_by_the_server_is_run_again_on_a_new_one() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let caller = aide::db::Caller {
        user: a.user,
        session: live_session(&t, a.user).await,
    };
    let before = who(&t, caller).await.expect("read");
    let mut admin = t.admin_conn().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "select pg_terminate_backend(pid) from pg_stat_activity
         where usename = 'aide_app' and datname = current_database()",
    )
    .fetch_all(&mut admin)
    .await
    .expect("terminate the server's connections");
    assert!(!killed.is_empty() && killed.iter().all(|k| *k));
    assert_eq!(who(&t, caller).await.expect("read after the kill"), before);
}

/// A write through a one-round-trip read is refused: the scope is read-only.
const WRITE: aide::db::Prepared = aide::db::Prepared::new(
    "test_write",
    "",
    "update aides set title = 'changed' returning id",
);

#[tokio::test]
async fn one_round_trip_reads_are_read_only() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let caller = aide::db::Caller {
        user: a.user,
        session: live_session(&t, a.user).await,
    };
    let write =
        t.db.reader(caller)
            .rows(&WRITE, &aide::db::Args::new())
            .await;
    assert_eq!(sqlstate(write), "25006");
    let mut tx = t.db.user(a.user).await.expect("user scope");
    let title: String = sqlx::query_scalar("select title from aides")
        .fetch_one(tx.conn())
        .await
        .expect("query");
    assert_ne!(title, "changed");
}

/// Two users taking turns on the one read connection, well past the executions after which
/// PostgreSQL caches a generic plan: each read sees its own user's context and rows only.
#[tokio::test]
async fn one_round_trip_reads_of_two_users_on_one_connection_never_mix() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    let callers = [
        aide::db::Caller {
            user: a.user,
            session: live_session(&t, a.user).await,
        },
        aide::db::Caller {
            user: b.user,
            session: live_session(&t, b.user).await,
        },
    ];
    for i in 0..40 {
        let caller = callers[i % 2];
        let (role, setting, owners, _) = who(&t, caller).await.expect("read");
        assert_eq!(role, "aide_user", "read {i}");
        assert_eq!(setting, caller.user.to_string(), "read {i}");
        assert_eq!(owners, vec![caller.user.0], "read {i}");
    }
}
