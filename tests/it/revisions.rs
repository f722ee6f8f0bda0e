//! History and undo: every change to an aide's files records a revision; restoring one brings its
//! files back as a new revision; revisions keep their bytes until they are dropped.

use axum::http::StatusCode;

use crate::app::{Req, TestApp};
use crate::files::{aide, blobs, cleanup, delete_file, queued, stored_sha};

async fn read(app: &TestApp, id: &str, path: &str, token: &str) -> (StatusCode, String) {
    let answer = app
        .send(Req::get(&format!("/api/aides/{id}/files/{path}")).bearer(token))
        .await;
    (answer.status, answer.body)
}

async fn revisions(app: &TestApp, id: &str, token: &str) -> Vec<(i64, String, Option<i64>, i64)> {
    let answer = app
        .send(Req::get(&format!("/api/aides/{id}/revisions")).bearer(token))
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| {
            (
                r["number"].as_i64().expect("number"),
                r["cause"].as_str().expect("cause").to_string(),
                r["restored_from"].as_i64(),
                r["file_count"].as_i64().expect("file_count"),
            )
        })
        .collect()
}

#[tokio::test]
async fn every_change_is_a_revision_and_restoring_one_loses_nothing() {
    let app = TestApp::new().await;
    let token = app.sign_in("history@example.com").await;
    let id = aide(&app, &token).await;
    let first = stored_sha(&app, &id, "index.html", &token, "<h1>v1</h1>").await;
    stored_sha(&app, &id, "style.css", &token, "h1 {}").await;
    let second = stored_sha(&app, &id, "index.html", &token, "<h1>v2</h1>").await;
    delete_file(&app, &id, "style.css", &token).await;
    assert_eq!(
        revisions(&app, &id, &token).await,
        vec![
            (4, "delete".into(), None, 1),
            (3, "upload".into(), None, 2),
            (2, "upload".into(), None, 2),
            (1, "upload".into(), None, 1),
        ]
    );

    // Back to revision 2: v1 with its stylesheet.
    let restored = app
        .send(Req::post(&format!("/api/aides/{id}/revisions/2/restore")).bearer(&token))
        .await;
    assert_eq!(restored.status, StatusCode::CREATED, "{}", restored.body);
    assert_eq!(restored.json()["number"], 5);
    assert_eq!(restored.json()["cause"], "restore");
    assert_eq!(restored.json()["restored_from"], 2);
    assert_eq!(
        read(&app, &id, "index.html", &token).await,
        (StatusCode::OK, "<h1>v1</h1>".into())
    );
    assert_eq!(
        read(&app, &id, "style.css", &token).await,
        (StatusCode::OK, "h1 {}".into())
    );
    // Nothing was lost: v2 is in revision 4 still, and its bytes are stored.
    let mut expected = vec![first.clone(), second.clone()];
    expected.sort();
    let mut stored = blobs(&app, &id).await;
    stored.retain(|b| expected.contains(b));
    assert_eq!(stored, expected);
    assert_eq!(
        cleanup(&app).await,
        0,
        "every blob is still some revision's"
    );
    let again = app
        .send(Req::post(&format!("/api/aides/{id}/revisions/4/restore")).bearer(&token))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(
        read(&app, &id, "index.html", &token).await,
        (StatusCode::OK, "<h1>v2</h1>".into())
    );
    assert_eq!(
        read(&app, &id, "style.css", &token).await.0,
        StatusCode::NOT_FOUND
    );

    let actions: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .map(|(action, _, _)| action)
        .filter(|a| a == "revision.restore")
        .collect();
    assert_eq!(actions.len(), 2);

    // Pages of the list.
    let page = app
        .send(Req::get(&format!("/api/aides/{id}/revisions?limit=2")).bearer(&token))
        .await;
    let cursor = page.json()["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_string();
    let next = app
        .send(
            Req::get(&format!(
                "/api/aides/{id}/revisions?limit=2&cursor={cursor}"
            ))
            .bearer(&token),
        )
        .await;
    let numbers: Vec<i64> = next.json()["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| r["number"].as_i64().expect("number"))
        .collect();
    assert_eq!(numbers, vec![4, 3]);
}

#[tokio::test]
async fn dropped_revisions_give_their_bytes_back() {
    let app = TestApp::with(&[("FREE_REVISIONS_KEPT", "2")]).await;
    let token = app.sign_in("bounded@example.com").await;
    let id = aide(&app, &token).await;
    let v1 = stored_sha(&app, &id, "index.html", &token, "one").await;
    let v2 = stored_sha(&app, &id, "index.html", &token, "two").await;
    assert_eq!(queued(&app).await, 0, "revision 1 still has v1");
    let v3 = stored_sha(&app, &id, "index.html", &token, "three").await;
    // Revision 1 is dropped: v1 is nobody's now.
    assert_eq!(queued(&app).await, 1);
    assert_eq!(cleanup(&app).await, 1);
    let mut left = vec![v2, v3];
    left.sort();
    assert_eq!(blobs(&app, &id).await, left);
    assert!(!left.contains(&v1));
    let numbers: Vec<i64> = revisions(&app, &id, &token)
        .await
        .into_iter()
        .map(|(n, _, _, _)| n)
        .collect();
    assert_eq!(numbers, vec![3, 2]);
    let gone = app
        .send(Req::post(&format!("/api/aides/{id}/revisions/1/restore")).bearer(&token))
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.json()["code"], "NOT_FOUND");
}

#[tokio::test]
async fn revisions_are_their_owners_only() {
    let app = TestApp::new().await;
    let owner = app.sign_in("owner@example.com").await;
    let other = app.sign_in("other@example.com").await;
    let id = aide(&app, &owner).await;
    stored_sha(&app, &id, "index.html", &owner, "mine").await;
    let requests = || {
        [
            Req::get(&format!("/api/aides/{id}/revisions")),
            Req::post(&format!("/api/aides/{id}/revisions/1/restore")),
        ]
    };
    for req in requests() {
        let without = app.send(req).await;
        assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    }
    for req in requests() {
        let answer = app.send(req.bearer(&other)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert_eq!(answer.json()["code"], "NOT_FOUND");
    }
    for bad in ["0", "-1", "x", "99999999999"] {
        let answer = app
            .send(Req::post(&format!("/api/aides/{id}/revisions/{bad}/restore")).bearer(&owner))
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
    let cursor = app
        .send(Req::get(&format!("/api/aides/{id}/revisions?cursor=zz")).bearer(&owner))
        .await;
    assert_eq!(cursor.status, StatusCode::UNPROCESSABLE_ENTITY);
    let missing = app
        .send(Req::post(&format!("/api/aides/{id}/revisions/7/restore")).bearer(&owner))
        .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    // The other user's attempts changed nothing.
    assert_eq!(
        read(&app, &id, "index.html", &owner).await,
        (StatusCode::OK, "mine".into())
    );
    assert_eq!(revisions(&app, &id, &owner).await.len(), 1);
}

#[tokio::test]
async fn a_named_revision_is_published_without_touching_the_workspace() {
    let app = TestApp::with(&[("FREE_REVISIONS_KEPT", "3")]).await;
    let token = app.sign_in("named@example.com").await;
    let other = app.sign_in("named-other@example.com").await;
    let id = aide(&app, &token).await;
    stored_sha(&app, &id, "index.html", &token, "<h1>first</h1>").await;
    stored_sha(&app, &id, "index.html", &token, "<h1>second</h1>").await;
    let publish = |body: serde_json::Value, who: &str| {
        app.send(
            Req::post(&format!("/api/aides/{id}/publish"))
                .bearer(who)
                .json(body),
        )
    };

    let old = publish(serde_json::json!({"revision": 1}), &token).await;
    assert_eq!(old.status, StatusCode::CREATED, "{}", old.body);
    assert_eq!(old.json()["version"]["version"], 1);
    assert_eq!(old.json()["version"]["revision"], 1);
    let slug = old.json()["aide"]["slug"]
        .as_str()
        .expect("slug")
        .to_string();
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>first</h1>"), "{}", page.body);
    assert_eq!(
        read(&app, &id, "index.html", &token).await,
        (StatusCode::OK, "<h1>second</h1>".into()),
        "the workspace is left as it is"
    );
    assert_eq!(
        revisions(&app, &id, &token).await.len(),
        2,
        "no revision made"
    );

    // Without a revision, the workspace as it is: the newest revision.
    let now = publish(serde_json::json!({}), &token).await;
    assert_eq!(now.status, StatusCode::CREATED, "{}", now.body);
    assert_eq!(now.json()["version"]["revision"], 2);
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert!(page.body.contains("<h1>second</h1>"), "{}", page.body);

    // A version published again keeps the revision it shows.
    let again = app
        .send(Req::post(&format!("/api/aides/{id}/versions/1/restore")).bearer(&token))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.body);
    assert_eq!(again.json()["version"]["revision"], 1);
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&token))
        .await
        .json();
    let shown: Vec<(i64, i64)> = listed["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| {
            (
                v["version"].as_i64().expect("version"),
                v["revision"].as_i64().expect("revision"),
            )
        })
        .collect();
    assert_eq!(shown, vec![(3, 1), (2, 2), (1, 1)]);

    // Revisions that are not there, or not numbers, are refused by name and publish nothing.
    stored_sha(&app, &id, "index.html", &token, "<h1>third</h1>").await;
    stored_sha(&app, &id, "index.html", &token, "<h1>fourth</h1>").await;
    for (body, says) in [
        (
            serde_json::json!({"revision": 1}),
            "no revision 1 (its newest is 4",
        ),
        (serde_json::json!({"revision": 9}), "no revision 9"),
        (serde_json::json!({"revision": 0}), "1 or more"),
        (serde_json::json!({"revision": "2"}), "revision"),
    ] {
        let refused = publish(body.clone(), &token).await;
        assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(
            refused.json()["code"],
            "VALIDATION_FAILED",
            "{}",
            refused.body
        );
        assert!(refused.body.contains(says), "{body}: {}", refused.body);
    }
    let foreign = publish(serde_json::json!({"revision": 2}), &other).await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);
    let count = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(&token))
        .await
        .json()["versions"]
        .as_array()
        .map(Vec::len);
    assert_eq!(count, Some(3), "nothing refused was published");
}
