//! Schema migrations: plain SQL files in `migrations/`, embedded in the binary.
//!
//! Migrations run over an administrative connection (a role that may create roles and owns the
//! database; the managed cluster's superuser in development). The first creates the roles; every
//! later one runs as `aide_owner`, so the objects belong to the owner role rather than to whoever
//! ran them. A file whose first line is `-- run-as: admin` keeps the administrative role.
//!
//! Applied migrations are recorded with a checksum in `aide_meta.schema_migrations`; a file
//! changed after it was applied, or a database newer than the binary, stops the run. An advisory
//! lock keeps several servers starting at once from migrating together.

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::Error;

use super::OWNER_ROLE;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    fn runs_as_admin(&self) -> bool {
        self.sql
            .lines()
            .next()
            .is_some_and(|line| line.trim() == "-- run-as: admin")
    }

    fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }

    /// The file name in `migrations/`.
    pub fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }
}

/// One entry of [`MIGRATIONS`]: the version, then the file's name without number and extension.
macro_rules! migration {
    ($version:literal, $file:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../../migrations/", $file, "_", $name, ".sql")),
        }
    };
}

/// Every migration, in order. A test checks this list against the folder.
pub const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001", "roles"),
    migration!(2, "0002", "schema"),
    migration!(3, "0003", "sign_in"),
    migration!(4, "0004", "aides_api"),
    migration!(5, "0005", "session_check"),
    migration!(6, "0006", "workspace_files"),
    migration!(7, "0007", "published_files"),
    migration!(8, "0008", "storage_cleanup"),
    migration!(9, "0009", "page_notify"),
    migration!(10, "0010", "blob_cleanup"),
    migration!(11, "0011", "upload_guards"),
    migration!(12, "0012", "retired_slugs"),
    migration!(13, "0013", "conversation_bytes"),
    migration!(14, "0014", "enter_user_scope"),
    migration!(15, "0015", "revisions_and_turns"),
    migration!(16, "0016", "version_revision"),
    migration!(17, "0017", "billing"),
    migration!(18, "0018", "operations"),
    migration!(19, "0019", "account_exports"),
    migration!(20, "0020", "account_deletion"),
    migration!(21, "0021", "support_role"),
    migration!(22, "0022", "staff_access"),
];

/// Arbitrary, fixed key for the migration advisory lock.
const LOCK_KEY: i64 = 0x41_49_64_65_5f_6d_69_67; // "AIde_mig"

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "migration {version} ({name}) was changed after it was applied; add a new migration instead"
    )]
    Changed { version: i32, name: String },
    #[error(
        "the database has migration {version}, which this build does not know: it was migrated by a newer version of aide"
    )]
    Unknown { version: i32 },
    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: i32,
        name: &'static str,
        #[source]
        source: Error,
    },
    #[error("could not read or record the applied migrations: {0}")]
    Database(#[from] Error),
}

/// Applies every pending migration; returns the versions applied.
///
/// These statements run over an administrative connection, not through the scopes, so they are
/// not registered statements; every test run applies them to a fresh database.
pub async fn run(conn: &Client) -> Result<Vec<i32>, MigrateError> {
    conn.execute("select pg_advisory_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(Error::from)?;
    let result = run_locked(conn).await;
    // The lock is also released when the connection closes, so a failed unlock loses nothing.
    let _ = conn
        .execute("select pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn run_locked(conn: &Client) -> Result<Vec<i32>, MigrateError> {
    conn.batch_execute(
        "create schema if not exists aide_meta;
         create table if not exists aide_meta.schema_migrations (
             version integer primary key,
             name text not null,
             checksum bytea not null,
             applied_at timestamptz not null default now()
         );",
    )
    .await
    .map_err(Error::from)?;

    let applied: Vec<(i32, Vec<u8>)> = conn
        .query(
            "select version, checksum from aide_meta.schema_migrations order by version",
            &[],
        )
        .await
        .map_err(Error::from)?
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, tokio_postgres::Error>>()
        .map_err(Error::from)?;
    for (version, checksum) in &applied {
        match MIGRATIONS.iter().find(|m| m.version == *version) {
            None => return Err(MigrateError::Unknown { version: *version }),
            Some(m) if m.checksum() != *checksum => {
                return Err(MigrateError::Changed {
                    version: m.version,
                    name: m.name.to_string(),
                });
            }
            Some(_) => {}
        }
    }

    let mut done = Vec::new();
    for migration in MIGRATIONS {
        if applied.iter().any(|(v, _)| *v == migration.version) {
            continue;
        }
        apply(conn, migration)
            .await
            .map_err(|source| MigrateError::Failed {
                version: migration.version,
                name: migration.name,
                source,
            })?;
        tracing::info!(
            migration.version = migration.version,
            migration.name = migration.name,
            "applied migration"
        );
        done.push(migration.version);
    }
    Ok(done)
}

async fn apply(conn: &Client, migration: &Migration) -> Result<(), Error> {
    // One simple query: one transaction, so a failed migration leaves nothing behind.
    let role = if migration.runs_as_admin() {
        String::new()
    } else {
        format!("select set_config('role', '{OWNER_ROLE}', true);\n")
    };
    let script = format!("begin;\n{role}{}\n;reset role;", migration.sql);
    let recorded = match conn.batch_execute(&script).await {
        Ok(()) => conn
            .execute(
                "insert into aide_meta.schema_migrations (version, name, checksum) \
                 values ($1, $2, $3)",
                &[&migration.version, &migration.name, &migration.checksum()],
            )
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    };
    match recorded {
        Ok(_) => {
            conn.batch_execute("commit").await?;
            Ok(())
        }
        Err(e) => {
            let _ = conn.batch_execute("rollback").await;
            Err(e.into())
        }
    }
}
