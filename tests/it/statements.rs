//! Every SQL statement the server can send is checked against the migrated schema, as the role
//! that runs it: a typo, a wrong column, a wrong type or a missing grant fails here, not in a
//! request. And the code holds no SQL outside those registered statements.

use std::path::Path;

use aide::db::{self, LOGIN_ROLE, SUPPORT_ROLE, SYSTEM_ROLE, USER_ROLE};
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

use crate::support::TestDb;

/// A parameter bound as NULL, whatever its type.
#[derive(Debug)]
struct Null;

impl ToSql for Null {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// Statements `EXPLAIN` can plan without running them: planning checks table and column
/// privileges, which preparing alone does not.
fn explainable(text: &str) -> bool {
    let first = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    matches!(
        first.as_str(),
        "select" | "insert" | "update" | "delete" | "with"
    )
}

#[tokio::test]
async fn every_statement_prepares_and_plans_as_the_role_that_runs_it() {
    let t = TestDb::new().await;
    let conn = t.login_conn().await;
    let statements: Vec<&db::Registered> = db::statements().collect();
    assert!(
        statements.len() > 50,
        "only {} statements are registered",
        statements.len()
    );
    let mut failures = Vec::new();
    let mut planned = 0;
    for statement in &statements {
        assert!(
            [USER_ROLE, SYSTEM_ROLE, SUPPORT_ROLE, LOGIN_ROLE].contains(&statement.role),
            "{} runs as {}",
            statement.name,
            statement.role
        );
        conn.batch_execute(&format!(
            "begin; select set_config('role', '{}', true), set_config('app.user_id', '{}', true)",
            statement.role,
            uuid::Uuid::new_v4()
        ))
        .await
        .expect("enter the role");
        let checked = async {
            let prepared = conn.prepare(statement.text).await?;
            if explainable(statement.text) {
                let explain = conn.prepare(&format!("explain {}", statement.text)).await?;
                let nulls: Vec<&(dyn ToSql + Sync)> =
                    explain.params().iter().map(|_| &Null as _).collect();
                conn.query(&explain, &nulls).await?;
                assert_eq!(explain.params().len(), prepared.params().len());
                planned += 1;
            }
            Ok::<_, tokio_postgres::Error>(())
        }
        .await;
        if let Err(e) = checked {
            failures.push(format!(
                "{} (as {}): {}\n  {}",
                statement.name,
                statement.role,
                db::Error::from(e),
                statement.text
            ));
        }
        conn.batch_execute("rollback").await.expect("roll back");
    }
    assert!(
        failures.is_empty(),
        "{} of {} statements fail:\n{}",
        failures.len(),
        statements.len(),
        failures.join("\n")
    );
    assert!(
        planned * 2 > statements.len(),
        "only {planned} were planned"
    );
    println!(
        "{} statements prepared, {planned} planned",
        statements.len()
    );
}

#[test]
fn statement_texts_are_unique_per_role() {
    let mut seen = std::collections::HashSet::new();
    for statement in db::statements() {
        assert!(
            seen.insert((statement.role, statement.text)),
            "{} repeats another statement; use one constant",
            statement.name
        );
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir)
        .expect("read the source folder")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn server_code_sends_only_registered_statements() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    // Outside the database layer (which runs the registry, migrations and the managed
    // cluster's set-up over administrative connections), no code reaches a raw connection.
    let allowed = ["db.rs", "db/"];
    let raw = [
        ".unregistered(",
        ".batch_execute(",
        ".simple_query(",
        ".prepare(",
        "tokio_postgres::Client",
    ];
    let mut found = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&root).expect("under src");
        let name = relative.to_string_lossy();
        if allowed.iter().any(|a| name == *a || name.starts_with(a)) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read a source file");
        for needle in raw {
            if text.contains(needle) {
                found.push(format!("{name}: {needle}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "raw database access outside src/db: {found:?}"
    );
}

/// The house has layers: storage of data (the database layer, repositories, models, cursors,
/// tiers, object keys, configuration) knows nothing of HTTP or of the application state; the
/// HTTP plumbing knows nothing of the application that assembles routes; and only the server and
/// the binary assemble the application.
#[test]
fn lower_layers_do_not_import_higher_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let data = |name: &str| {
        name.starts_with("db")
            || name.starts_with("config")
            || name.ends_with("/repo.rs")
            || name.ends_with("/model.rs")
            || [
                "cursor.rs",
                "tier.rs",
                "time.rs",
                "retry.rs",
                "storage/keys.rs",
            ]
            .contains(&name)
    };
    let mut found = Vec::new();
    for file in &files {
        let name = file
            .strip_prefix(&root)
            .expect("under src")
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(file).expect("read a source file");
        let forbidden: &[&str] = if data(&name) {
            &[
                "crate::http::",
                "crate::state::",
                "crate::app::",
                "axum::extract",
                "axum::response",
                "axum::Router",
            ]
        } else if name == "http.rs" || name.starts_with("http/") {
            &["crate::app::"]
        } else if ["app.rs", "server.rs", "lib.rs"].contains(&name.as_str())
            || name.starts_with("app/")
            || name.starts_with("server/")
        {
            &[]
        } else {
            &["crate::app::"]
        };
        for needle in forbidden {
            if text.contains(needle) {
                found.push(format!("{name} uses {needle}"));
            }
        }
    }
    assert!(found.is_empty(), "a lower layer reaches up: {found:?}");
}
