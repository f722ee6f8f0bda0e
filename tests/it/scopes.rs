//! The pool and the two scopes: what each transaction runs as, and that nothing leaks between
//! transactions on a pooled connection.

use std::time::Duration;

use aide::db::{self, SESSION_NOT_LIVE, UserId};
use uuid::Uuid;

use crate::support::{INSUFFICIENT_PRIVILEGE, TestDb, exec, scalar, seed_user, sqlstate};

#[tokio::test]
async fn pool_starts_and_answers() {
    let t = TestDb::new().await;
    t.db.ping().await.expect("ping");
    let tx = t.db.system().await.expect("system scope");
    let one: i32 = scalar(&tx, "select 1", &[]).await.expect("query");
    assert_eq!(one, 1);
}

#[tokio::test]
async fn user_scope_sets_role_and_user_id_for_the_transaction() {
    let t = TestDb::new().await;
    let user = UserId(Uuid::new_v4());
    let tx = t.db.user(user).await.expect("user scope");
    assert_eq!(tx.user_id(), user);
    let rows = tx
        .unregistered(
            "select current_user::text, session_user::text, current_setting('app.user_id')",
            &[],
        )
        .await
        .expect("query");
    let (role, session_role, setting): (String, String, String) =
        (rows[0].get(0), rows[0].get(1), rows[0].get(2));
    assert_eq!(role, "aide_user");
    assert_eq!(session_role, "aide_app");
    assert_eq!(setting, user.to_string());
}

#[tokio::test]
async fn system_scope_runs_as_system_role_with_no_user() {
    let t = TestDb::new().await;
    let tx = t.db.system().await.expect("system scope");
    let rows = tx
        .unregistered(
            "select current_user::text, current_setting('app.user_id')",
            &[],
        )
        .await
        .expect("query");
    let (role, setting): (String, String) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(role, "aide_system");
    assert_eq!(setting, "");
}

#[tokio::test]
async fn the_login_role_alone_can_touch_no_table() {
    let t = TestDb::new().await;
    seed_user(&t, "a@example.com").await;
    let conn = t.login_conn().await;
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
        let result = scalar::<i64>(&conn, &format!("select count(*) from {table}"), &[]).await;
        assert_eq!(
            sqlstate(result),
            INSUFFICIENT_PRIVILEGE,
            "select from {table}"
        );
    }
    let result = conn
        .execute("insert into users (email) values ('x@example.com')", &[])
        .await
        .map_err(db::Error::from);
    assert_eq!(sqlstate(result), INSUFFICIENT_PRIVILEGE);
}

/// The role, the user id setting, and the owners of the aides a scope sees, and whether its
/// transaction was assigned an id (it has written) before this statement.
async fn context(
    tx: &impl crate::support::Scoped,
) -> Result<(String, String, Vec<Uuid>, Option<i64>), db::Error> {
    let rows = tx
        .run(
            "select current_user::text, current_setting('app.user_id'),
                    coalesce(array_agg(distinct user_id), '{}'), txid_current_if_assigned()
             from aides",
            &[],
        )
        .await?;
    let row = rows.first().ok_or(db::Error::NoRow)?;
    Ok((
        row.try_get(0)?,
        row.try_get(1)?,
        row.try_get(2)?,
        row.try_get(3)?,
    ))
}

/// A scope dropped without commit leaves nothing behind: its change is gone, and the next scope
/// on the one pooled connection is a transaction of its own, with its own user and role.
#[tokio::test]
async fn dropped_transactions_roll_back() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    {
        let tx = t.db.user(a.user).await.expect("user scope");
        let changed = exec(
            &tx,
            "update aides set title = 'changed' where id = $1 returning 1",
            &[&a.aide],
        )
        .await
        .expect("update");
        assert_eq!(changed, 1);
        // Dropped without commit.
    }

    // The next user on the same connection: a new transaction (nothing written in it yet), B's
    // context, B's rows.
    let tx = t.db.user(b.user).await.expect("B's scope");
    let (role, setting, owners, xid) = context(&tx).await.expect("B's context");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, b.user.to_string());
    assert_eq!(owners, vec![b.user.0]);
    assert_eq!(xid, None, "B's scope runs in a transaction of its own");
    // Were B's scope still inside A's transaction, this commit would keep A's change.
    tx.commit().await.expect("commit B");

    let tx = t.db.user(a.user).await.expect("user scope");
    let title: String = scalar(&tx, "select title from aides where id = $1", &[&a.aide])
        .await
        .expect("select");
    assert_eq!(title, "Groceries");
    let (role, setting, owners, _) = context(&tx).await.expect("A's context");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, a.user.to_string());
    assert_eq!(owners, vec![a.user.0]);
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
                let tx = t.db.user(me.user).await.expect("user scope");
                let rows = tx
                    .unregistered(
                        "select current_user::text, current_setting('app.user_id'),
                                coalesce(array_agg(distinct user_id), '{}') from aides",
                        &[],
                    )
                    .await
                    .expect("query");
                let (role, setting, owners): (String, String, Vec<Uuid>) =
                    (rows[0].get(0), rows[0].get(1), rows[0].get(2));
                assert_eq!(role, "aide_user", "transaction {i}");
                assert_eq!(setting, me.user.to_string(), "transaction {i}");
                assert_eq!(owners, vec![me.user.0], "transaction {i}");
                // Alternate commit and rollback: neither may leave the context behind.
                if i % 2 == 0 {
                    tx.commit().await.expect("commit");
                } else {
                    tx.rollback();
                }
            }
            _ => {
                let tx = t.db.system().await.expect("system scope");
                let rows = tx
                    .unregistered(
                        "select current_user::text, current_setting('app.user_id', true)",
                        &[],
                    )
                    .await
                    .expect("query");
                let (role, setting): (String, String) = (rows[0].get(0), rows[0].get(1));
                assert_eq!(role, "aide_system", "transaction {i}");
                assert_eq!(setting, "", "transaction {i}");
                tx.commit().await.expect("commit");
            }
        }
    }
}

/// Taking a scope checks nothing; the session is checked in the round trip of the first
/// statement, which fails with 28000 for a dead session. The pool is clean afterwards.
#[tokio::test]
async fn a_dead_session_fails_the_first_statement_with_28000_and_leaves_the_pool_clean() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let tx =
        t.db.user_with_session(a.user, Uuid::new_v4())
            .await
            .expect("taking a scope does no I/O");
    let result = scalar::<i64>(&tx, "select count(*) from aides", &[]).await;
    assert_eq!(
        sqlstate(result),
        SESSION_NOT_LIVE,
        "a session that does not exist must be refused"
    );
    drop(tx);
    // The one connection is usable again, in a fresh transaction of the right scope.
    let tx =
        t.db.user(a.user)
            .await
            .expect("user scope after a refused session");
    let count: i64 = scalar(&tx, "select count(*) from aides", &[])
        .await
        .expect("query");
    assert_eq!(count, 1);
    let (role, setting, _, xid) = context(&tx).await.expect("context");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, a.user.to_string());
    assert_eq!(xid, None);
}

/// A live session of `user`, created through system scope as sign-in does.
async fn live_session(t: &TestDb, user: UserId) -> Uuid {
    let tx = t.db.system().await.expect("system scope");
    let id: Uuid = scalar(
        &tx,
        "insert into sessions (user_id, expires_at) values ($1, now() + interval '1 hour')
         returning id",
        &[&user.0],
    )
    .await
    .expect("insert session");
    tx.commit().await.expect("commit");
    id
}

#[tokio::test]
async fn a_read_only_scope_sees_the_users_rows_and_refuses_writes() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    let session = live_session(&t, a.user).await;

    let tx =
        t.db.user_read_with_session(a.user, session)
            .await
            .expect("read scope");
    let rows = tx
        .unregistered(
            "select current_user::text, array(select user_id from aides)",
            &[],
        )
        .await
        .expect("query");
    let (role, owners): (String, Vec<Uuid>) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(role, "aide_user");
    assert_eq!(owners, vec![a.user.0]);
    let write = exec(&*tx, "update aides set title = 'changed'", &[]).await;
    assert_eq!(sqlstate(write), "25006", "read-only transaction");
    tx.finish();

    // The ROLLBACK that finish queued went out: the next scope on the one connection is a
    // transaction of its own, with its own user.
    let tx = t.db.user(b.user).await.expect("B's scope");
    let (role, setting, owners, xid) = context(&tx).await.expect("B's context");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, b.user.to_string());
    assert_eq!(owners, vec![b.user.0]);
    assert_eq!(xid, None);
    tx.commit().await.expect("commit");

    // And it is writable.
    let tx = t.db.user(a.user).await.expect("user scope");
    let title: String = scalar(&tx, "select title from aides", &[])
        .await
        .expect("query");
    assert_ne!(title, "changed");
    let updated = exec(&tx, "update aides set title = 'changed' returning 1", &[])
        .await
        .expect("a read-write scope may write");
    assert_eq!(updated, 1);
    tx.commit().await.expect("commit");

    // And a dead session is refused here too, at the first statement.
    let tx =
        t.db.user_read_with_session(a.user, Uuid::new_v4())
            .await
            .expect("taking a scope does no I/O");
    assert_eq!(
        sqlstate(exec(&*tx, "select 1", &[]).await),
        SESSION_NOT_LIVE
    );
}

/// What a read scope of `user` in `session` sees: the role, the user id setting, the owners of
/// the aides row-level security lets it see, and a bound parameter echoed back.
async fn who(
    t: &TestDb,
    user: UserId,
    session: Uuid,
) -> Result<(String, String, Vec<Uuid>, i64), db::Error> {
    let tx = t.db.user_read_with_session(user, session).await?;
    let rows = tx
        .unregistered(
            "select current_user::text as role, current_setting('app.user_id') as setting,
                    array(select user_id from aides) as owners, $1::int8 as echo",
            &[&7_i64],
        )
        .await?;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    let seen = (
        row.try_get("role")?,
        row.try_get("setting")?,
        row.try_get("owners")?,
        row.try_get("echo")?,
    );
    tx.finish();
    Ok(seen)
}

#[tokio::test]
async fn read_scopes_check_the_session_and_stay_in_the_users_scope() {
    // One connection, so every read below shares it.
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    seed_user(&t, "b@example.com").await;
    let session = live_session(&t, a.user).await;

    let (role, setting, owners, echo) = who(&t, a.user, session).await.expect("read");
    assert_eq!(role, "aide_user");
    assert_eq!(setting, a.user.to_string());
    assert_eq!(owners, vec![a.user.0]);
    assert_eq!(echo, 7);

    // A session that does not exist, or is another user's, is refused with 28000.
    for (user, dead) in [(a.user, Uuid::new_v4()), (UserId(Uuid::new_v4()), session)] {
        assert_eq!(sqlstate(who(&t, user, dead).await), SESSION_NOT_LIVE);
    }

    // The connection is fine afterwards, for another statement too.
    let tx =
        t.db.user_read_with_session(a.user, session)
            .await
            .expect("read scope");
    let n: i64 = scalar(&*tx, "select count(*) as n from aides", &[])
        .await
        .expect("second statement");
    assert_eq!(n, 1);
    tx.finish();
    assert_eq!(
        who(&t, a.user, session).await.expect("read again").2,
        vec![a.user.0]
    );

    // Revoking the session takes effect at once.
    let revoked = {
        let tx = t.db.system().await.expect("system scope");
        let done = exec(
            &tx,
            "update sessions set revoked_at = now() where id = $1 returning 1",
            &[&session],
        )
        .await
        .expect("revoke");
        assert_eq!(done, 1);
        tx.commit().await.expect("commit");
        who(&t, a.user, session).await
    };
    assert_eq!(sqlstate(revoked), SESSION_NOT_LIVE, "revoked at once");
}

/// After the server closes the pooled connection, the next scope runs on a new one and sees
/// what it saw before.
#[tokio::test]
async fn a_scope_after_the_server_closed_its_connection_runs_on_a_new_one() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let session = live_session(&t, a.user).await;
    let before = who(&t, a.user, session).await.expect("read");
    let admin = t.admin_conn().await;
    let killed: Vec<bool> = admin
        .query(
            "select pg_terminate_backend(pid) from pg_stat_activity
             where usename = 'aide_app' and datname = current_database()",
            &[],
        )
        .await
        .expect("terminate the server's connections")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!killed.is_empty() && killed.iter().all(|k| *k));
    // Wait for the server to have closed it, and give the connection's task a moment to read
    // that: the pool then finds it closed and opens another. (Nothing re-runs a statement sent
    // on a connection that dies under it: that scope fails as unavailable, a 503.)
    for _ in 0..100 {
        let left: i64 = admin
            .query_one(
                "select count(*) from pg_stat_activity
                 where usename = 'aide_app' and datname = current_database()",
                &[],
            )
            .await
            .expect("count the server's connections")
            .get(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        who(&t, a.user, session).await.expect("read after the kill"),
        before
    );
}

#[tokio::test]
async fn read_scopes_are_read_only() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let session = live_session(&t, a.user).await;
    let tx =
        t.db.user_read_with_session(a.user, session)
            .await
            .expect("read scope");
    let write = exec(&*tx, "update aides set title = 'changed' returning id", &[]).await;
    assert_eq!(sqlstate(write), "25006");
    tx.finish();

    // Nor can a read scope be made writable once it has run a statement.
    let tx =
        t.db.user_read_with_session(a.user, session)
            .await
            .expect("read scope");
    exec(&*tx, "select 1", &[]).await.expect("first statement");
    let switch = exec(&*tx, "set transaction read write", &[]).await;
    assert_eq!(sqlstate(switch), "25001");
    tx.finish();

    let tx = t.db.user(a.user).await.expect("user scope");
    let title: String = scalar(&tx, "select title from aides", &[])
        .await
        .expect("query");
    assert_ne!(title, "changed");
}

/// Two users taking turns on the one connection, with a statement prepared once on it and run
/// with a generic plan (as a statement prepared when the connection opens is, after a few runs):
/// each run sees its own user's context and rows only.
#[tokio::test]
async fn a_statement_prepared_once_serves_two_users_on_one_connection_without_mixing() {
    let t = TestDb::with_pool_size(1).await;
    let a = seed_user(&t, "a@example.com").await;
    let b = seed_user(&t, "b@example.com").await;
    let callers = [
        (a.user, live_session(&t, a.user).await),
        (b.user, live_session(&t, b.user).await),
    ];
    {
        let tx =
            t.db.user_read_with_session(a.user, callers[0].1)
                .await
                .expect("read scope");
        // PREPARE outlives the transaction: it belongs to the connection.
        exec(
            &*tx,
            "prepare test_who as
             select current_user::text, current_setting('app.user_id'),
                    array(select user_id from aides)",
            &[],
        )
        .await
        .expect("prepare");
        tx.finish();
    }
    for i in 0..40 {
        let (user, session) = callers[i % 2];
        let tx =
            t.db.user_read_with_session(user, session)
                .await
                .expect("read scope");
        exec(
            &*tx,
            "select set_config('plan_cache_mode', 'force_generic_plan', true)",
            &[],
        )
        .await
        .expect("generic plans");
        let rows = tx
            .unregistered("execute test_who", &[])
            .await
            .expect("read");
        let (role, setting, owners): (String, String, Vec<Uuid>) =
            (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!(role, "aide_user", "read {i}");
        assert_eq!(setting, user.to_string(), "read {i}");
        assert_eq!(owners, vec![user.0], "read {i}");
        tx.finish();
    }
}
