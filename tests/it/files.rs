//! Workspace files through the real router, on local storage.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::app::{Req, TestApp};
use crate::support::{exec, scalar};

pub(crate) async fn aide(app: &TestApp, token: &str) -> String {
    app.create_aide(token, "Page").await
}

pub(crate) async fn delete_file(app: &TestApp, id: &str, path: &str, token: &str) {
    let gone = app
        .send(Req::new(Method::DELETE, &format!("/api/aides/{id}/files/{path}")).bearer(token))
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT, "{}", gone.body);
}

fn put(id: &str, path: &str, token: &str, body: &str, content_type: Option<&str>) -> Req {
    let mut req = Req::new(Method::PUT, &format!("/api/aides/{id}/files/{path}")).bearer(token);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.raw_body(body)
}

#[tokio::test]
async fn files_are_stored_listed_read_replaced_and_deleted() {
    let app = TestApp::new().await;
    let token = app.sign_in("fi@example.com").await;
    let id = aide(&app, &token).await;

    let stored = app
        .send(put(&id, "index.html", &token, "<h1>Hi</h1>", None))
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    let info = stored.json();
    assert_eq!(info["path"], "index.html");
    assert_eq!(info["size_bytes"], 11);
    assert_eq!(info["content_type"], "text/html; charset=utf-8");
    assert_eq!(info["sha256"].as_str().expect("sha").len(), 64);
    app.send(put(
        &id,
        "css/site.css",
        &token,
        "h1{color:red}",
        Some("text/css"),
    ))
    .await;

    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/files")).bearer(&token))
        .await
        .json();
    let paths: Vec<&str> = listed["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["path"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(paths, ["css/site.css", "index.html"]);
    assert_eq!(listed["total_bytes"], 24);

    let page = app
        .send(Req::get(&format!("/api/aides/{id}/files/index.html")).bearer(&token))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "<h1>Hi</h1>");
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(page.header("content-security-policy"), Some("sandbox"));
    assert!(page.header("etag").is_some());

    let replaced = app
        .send(put(&id, "index.html", &token, "<h1>Bye</h1>", None))
        .await;
    assert_eq!(replaced.json()["size_bytes"], 12);
    let page = app
        .send(Req::get(&format!("/api/aides/{id}/files/index.html")).bearer(&token))
        .await;
    assert_eq!(page.body, "<h1>Bye</h1>");

    let deleted = app
        .send(
            Req::new(
                Method::DELETE,
                &format!("/api/aides/{id}/files/css/site.css"),
            )
            .bearer(&token),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let gone = app
        .send(Req::get(&format!("/api/aides/{id}/files/css/site.css")).bearer(&token))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    let actions: Vec<(String, serde_json::Value)> = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a.starts_with("file."))
        .map(|(a, _, d)| (a, d))
        .collect();
    assert_eq!(actions.len(), 4);
    assert_eq!(
        actions[0].1,
        json!({"path": "index.html", "size_bytes": 11})
    );
    assert!(
        !actions.iter().any(|(_, d)| d.to_string().contains("<h1>")),
        "no contents in audit rows"
    );
}

#[tokio::test]
async fn traversal_and_malformed_paths_are_refused() {
    let app = TestApp::new().await;
    let token = app.sign_in("tr@example.com").await;
    let id = aide(&app, &token).await;
    for path in [
        "..%2Fsecret",
        "a/../b",
        "a/./b",
        "a%5Cb",
        "a%00b",
        "%2Fetc%2Fpasswd",
        "a//b",
    ] {
        let answer = app.send(put(&id, path, &token, "x", None)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {}",
            answer.body
        );
        assert_eq!(answer.json()["fields"][0]["field"], "path", "{path}");
    }
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/files")).bearer(&token))
        .await
        .json();
    assert_eq!(listed["files"], json!([]));
}

#[tokio::test]
async fn size_limits_depend_on_the_tier() {
    let app = TestApp::with(&[
        ("FREE_MAX_FILE_BYTES", "100"),
        ("FREE_MAX_AIDE_BYTES", "250"),
        ("PRO_MAX_FILE_BYTES", "1000"),
        ("PRO_MAX_AIDE_BYTES", "5000"),
    ])
    .await;
    let token = app.sign_in("sz@example.com").await;
    let id = aide(&app, &token).await;
    let big = "x".repeat(101);
    let answer = app.send(put(&id, "big.txt", &token, &big, None)).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.json()["code"], "FILE_TOO_LARGE");
    for name in ["a.txt", "b.txt"] {
        let ok = app
            .send(put(&id, name, &token, &"x".repeat(100), None))
            .await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let full = app
        .send(put(&id, "c.txt", &token, &"x".repeat(100), None))
        .await;
    assert_eq!(full.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(full.json()["code"], "AIDE_STORAGE_FULL");
    // Replacing a file counts its new size, not both.
    let replace = app
        .send(put(&id, "a.txt", &token, &"y".repeat(100), None))
        .await;
    assert_eq!(replace.status, StatusCode::OK);

    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update users set tier = 'pro' where email = 'sz@example.com'",
        &[],
    )
    .await
    .expect("pro");
    tx.commit().await.expect("commit");
    let pro = app
        .send(put(&id, "big.txt", &token, &"x".repeat(900), None))
        .await;
    assert_eq!(pro.status, StatusCode::OK, "{}", pro.body);
}

#[tokio::test]
async fn another_user_cannot_touch_the_files() {
    let app = TestApp::new().await;
    let a = app.sign_in("fa@example.com").await;
    let b = app.sign_in("fb@example.com").await;
    let id = aide(&app, &a).await;
    app.send(put(&id, "index.html", &a, "<p>A</p>", None)).await;
    for req in [
        Req::get(&format!("/api/aides/{id}/files")),
        Req::get(&format!("/api/aides/{id}/files/index.html")),
        Req::new(Method::DELETE, &format!("/api/aides/{id}/files/index.html")),
        Req::new(Method::PUT, &format!("/api/aides/{id}/files/index.html")).raw_body("<p>B</p>"),
    ] {
        let answer = app.send(req.bearer(&b)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    }
    let page = app
        .send(Req::get(&format!("/api/aides/{id}/files/index.html")).bearer(&a))
        .await;
    assert_eq!(page.body, "<p>A</p>");
    let none = app.send(Req::get(&format!("/api/aides/{id}/files"))).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
}

/// The same files on a real S3-protocol server: the blob lands in the workspace bucket under the
/// aide's prefix, and reads come back from it.
#[tokio::test]
async fn files_are_stored_in_an_s3_bucket() {
    let app = TestApp::on_s3(None).await;
    let token = app.sign_in("s3@example.com").await;
    let id = aide(&app, &token).await;
    let stored = app
        .send(put(&id, "index.html", &token, "<h1>On S3</h1>", None))
        .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
    let sha = stored.json()["sha256"].as_str().expect("sha").to_string();

    let page = app
        .send(Req::get(&format!("/api/aides/{id}/files/index.html")).bearer(&token))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "<h1>On S3</h1>");

    use futures_util::TryStreamExt;
    let prefix = object_store::path::Path::from(format!("aides/{id}"));
    let objects: Vec<String> = app
        .state
        .storage
        .workspace
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list the bucket");
    assert_eq!(objects, [format!("aides/{id}/blobs/{sha}")]);
}

/// The workspace blobs of aide `id`, as hex SHA-256s, sorted.
pub(crate) async fn blobs(app: &TestApp, id: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let prefix = object_store::path::Path::from(format!("aides/{id}/blobs"));
    let mut found: Vec<String> = app
        .state
        .storage
        .workspace
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.filename().unwrap_or_default().to_string())
        .try_collect()
        .await
        .expect("list blobs");
    found.sort();
    found
}

pub(crate) async fn stored_sha(
    app: &TestApp,
    id: &str,
    path: &str,
    token: &str,
    body: &str,
) -> String {
    let answer = app.send(put(id, path, token, body, None)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()["sha256"].as_str().expect("sha").to_string()
}

pub(crate) async fn cleanup(app: &TestApp) -> usize {
    aide::storage::cleanup_due(&app.t.db, &app.state.storage)
        .await
        .expect("cleanup")
}

pub(crate) async fn queued(app: &TestApp) -> i64 {
    let admin = app.t.admin_conn().await;
    scalar(&admin, "select count(*) from storage_cleanup", &[])
        .await
        .expect("count")
}

/// Bytes that no file has any more are deleted; bytes another file still has stay.
async fn unreferenced_blobs_are_deleted(app: TestApp) {
    let token = app.sign_in("gc@example.com").await;
    let id = aide(&app, &token).await;
    let first = stored_sha(&app, &id, "index.html", &token, "<h1>one</h1>").await;
    let second = stored_sha(&app, &id, "index.html", &token, "<h1>two</h1>").await;
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(blobs(&app, &id).await, both, "replaced, not yet cleaned");
    // The same bytes again under the same name change nothing: nothing is queued.
    stored_sha(&app, &id, "index.html", &token, "<h1>two</h1>").await;
    assert_eq!(queued(&app).await, 1);
    assert_eq!(cleanup(&app).await, 1);
    assert_eq!(blobs(&app, &id).await, vec![second.clone()]);

    // A second file with the same bytes keeps them when the first goes.
    stored_sha(&app, &id, "copy.html", &token, "<h1>two</h1>").await;
    delete_file(&app, &id, "index.html", &token).await;
    assert_eq!(queued(&app).await, 0, "still referenced: nothing queued");
    assert_eq!(blobs(&app, &id).await, vec![second.clone()]);
    let copy = app
        .send(Req::get(&format!("/api/aides/{id}/files/copy.html")).bearer(&token))
        .await;
    assert_eq!(copy.body, "<h1>two</h1>");

    delete_file(&app, &id, "copy.html", &token).await;
    assert_eq!(cleanup(&app).await, 1);
    assert!(blobs(&app, &id).await.is_empty());
    assert_eq!(queued(&app).await, 0);
}

/// One revision kept: a file's old bytes are unreferenced as soon as the next change drops the
/// revision that had them (with the default history, revisions keep them; see revisions.rs).
const NO_HISTORY: &[(&str, &str)] = &[("FREE_REVISIONS_KEPT", "1")];

#[tokio::test]
async fn unreferenced_blobs_are_deleted_locally() {
    unreferenced_blobs_are_deleted(TestApp::with(NO_HISTORY).await).await;
}

#[tokio::test]
async fn unreferenced_blobs_are_deleted_on_s3() {
    unreferenced_blobs_are_deleted(TestApp::on_s3_with(None, NO_HISTORY).await).await;
}

/// A blob queued when its last file went, then uploaded again before the worker ran, is kept:
/// the worker checks again before deleting.
#[tokio::test]
async fn a_blob_uploaded_again_before_the_worker_runs_is_kept() {
    let app = TestApp::with(NO_HISTORY).await;
    let token = app.sign_in("again@example.com").await;
    let id = aide(&app, &token).await;
    let sha = stored_sha(&app, &id, "a.html", &token, "same bytes").await;
    delete_file(&app, &id, "a.html", &token).await;
    assert_eq!(queued(&app).await, 1);
    stored_sha(&app, &id, "b.html", &token, "same bytes").await;

    assert_eq!(cleanup(&app).await, 1, "the entry is done with");
    assert_eq!(queued(&app).await, 0);
    assert_eq!(blobs(&app, &id).await, vec![sha]);
    let page = app
        .send(Req::get(&format!("/api/aides/{id}/files/b.html")).bearer(&token))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "same bytes");
}

/// While an upload or publish of the aide holds its blob lock, the worker leaves the aide's blobs
/// alone and tries again later.
#[tokio::test]
async fn the_worker_waits_for_uploads_and_publishes_under_way() {
    let app = TestApp::with(NO_HISTORY).await;
    let token = app.sign_in("busy@example.com").await;
    let id = aide(&app, &token).await;
    stored_sha(&app, &id, "a.html", &token, "old").await;
    stored_sha(&app, &id, "a.html", &token, "new").await;
    assert_eq!(blobs(&app, &id).await.len(), 2);

    // An upload under way, as the handler holds it: the blob lock, shared, in user scope.
    let owner: uuid::Uuid = {
        let admin = app.t.admin_conn().await;
        scalar(
            &admin,
            "select user_id from aides where id = $1::uuid",
            &[&aide_id(&id)],
        )
        .await
        .expect("owner")
    };
    let upload = app
        .t
        .db
        .user(aide::db::UserId(owner))
        .await
        .expect("user scope");
    exec(
        &upload,
        "select pg_advisory_xact_lock_shared($1, hashtext($2))",
        &[&aide::files::BLOB_LOCK_CLASS, &id],
    )
    .await
    .expect("shared lock");
    assert_eq!(cleanup(&app).await, 0, "busy: nothing deleted");
    assert_eq!(blobs(&app, &id).await.len(), 2);
    let admin = app.t.admin_conn().await;
    let entry = admin
        .query_one("select attempts, last_error from storage_cleanup", &[])
        .await
        .expect("entry");
    let (attempts, error): (i32, Option<String>) = (entry.get(0), entry.get(1));
    assert_eq!(attempts, 1);
    assert!(error.unwrap_or_default().contains("under way"));
    // Ended by a commit that is waited for (the transaction wrote nothing, so it is the same as a
    // rollback): a rollback is only queued, and the lock must be gone before the worker runs.
    upload.commit().await.expect("end the upload");

    admin
        .execute("update storage_cleanup set next_attempt_at = now()", &[])
        .await
        .expect("due again");
    assert_eq!(cleanup(&app).await, 1);
    assert_eq!(blobs(&app, &id).await.len(), 1);
}

/// The owner of aide `id`.
async fn owner_of(app: &TestApp, id: &str) -> aide::db::UserId {
    let admin = app.t.admin_conn().await;
    let user: uuid::Uuid = scalar(
        &admin,
        "select user_id from aides where id = $1::uuid",
        &[&aide_id(id)],
    )
    .await
    .expect("owner");
    aide::db::UserId(user)
}

/// Aide `id` (as the API gives it) as a uuid, for binding to a uuid parameter.
fn aide_id(id: &str) -> uuid::Uuid {
    id.parse().expect("an aide id")
}

/// An upload is checked again when it is recorded, after its blob was stored and with no
/// connection held in between. Refused then (another file took the aide's last place meanwhile),
/// it removes its guard row, and the blob it stored is queued and deleted.
#[tokio::test]
async fn an_upload_refused_after_its_blob_was_stored_leaves_nothing_behind() {
    use sha2::{Digest, Sha256};

    let app = std::sync::Arc::new(TestApp::with(&[("FREE_MAX_FILES_PER_AIDE", "1")]).await);
    let token = app.sign_in("late@example.com").await;
    let id = aide(&app, &token).await;

    // Another writer holds the aide's row the way the upload's last step wants it, and adds a
    // file that takes the aide's only place, not yet committed.
    let mut owner = app.t.owner_conn().await;
    let writer = owner.transaction().await.expect("begin");
    writer
        .execute(
            "select 1 from aides where id = $1::uuid for no key update",
            &[&aide_id(&id)],
        )
        .await
        .expect("hold the aide");
    writer
        .execute(
            "insert into workspace_files (aide_id, user_id, path, size_bytes, content_type, sha256)
             select id, user_id, 'other.txt', 5, 'text/plain', sha256('other'::bytea)
             from aides where id = $1::uuid",
            &[&aide_id(&id)],
        )
        .await
        .expect("another file");

    let upload = {
        let (app, req) = (
            app.clone(),
            put(&id, "a.txt", &token, "refused bytes", None),
        );
        tokio::spawn(async move { app.send(req).await })
    };
    let sha: String = Sha256::digest(b"refused bytes")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !blobs(&app, &id).await.contains(&sha) {
        assert!(
            std::time::Instant::now() < deadline,
            "the blob is never stored while another transaction holds the aide"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    writer.commit().await.expect("commit the other file");

    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), upload)
        .await
        .expect("answered")
        .expect("task");
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
    assert_eq!(answer.json()["code"], "AIDE_FILE_LIMIT");
    assert_eq!(app.count_rows("pending_blobs").await, 0, "the guard went");
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/files")).bearer(&token))
        .await
        .json();
    assert_eq!(listed["files"][0]["path"], "other.txt");
    assert_eq!(listed["files"].as_array().expect("files").len(), 1);
    assert_eq!(queued(&app).await, 1, "the stored blob is queued");
    assert_eq!(cleanup(&app).await, 1);
    assert!(blobs(&app, &id).await.is_empty(), "and deleted");
}

/// A guard row (an upload or publish between storing or reading bytes and recording them) keeps
/// its blob from the storage worker. One left by a request that died is removed by the cleanup job
/// once it is an hour old, and its blob then goes too.
async fn a_guarded_blob_is_kept_until_its_guard_is_abandoned(app: TestApp) {
    let token = app.sign_in("guard@example.com").await;
    let id = aide(&app, &token).await;
    let sha = stored_sha(&app, &id, "a.html", &token, "guarded bytes").await;
    let user = owner_of(&app, &id).await;
    let tx = app.t.db.user(user).await.expect("user scope");
    exec(
        &tx,
        "insert into pending_blobs (aide_id, user_id, sha256)
         values ($1::uuid, $2, decode($3, 'hex'))",
        &[&aide_id(&id), &user.0, &sha],
    )
    .await
    .expect("a guard row");
    tx.commit().await.expect("commit");

    delete_file(&app, &id, "a.html", &token).await;
    assert_eq!(
        queued(&app).await,
        0,
        "no file has the bytes, but a guard does: its release will queue them"
    );
    // An entry queued before the guard was taken: the worker checks the guard again.
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "insert into storage_cleanup (prefix) values ($1)",
            &[&format!("aides/{id}/blobs/{sha}")],
        )
        .await
        .expect("an earlier entry");
    assert_eq!(cleanup(&app).await, 1, "the entry is done with");
    assert_eq!(
        blobs(&app, &id).await,
        vec![sha.clone()],
        "a guard names it"
    );

    aide::jobs::cleanup(&app.t.db).await.expect("cleanup job");
    assert_eq!(
        app.count_rows("pending_blobs").await,
        1,
        "a fresh guard stays"
    );
    assert_eq!(queued(&app).await, 0);

    owner
        .execute(
            "update pending_blobs set created_at = now() - interval '61 minutes'",
            &[],
        )
        .await
        .expect("an hour old");
    aide::jobs::cleanup(&app.t.db).await.expect("cleanup job");
    assert_eq!(app.count_rows("pending_blobs").await, 0, "abandoned");
    assert_eq!(queued(&app).await, 1, "its blob is queued");
    assert_eq!(cleanup(&app).await, 1);
    assert!(blobs(&app, &id).await.is_empty());
}

#[tokio::test]
async fn a_guarded_blob_is_kept_until_its_guard_is_abandoned_locally() {
    a_guarded_blob_is_kept_until_its_guard_is_abandoned(TestApp::with(NO_HISTORY).await).await;
}

#[tokio::test]
async fn a_guarded_blob_is_kept_until_its_guard_is_abandoned_on_s3() {
    a_guarded_blob_is_kept_until_its_guard_is_abandoned(
        TestApp::on_s3_with(None, NO_HISTORY).await,
    )
    .await;
}

/// An upload whose aide is deleted while its bytes are being written, after the deleted aide's
/// folder was emptied, removes what it wrote itself: nothing else would.
#[tokio::test]
async fn an_upload_racing_its_aides_deletion_leaves_no_object_behind() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let app = TestApp::build(&[], 4, |state| {
        state.storage.workspace = std::sync::Arc::new(crate::stores::WatchedStore {
            inner: state.storage.workspace.clone(),
            reads: crate::stores::Reads::default(),
            put_gate: Some(gate.clone()),
        });
    })
    .await;
    let token = app.sign_in("race@example.com").await;
    let id = aide(&app, &token).await;

    let upload = app.send(put(&id, "index.html", &token, "<p>late</p>", None));
    let delete_meanwhile = async {
        // The upload has protected its blob and is writing it (held at the gate).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.count_rows("pending_blobs").await == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the upload never began"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let deleted = app
            .send(Req::new(Method::DELETE, &format!("/api/aides/{id}")).bearer(&token))
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        assert_eq!(cleanup(&app).await, 1, "the aide's folder was emptied");
        gate.add_permits(1);
    };
    let (answer, ()) = tokio::join!(upload, delete_meanwhile);
    assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    assert!(
        blobs(&app, &id).await.is_empty(),
        "the late blob was removed"
    );
    assert_eq!(queued(&app).await, 0);
    assert_eq!(app.count_rows("pending_blobs").await, 0);
}
