//! The managed cluster: created once, reused across restarts, stopped cleanly.

use std::os::unix::fs::PermissionsExt;

use aide::db::managed::{ClusterOptions, ManagedPostgres};

/// A temp folder the cluster's account can enter (when tests run as root, the cluster runs as
/// `postgres`).
pub fn reachable_temp_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

#[tokio::test]
async fn a_cluster_is_created_once_and_reused_across_restarts() {
    let dir = reachable_temp_dir();
    let root = dir.path().join("postgres");
    let options = ClusterOptions {
        bindir: None,
        ephemeral: true,
    };

    let first = ManagedPostgres::start(&root, options.clone())
        .await
        .expect("first start");
    first
        .ensure_database("kept")
        .await
        .expect("create database");
    let pid_file = root.join("data").join("postmaster.pid");
    assert!(pid_file.exists(), "running cluster has a pid file");
    first.stop().await.expect("stop");
    assert!(!pid_file.exists(), "a clean shutdown removes the pid file");

    let second = ManagedPostgres::start(&root, options)
        .await
        .expect("second start");
    let conn = aide::db::connect(&second.admin_options("kept"))
        .await
        .expect("the database made before the restart is still there");
    let listen: String = conn
        .query_one("show listen_addresses", &[])
        .await
        .expect("show")
        .get(0);
    assert_eq!(listen, "", "no TCP listener");
    drop(conn);
    second.stop().await.expect("stop");
}

#[tokio::test]
async fn missing_binaries_name_the_variable_and_the_alternative() {
    let dir = reachable_temp_dir();
    let options = ClusterOptions {
        bindir: Some(dir.path().join("no-such-folder")),
        ephemeral: true,
    };
    let err = ManagedPostgres::start(&dir.path().join("postgres"), options)
        .await
        .expect_err("no binaries there");
    assert!(err.contains("PG_BINDIR"), "{err}");
}
