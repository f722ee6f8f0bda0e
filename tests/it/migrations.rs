//! The embedded migrations: complete, repeatable, and guarded against edits after the fact.

use aide::db::migrate::{self, MIGRATIONS, MigrateError};

use crate::support::TestDb;

#[test]
fn every_file_in_the_migrations_folder_is_embedded_in_order() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .collect();
    files.sort();
    let embedded: Vec<String> = MIGRATIONS.iter().map(|m| m.file_name()).collect();
    assert_eq!(embedded, files);
    for (i, m) in MIGRATIONS.iter().enumerate() {
        assert_eq!(m.version, i as i32 + 1, "versions run 1, 2, 3, ...");
        let on_disk = std::fs::read_to_string(dir.join(m.file_name())).expect("read");
        assert_eq!(
            m.sql,
            on_disk,
            "{} is embedded as it is on disk",
            m.file_name()
        );
    }
}

#[tokio::test]
async fn running_again_applies_nothing() {
    let t = TestDb::new().await;
    let admin = t.admin_conn().await;
    let applied = migrate::run(&admin).await.expect("migrate");
    assert!(applied.is_empty(), "already migrated, applied {applied:?}");
    let versions: Vec<i32> = admin
        .query(
            "select version from aide_meta.schema_migrations order by version",
            &[],
        )
        .await
        .expect("versions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let expected: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn a_migration_changed_after_it_was_applied_stops_the_run() {
    let t = TestDb::new().await;
    let admin = t.admin_conn().await;
    let tampered = admin
        .execute(
            "update aide_meta.schema_migrations set checksum = '\\x00' where version = 2",
            &[],
        )
        .await
        .expect("tamper");
    assert_eq!(tampered, 1);
    let err = migrate::run(&admin).await.expect_err("must refuse");
    assert!(
        matches!(err, MigrateError::Changed { version: 2, .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("changed after it was applied"),
        "{err}"
    );
}

#[tokio::test]
async fn a_database_newer_than_the_binary_stops_the_run() {
    let t = TestDb::new().await;
    let admin = t.admin_conn().await;
    admin
        .execute(
            "insert into aide_meta.schema_migrations (version, name, checksum) values (9999, 'future', '\\x00')",
            &[],
        )
        .await
        .expect("insert");
    let err = migrate::run(&admin).await.expect_err("must refuse");
    assert!(
        matches!(err, MigrateError::Unknown { version: 9999 }),
        "{err}"
    );
}

/// A failing migration leaves nothing half-applied: its transaction rolls back, and it is not
/// recorded.
#[tokio::test]
async fn a_failed_migration_leaves_nothing_behind() {
    let t = TestDb::new().await;
    let admin = t.admin_conn().await;
    // Pretend migration 2 never ran, while its tables still exist: re-running it must fail on
    // the first `create`, and roll back whole.
    let forgotten = admin
        .execute(
            "delete from aide_meta.schema_migrations where version = 2",
            &[],
        )
        .await
        .expect("forget");
    assert_eq!(forgotten, 1);
    let err = migrate::run(&admin).await.expect_err("must fail");
    assert!(
        matches!(err, MigrateError::Failed { version: 2, .. }),
        "{err}"
    );
    let recorded: i64 = admin
        .query_one(
            "select count(*) from aide_meta.schema_migrations where version = 2",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(recorded, 0);
    let role: String = admin
        .query_one("select current_user::text", &[])
        .await
        .expect("role")
        .get(0);
    assert_ne!(
        role, "aide_owner",
        "the owner role must not outlive the migration"
    );
}
