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
use aide::db::{self, ConnectOptions, Db, LOGIN_ROLE, UserId, migrate};
use tokio_postgres::Client;
use tokio_postgres::types::{FromSqlOwned, ToSql};
use uuid::Uuid;

struct Cluster {
    /// Superuser, database `postgres`.
    admin: ConnectOptions,
    /// The server's login role; the database is chosen per test.
    app: ConnectOptions,
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
            let admin: ConnectOptions = url.parse().map_err(|e| format!("{e}"))?;
            let mut app = admin.clone();
            app.user(LOGIN_ROLE).password("");
            (with_database(&admin, "postgres"), app, None)
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
    let conn = db::connect(&admin).await.map_err(|e| e.to_string())?;
    for sql in [
        format!("drop database if exists {template}"),
        format!("create database {template}"),
    ] {
        conn.batch_execute(&sql).await.map_err(|e| e.to_string())?;
    }
    drop(conn);

    let conn = db::connect(&with_database(&admin, &template))
        .await
        .map_err(|e| e.to_string())?;
    migrate::run(&conn).await.map_err(|e| e.to_string())?;

    Ok(Cluster {
        admin,
        app,
        template,
        _managed: managed,
    })
}

/// `options` with another database.
pub fn with_database(options: &ConnectOptions, database: &str) -> ConnectOptions {
    let mut options = options.clone();
    options.dbname(database);
    options
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

    /// A pool of exactly `max_connections` (no listener takes one in these tests).
    pub async fn with_pool_size(max_connections: u32) -> Self {
        let cluster = cluster();
        let name = format!("aide_test_{}", Uuid::new_v4().simple());
        let admin = db::connect(&cluster.admin).await.expect("admin connection");
        admin
            .batch_execute(&format!(
                "create database {name} template {}",
                cluster.template
            ))
            .await
            .expect("clone the template database");
        drop(admin);
        let db = Db::connect(with_database(&cluster.app, &name), max_connections)
            .await
            .expect("connect as the login role");
        TestDb { db, name }
    }

    /// Connection options for the server's login role on this database.
    pub fn app_options(&self) -> ConnectOptions {
        with_database(&cluster().app, &self.name)
    }

    /// A bare connection as the server's login role, outside any scope.
    pub async fn login_conn(&self) -> Client {
        db::connect(&self.app_options())
            .await
            .expect("login-role connection")
    }

    /// A superuser connection: for set-up and catalog inspection only.
    pub async fn admin_conn(&self) -> Client {
        db::connect(&with_database(&cluster().admin, &self.name))
            .await
            .expect("admin connection")
    }

    /// A connection acting as the schema owner (subject to RLS, through its own policies): for
    /// checks that the append-only trigger holds even where grants would allow a change.
    pub async fn owner_conn(&self) -> Client {
        let conn = self.admin_conn().await;
        conn.batch_execute("set role aide_owner")
            .await
            .expect("become the owner");
        conn
    }

    /// Creates a user through system scope, as sign-in does.
    pub async fn create_user(&self, email: &str) -> UserId {
        let tx = self.db.system().await.expect("system scope");
        let rows = tx
            .unregistered(
                "insert into users (email) values ($1) returning id",
                &[&email],
            )
            .await
            .expect("insert user");
        tx.commit().await.expect("commit");
        UserId(rows[0].get(0))
    }
}

/// The first column of the first row of a statement run in a scope (or on a plain connection,
/// through [`Scoped`]), for tests that probe with statements of their own.
pub async fn scalar<T: FromSqlOwned>(
    conn: &impl Scoped,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<T, db::Error> {
    let rows = conn.run(sql, params).await?;
    let row = rows.first().ok_or(db::Error::NoRow)?;
    Ok(row.try_get(0)?)
}

/// Runs a statement and returns how many rows it returned.
pub async fn exec(
    conn: &impl Scoped,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<usize, db::Error> {
    Ok(conn.run(sql, params).await?.len())
}

/// Something a test can run its own statements on: a scope, or a bare connection.
pub trait Scoped {
    fn run(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> impl std::future::Future<Output = Result<Vec<tokio_postgres::Row>, db::Error>>;
}

impl Scoped for db::UserTx {
    async fn run(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, db::Error> {
        self.unregistered(sql, params).await
    }
}

impl Scoped for db::SystemTx {
    async fn run(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, db::Error> {
        self.unregistered(sql, params).await
    }
}

impl Scoped for Client {
    async fn run(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, db::Error> {
        Ok(self.query(sql, params).await?)
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
    let tx = t.db.user(user).await.expect("user scope");
    let aide: Uuid = scalar(
        &tx,
        "insert into aides (user_id, title) values ($1, 'Groceries') returning id",
        &[&user.0],
    )
    .await
    .expect("insert aide");
    let conversation: Uuid = scalar(
        &tx,
        "insert into conversations (aide_id, user_id) values ($1, $2) returning id",
        &[&aide, &user.0],
    )
    .await
    .expect("insert conversation");
    let message: i64 = scalar(
        &tx,
        "insert into conversation_messages (conversation_id, user_id, role, content)
         values ($1, $2, 'user', 'add milk') returning id",
        &[&conversation, &user.0],
    )
    .await
    .expect("insert message");
    let version: Uuid = scalar(
        &tx,
        "insert into published_versions (aide_id, user_id, version, r2_key, size_bytes)
         values ($1, $2, 1, 'aides/x/v1/index.html', 10) returning id",
        &[&aide, &user.0],
    )
    .await
    .expect("insert version");
    exec(
        &tx,
        "insert into published_files (aide_id, user_id, version, path, size_bytes, content_type, sha256)
         values ($1, $2, 1, 'index.html', 10, 'text/html', sha256('page'::bytea))",
        &[&aide, &user.0],
    )
    .await
    .expect("insert published file");
    exec(
        &tx,
        "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
         values ($1, $2, 'index.html', 10, 'text/html', sha256('page'::bytea))",
        &[&aide, &user.0],
    )
    .await
    .expect("insert workspace file");
    exec(
        &tx,
        "insert into pending_blobs (aide_id, user_id, sha256) values ($1, $2, sha256('page'::bytea))",
        &[&aide, &user.0],
    )
    .await
    .expect("insert pending blob");
    let audit: i64 = scalar(
        &tx,
        "insert into audit_log (user_id, action, resource_type, resource_id)
         values ($1, 'aide.create', 'aide', $2) returning id",
        &[&user.0, &aide],
    )
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
pub fn sqlstate<T: std::fmt::Debug>(result: Result<T, db::Error>) -> String {
    match result {
        Ok(value) => panic!("expected the statement to fail, it returned {value:?}"),
        Err(e) => match e.code() {
            Some(code) => code.to_string(),
            None => panic!("expected a database error, got {e}"),
        },
    }
}

/// SQLSTATE 42501: insufficient privilege (no grant, or a row-level security violation).
pub const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// The managed cluster's database name, re-exported for tests of the binary.
pub const MANAGED_DATABASE: &str = managed::DATABASE;
