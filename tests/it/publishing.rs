//! Publishing through the real router: versions, restore, unpublish, limits of what may be
//! published, concurrency, and a storage failure part-way.

use axum::http::{Method, StatusCode};
use bytes_helper::{blob, read};
use serde_json::json;

use crate::app::{Req, TestApp, join_all};
use crate::support::{exec, scalar};

mod bytes_helper {
    use aide::storage::Storage;
    use sha2::{Digest, Sha256};

    /// Where `content` of aide `id` lives in the published bucket: stored by content.
    pub fn blob(id: &str, content: &str) -> String {
        let digest = Sha256::digest(content.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("aides/{id}/blobs/{hex}")
    }

    /// The content of `key` in the published bucket.
    pub async fn read(storage: &Storage, key: &str) -> String {
        let bytes = storage
            .published
            .get(&object_store::path::Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("{key}: {e}"))
            .bytes()
            .await
            .expect("bytes");
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

async fn aide_with_page(app: &TestApp, token: &str, html: &str) -> String {
    let id = app.create_aide(token, "Page").await;
    app.put_file(token, &id, "index.html", html).await;
    id
}

#[tokio::test]
async fn publish_versions_and_restore() {
    let app = TestApp::with(&[("PUBLIC_URL", "https://pages.example.com")]).await;
    let token = app.sign_in("pub@example.com").await;
    let id = aide_with_page(&app, &token, "<h1>One</h1>").await;
    app.put_file(&token, &id, "css/site.css", "h1{}").await;

    let first = app
        .send(
            Req::post(&format!("/api/aides/{id}/publish"))
                .bearer(&token)
                .json(json!({"notes": "first"})),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    let first = first.json();
    assert_eq!(first["version"]["version"], 1);
    assert_eq!(first["version"]["notes"], "first");
    assert_eq!(first["version"]["size_bytes"], 16);
    assert_eq!(first["aide"]["status"], "published");
    let slug = first["aide"]["slug"]
        .as_str()
        .expect("a slug was assigned")
        .to_string();
    assert_eq!(slug.len(), 10);
    assert_eq!(first["url"], format!("https://pages.example.com/s/{slug}/"));
    assert_eq!(
        first["version"]["url"],
        format!("https://pages.example.com/s/{slug}/v/1/")
    );
    assert_eq!(
        read(&app.state.storage, &blob(&id, "<h1>One</h1>")).await,
        "<h1>One</h1>"
    );
    assert_eq!(read(&app.state.storage, &blob(&id, "h1{}")).await, "h1{}");
    assert_eq!(app.published_objects(&id).await, 2);

    app.put_file(&token, &id, "index.html", "<h1>Two</h1>")
        .await;
    let second = app
        .send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await
        .json();
    assert_eq!(second["version"]["version"], 2);
    assert_eq!(second["aide"]["slug"], slug, "the slug stays");
    assert_eq!(
        read(&app.state.storage, &blob(&id, "<h1>Two</h1>")).await,
        "<h1>Two</h1>"
    );
    assert_eq!(
        read(&app.state.storage, &blob(&id, "<h1>One</h1>")).await,
        "<h1>One</h1>",
        "versions are immutable"
    );
    assert_eq!(
        app.published_objects(&id).await,
        3,
        "the unchanged stylesheet is stored once"
    );

    let restored = app
        .send(Req::post(&format!("/api/aides/{id}/versions/1/restore")).bearer(&token))
        .await;
    assert_eq!(restored.status, StatusCode::CREATED, "{}", restored.body);
    assert_eq!(restored.json()["version"]["version"], 3);
    assert_eq!(
        app.published_objects(&id).await,
        3,
        "a restored version stores nothing new"
    );

    let versions = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&token))
        .await
        .json();
    let numbers: Vec<i64> = versions["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(numbers, [3, 2, 1]);
    assert_eq!(versions["versions"][0]["notes"], "Restored from version 1");

    let missing = app
        .send(Req::post(&format!("/api/aides/{id}/versions/9/restore")).bearer(&token))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let bad = app
        .send(Req::post(&format!("/api/aides/{id}/versions/zero/restore")).bearer(&token))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);

    let down = app
        .send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    assert_eq!(down.json()["status"], "draft");
    let again = app
        .send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT);

    let actions: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .filter(|a| a.starts_with("aide.p") || a.starts_with("aide.u") || a.starts_with("aide.v"))
        .collect();
    assert_eq!(
        actions,
        [
            "aide.publish",
            "aide.publish",
            "aide.version_restore",
            "aide.unpublish"
        ]
    );
}

#[tokio::test]
async fn only_a_page_with_index_html_that_is_not_archived_is_published() {
    let app = TestApp::new().await;
    let token = app.sign_in("np@example.com").await;
    let id = app
        .send(Req::post("/api/aides").bearer(&token))
        .await
        .json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    app.put_file(&token, &id, "about.html", "<p>about</p>")
        .await;
    let answer = app
        .send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        answer.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("index.html")
    );

    app.put_file(&token, &id, "index.html", "<p>home</p>").await;
    app.send(Req::post(&format!("/api/aides/{id}/archive")).bearer(&token))
        .await;
    let archived = app
        .send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(archived.status, StatusCode::CONFLICT);
    assert_eq!(archived.json()["code"], "AIDE_ARCHIVED");
    let versions = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&token))
        .await
        .json();
    assert_eq!(versions["versions"], json!([]));
}

#[tokio::test]
async fn simultaneous_publishes_get_distinct_numbers() {
    let app = TestApp::with(&[("UPLOADS_IN_FLIGHT_PER_USER", "8")]).await;
    let token = app.sign_in("cp@example.com").await;
    let id = aide_with_page(&app, &token, "<p>x</p>").await;
    let answers = join_all(
        (0..5).map(|_| app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))),
    )
    .await;
    let mut numbers: Vec<i64> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
            a.json()["version"]["version"].as_i64().expect("number")
        })
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, [1, 2, 3, 4, 5]);
}

/// The published bucket does not exist: the copy fails part-way and no version is recorded.
#[tokio::test]
async fn a_storage_failure_leaves_no_version_behind() {
    let app = TestApp::on_s3(Some("no-such-bucket-here")).await;
    let token = app.sign_in("sf@example.com").await;
    let id = aide_with_page(&app, &token, "<p>x</p>").await;
    let failed = app
        .send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );
    let versions = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&token))
        .await
        .json();
    assert_eq!(versions["versions"], json!([]));
    let aide = app
        .send(Req::get(&format!("/api/aides/{id}")).bearer(&token))
        .await
        .json();
    assert_eq!(aide["status"], "draft");
    // The address was taken before copying began; the next attempt publishes under it.
    assert!(aide["slug"].is_string(), "{aide}");
    let owner = app.t.owner_conn().await;
    let pending: i64 = scalar(&owner, "select count(*) from pending_blobs", &[])
        .await
        .expect("count");
    assert_eq!(pending, 0, "the failed publish released its guard");
}

#[tokio::test]
async fn another_user_cannot_publish_or_see_versions() {
    let app = TestApp::new().await;
    let a = app.sign_in("pa@example.com").await;
    let b = app.sign_in("pb@example.com").await;
    let id = aide_with_page(&app, &a, "<p>A</p>").await;
    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&a))
        .await;
    for req in [
        Req::post(&format!("/api/aides/{id}/publish")),
        Req::post(&format!("/api/aides/{id}/unpublish")),
        Req::get(&format!("/api/aides/{id}/versions")),
        Req::post(&format!("/api/aides/{id}/versions/1/restore")),
    ] {
        let answer = app.send(req.bearer(&b)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
    }
    let versions = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&a))
        .await
        .json();
    assert_eq!(versions["versions"].as_array().expect("versions").len(), 1);
}

#[tokio::test]
async fn a_pro_users_chosen_slug_is_kept() {
    let app = TestApp::new().await;
    let token = app.sign_in("ps@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update users set tier = 'pro' where email = 'ps@example.com'",
        &[],
    )
    .await
    .expect("pro");
    tx.commit().await.expect("commit");
    let id = aide_with_page(&app, &token, "<p>x</p>").await;
    app.send(
        Req::new(Method::PATCH, &format!("/api/aides/{id}"))
            .bearer(&token)
            .json(json!({"slug": "poker-night"})),
    )
    .await;
    let published = app
        .send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await
        .json();
    assert_eq!(published["aide"]["slug"], "poker-night");
    assert!(
        published["url"]
            .as_str()
            .expect("url")
            .ends_with("/s/poker-night/")
    );
}

/// Deleting an aide queues its objects; the clean-up removes them from both buckets, on the local
/// folder and on a real S3-protocol server.
#[tokio::test]
async fn deleting_an_aide_removes_its_objects_from_both_buckets() {
    let local = TestApp::new().await;
    let s3 = TestApp::on_s3(None).await;
    for app in [&local, &s3] {
        let token = app.sign_in("del@example.com").await;
        let keep = aide_with_page(app, &token, "<p>keep</p>").await;
        let id = aide_with_page(app, &token, "<p>bye</p>").await;
        for aide in [&keep, &id] {
            let answer = app
                .send(Req::post(&format!("/api/aides/{aide}/publish")).bearer(&token))
                .await;
            assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        }
        let count = |prefix: String| async move {
            use futures_util::TryStreamExt;
            let prefix = object_store::path::Path::from(prefix);
            let mut n = 0;
            for store in [&app.state.storage.workspace, &app.state.storage.published] {
                let found: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
                n += found.len();
            }
            n
        };
        assert_eq!(
            count(format!("aides/{id}/")).await,
            2,
            "one blob, one published file"
        );

        let deleted = app
            .send(Req::new(Method::DELETE, &format!("/api/aides/{id}")).bearer(&token))
            .await;
        assert_eq!(deleted.status, StatusCode::NO_CONTENT);
        let done = aide::storage::cleanup_due(&app.t.db, &app.state.storage)
            .await
            .expect("cleanup");
        assert_eq!(done, 1);
        assert_eq!(
            count(format!("aides/{id}/")).await,
            0,
            "the deleted aide's objects are gone"
        );
        assert_eq!(
            count(format!("aides/{keep}/")).await,
            2,
            "another aide's objects stay"
        );
        assert_eq!(
            aide::storage::cleanup_due(&app.t.db, &app.state.storage)
                .await
                .expect("cleanup"),
            0,
            "nothing left queued"
        );
    }
}

/// A version stored before published bytes were kept by content (at `aides/{id}/v{N}/{path}`):
/// publishing the same page again copies its bytes into the blob folder rather than counting
/// them as there already.
#[tokio::test]
async fn republishing_after_a_version_of_the_old_layout_serves_every_file() {
    let app = TestApp::new().await;
    let token = app.sign_in("legacy@example.com").await;
    let id = aide_with_page(&app, &token, "<p>old</p>").await;
    let slug = app.publish(&token, &id).await;
    // Turn version 1 into one of the old layout: its row and its object.
    let store = &app.state.storage.published;
    let blob_path = object_store::path::Path::from(blob(&id, "<p>old</p>"));
    let legacy = object_store::path::Path::from(format!("aides/{id}/v1/index.html"));
    store.copy(&blob_path, &legacy).await.expect("copy");
    store.delete(&blob_path).await.expect("delete");
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "update published_versions set r2_key = $1 where version = 1",
            &[&format!("aides/{id}/v1/")],
        )
        .await
        .expect("old layout");
    let old = app.send(Req::get(&format!("/s/{slug}/v/1/"))).await;
    assert_eq!(old.status, StatusCode::OK, "the old layout is still served");

    app.publish(&token, &id).await;
    let page = app.send(Req::get(&format!("/s/{slug}/v/2/"))).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("<p>old</p>"));
}
