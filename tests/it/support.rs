//! The test cluster and per-test databases.
//!
//! One private PostgreSQL cluster per test process, started with the server's own managed-cluster
//! code in the system temp folder (or, when AIDE_TEST_ADMIN_URL names a superuser connection to a
//! server you run, that server). It is migrated once into a template database; each test clones
//! the template (a few milliseconds) and talks to its clone as `aide_app`, the server's login role.
//! The superuser connection is used for set-up and for inspecting the catalog, never to read or
//! change data under test.

use std::path::PathBuf;
use std::sync::OnceLock;

use aide::db::managed::{self, ClusterOptions, ManagedPostgres};
use aide::db::{Db, LOGIN_ROLE, UserId, migrate};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

struct Cluster {
    /// Superuser, database `postgres`.
    admin: PgConnectOptions,
    /// The server's login role; the database is chosen per test.
    app: PgConnectOptions,
    template: String,
    _managed: Option<ManagedPostgres>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

fn cluster() -> &'static Cluster {
    let result = CLUSTER.get_or_init(|| {
        // The tests' runtimes come and go; set-up gets a thread and a runtime of its own.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start_cluster())
        })
        .join()
        .unwrap_or_else(|_| Err("cluster set-up panicked".to_string()))
    });
    match result {
        Ok(cluster) => cluster,
        Err(e) => panic!("the test PostgreSQL cluster could not start: {e}"),
    }
}

async fn start_cluster() -> Result<Cluster, String> {
    let (admin, app, managed) = match std::env::var("AIDE_TEST_ADMIN_URL") {
        Ok(url) => {
            let admin: PgConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
            let app = admin.clone().username(LOGIN_ROLE).password("");
            (admin.database("postgres"), app, None)
        }
        Err(_) => {
            remove_stale_clusters();
            let root = std::env::temp_dir().join(format!("aide-test-pg-{}", std::process::id()));
            let options = ClusterOptions {
                bindir: std::env::var_os("PG_BINDIR").map(PathBuf::from),
                ephemeral: true,
            };
            let pg = ManagedPostgres::start(&root, options).await?;
            (
                pg.admin_options("postgres"),
                pg.app_options("postgres"),
                Some(pg),
            )
        }
    };

    let template = format!("aide_template_{}", std::process::id());
    let mut conn = PgConnection::connect_with(&admin)
        .await
        .map_err(|e| e.to_string())?;
    for sql in [
        format!("drop database if exists {template}"),
        format!("create database {template}"),
    ] {
        sqlx::raw_sql(&sql)
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
    }
    conn.close().await.map_err(|e| e.to_string())?;

    let mut conn = PgConnection::connect_with(&admin.clone().database(&template))
        .await
        .map_err(|e| e.to_string())?;
    migrate::run(&mut conn).await.map_err(|e| e.to_string())?;
    conn.close().await.map_err(|e| e.to_string())?;

    Ok(Cluster {
        admin,
        app,
        template,
        _managed: managed,
    })
}

/// Removes the folders of test clusters whose process has ended.
fn remove_stale_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("aide-test-pg-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A database of one test's own, migrated, reached as the server reaches its database.
pub struct TestDb {
    pub db: Db,
    pub name: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::with_pool_size(4).await
    }

    /// A pool of exactly `max_connections` (no listener takes one in these tests), and one
    /// connection for one-round-trip reads.
    pub async fn with_pool_size(max_connections: u32) -> Self {
        let cluster = cluster();
        let name = format!("aide_test_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect_with(&cluster.admin)
            .await
            .expect("admin connection");
        sqlx::raw_sql(&format!(
            "create database {name} template {}",
            cluster.template
        ))
        .execute(&mut admin)
        .await
        .expect("clone the template database");
        admin.close().await.ok();
        let db = Db::connect_sized(cluster.app.clone().database(&name), max_connections, 1)
            .await
            .expect("connect as the login role");
        TestDb { db, name }
    }

    /// Connection options for the server's login role on this database.
    pub fn app_options(&self) -> PgConnectOptions {
        cluster().app.clone().database(&self.name)
    }

    /// A bare connection as the server's login role, outside any scope.
    pub async fn login_conn(&self) -> PgConnection {
        PgConnection::connect_with(&self.app_options())
            .await
            .expect("login-role connection")
    }

    /// A superuser connection: for set-up and catalog inspection only.
    pub async fn admin_conn(&self) -> PgConnection {
        PgConnection::connect_with(&cluster().admin.clone().database(&self.name))
            .await
            .expect("admin connection")
    }

    /// A connection acting as the schema owner (subject to RLS, through its own policies): for
    /// checks that the append-only trigger holds even where grants would allow a change.
    pub async fn owner_conn(&self) -> PgConnection {
        let mut conn = self.admin_conn().await;
        sqlx::raw_sql("set role aide_owner")
            .execute(&mut conn)
            .await
            .expect("become the owner");
        conn
    }

    /// Creates a user through system scope, as sign-in does.
    pub async fn create_user(&self, email: &str) -> UserId {
        let mut tx = self.db.system().await.expect("system scope");
        let id: Uuid = sqlx::query_scalar("insert into users (email) values ($1) returning id")
            .bind(email)
            .fetch_one(tx.conn())
            .await
            .expect("insert user");
        tx.commit().await.expect("commit");
        UserId(id)
    }
}

/// Everything one user owns in the seeded data.
#[derive(Debug, Clone, Copy)]
pub struct Owned {
    pub user: UserId,
    pub aide: Uuid,
    pub conversation: Uuid,
    pub message: i64,
    pub version: Uuid,
    pub audit: i64,
}

/// Creates a user and, in their own scope, one row in every table they can write.
pub async fn seed_user(t: &TestDb, email: &str) -> Owned {
    let user = t.create_user(email).await;
    let mut tx = t.db.user(user).await.expect("user scope");
    let aide: Uuid = sqlx::query_scalar(
        "insert into aides (user_id, title) values ($1, 'Groceries') returning id",
    )
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
    .expect("insert aide");
    let conversation: Uuid = sqlx::query_scalar(
        "insert into conversations (aide_id, user_id) values ($1, $2) returning id",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
    .expect("insert conversation");
    let message: i64 = sqlx::query_scalar(
        "insert into conversation_messages (conversation_id, user_id, role, content)
         values ($1, $2, 'user', 'add milk') returning id",
    )
    .bind(conversation)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
    .expect("insert message");
    let version: Uuid = sqlx::query_scalar(
        "insert into published_versions (aide_id, user_id, version, r2_key, size_bytes)
         values ($1, $2, 1, 'aides/x/v1/index.html', 10) returning id",
    )
    .bind(aide)
    .bind(user.0)
    .fetch_one(tx.conn())
    .await
    .expect("insert version");
    sqlx::query(
        "insert into published_files (aide_id, user_id, version, path, size_bytes, content_type, sha256)
         values ($1, $2, 1, 'index.html', 10, 'text/html', sha256('page'::bytea))",
    )
    .bind(aide)
    .bind(user.0)
    .execute(tx.conn())
    .await
    .expect("insert published file");
    sqlx::query(
        "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
         values ($1, $2, 'index.html', 10, 'text/html', sha256('page'::bytea))",
    )
    .bind(aide)
    .bind(user.0)
    .execute(tx.conn())
    .await
    .expect("insert workspace file");
    sqlx::query(
        "insert into pending_blobs (aide_id, user_id, sha256) values ($1, $2, sha256('page'::bytea))",
    )
    .bind(aide)
    .bind(user.0)
    .execute(tx.conn())
    .await
    .expect("insert pending blob");
    let audit: i64 = sqlx::query_scalar(
        "insert into audit_log (user_id, action, resource_type, resource_id)
         values ($1, 'aide.create', 'aide', $2) returning id",
    )
    .bind(user.0)
    .bind(aide)
    .fetch_one(tx.conn())
    .await
    .expect("insert audit row");
    tx.commit().await.expect("commit");
    Owned {
        user,
        aide,
        conversation,
        message,
        version,
        audit,
    }
}

/// The SQLSTATE of a failed query, or a panic if it did not fail.
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, sqlx::Error>) -> String {
    match result {
        Ok(value) => panic!("expected the statement to fail, it returned {value:?}"),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()).unwrap_or_default(),
        Err(other) => panic!("expected a database error, got {other}"),
    }
}

/// SQLSTATE 42501: insufficient privilege (no grant, or a row-level security violation).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The managed cluster's database name, re-exported for tests of the binary.
pub const MANAGED_DATABASE: &str = managed::DATABASE;
