//! What one free account may store and do (finding 7): files per aide, bytes across workspace and
//! published versions, publishes per hour, and the text of a conversation.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::app::{Answer, Req, TestApp};

fn put(id: &str, path: &str, token: &str, body: &str) -> Req {
    Req::new(Method::PUT, &format!("/api/aides/{id}/files/{path}"))
        .bearer(token)
        .raw_body(body)
}

fn publish(id: &str, token: &str) -> Req {
    Req::post(&format!("/api/aides/{id}/publish")).bearer(token)
}

fn assert_refused(answer: &Answer, status: StatusCode, code: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    assert_eq!(answer.json()["code"], code, "{}", answer.body);
}

async fn version_count(app: &TestApp, id: &str, token: &str) -> usize {
    let versions = app
        .send(Req::get(&format!("/api/aides/{id}/versions")).bearer(token))
        .await
        .json();
    versions["versions"].as_array().expect("versions").len()
}

#[tokio::test]
async fn an_aide_holds_at_most_its_tiers_number_of_files_even_empty_ones() {
    let app = TestApp::with(&[("FREE_MAX_FILES_PER_AIDE", "3")]).await;
    let token = app.sign_in("count@example.com").await;
    let id = app.create_aide(&token, "Many").await;
    for name in ["a.txt", "b.txt", "c.txt"] {
        let stored = app.send(put(&id, name, &token, "")).await;
        assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);
        assert_eq!(stored.json()["size_bytes"], 0);
    }
    let fourth = app.send(put(&id, "d.txt", &token, "")).await;
    assert_refused(&fourth, StatusCode::PAYLOAD_TOO_LARGE, "AIDE_FILE_LIMIT");
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/files")).bearer(&token))
        .await
        .json();
    assert_eq!(listed["files"].as_array().expect("files").len(), 3);

    // Replacing a file adds none; after a delete there is room again.
    let replaced = app.send(put(&id, "a.txt", &token, "now with bytes")).await;
    assert_eq!(replaced.status, StatusCode::OK, "{}", replaced.body);
    let gone = app
        .send(Req::new(Method::DELETE, &format!("/api/aides/{id}/files/b.txt")).bearer(&token))
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);
    let fourth = app.send(put(&id, "d.txt", &token, "")).await;
    assert_eq!(fourth.status, StatusCode::OK, "{}", fourth.body);

    // Each aide has its own count.
    let other = app.create_aide(&token, "Other").await;
    let first = app.send(put(&other, "a.txt", &token, "")).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
}

/// The account's bytes count its workspace and every published version, identical bytes once.
#[tokio::test]
async fn published_versions_count_against_the_account_and_identical_bytes_count_once() {
    let app = TestApp::with(&[("FREE_MAX_ACCOUNT_BYTES", "1000")]).await;
    let token = app.sign_in("bytes@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    let first = "a".repeat(400);
    app.put_file(&token, &id, "index.html", &first).await;

    // 400 in the workspace, 400 published.
    let v1 = app.send(publish(&id, &token)).await;
    assert_eq!(v1.status, StatusCode::CREATED, "{}", v1.body);
    // The same bytes again: nothing new is stored, so it is allowed.
    let v2 = app.send(publish(&id, &token)).await;
    assert_eq!(v2.status, StatusCode::CREATED, "{}", v2.body);
    assert_eq!(app.published_objects(&id).await, 1);

    // 400 + 300 in the workspace and 400 published would pass 1,000.
    let more = app
        .send(put(&id, "more.txt", &token, &"m".repeat(300)))
        .await;
    assert_refused(&more, StatusCode::PAYLOAD_TOO_LARGE, "ACCOUNT_STORAGE_FULL");
    // Changed bytes in place: 400 in the workspace, 400 published.
    let changed = app
        .send(put(&id, "index.html", &token, &"b".repeat(400)))
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);

    // Publishing them would store 400 more: refused, and nothing is recorded or stored.
    let refused = app.send(publish(&id, &token)).await;
    assert_refused(
        &refused,
        StatusCode::PAYLOAD_TOO_LARGE,
        "ACCOUNT_STORAGE_FULL",
    );
    assert_eq!(version_count(&app, &id, &token).await, 2);
    assert_eq!(app.published_objects(&id).await, 1);
    assert_eq!(app.count_rows("pending_blobs").await, 0);
    let publishes = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "aide.publish")
        .count();
    assert_eq!(publishes, 2);
    let page = app.send(Req::get(&format!("/s/{}/", slug(&v1)))).await;
    assert!(
        page.body.contains(&first),
        "the first version is still live"
    );

    // Another aide of the same account shares the quota.
    let other = app.create_aide(&token, "Other").await;
    let elsewhere = app
        .send(put(&other, "x.txt", &token, &"x".repeat(300)))
        .await;
    assert_refused(
        &elsewhere,
        StatusCode::PAYLOAD_TOO_LARGE,
        "ACCOUNT_STORAGE_FULL",
    );
}

fn slug(published: &Answer) -> String {
    published.json()["aide"]["slug"]
        .as_str()
        .expect("slug")
        .to_string()
}

#[tokio::test]
async fn publishes_and_restores_are_limited_per_hour() {
    let app = TestApp::with(&[("PUBLISHES_PER_USER_PER_HOUR", "2")]).await;
    let token = app.sign_in("often@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>x</p>").await;
    for _ in 0..2 {
        let answer = app.send(publish(&id, &token)).await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    }
    let third = app.send(publish(&id, &token)).await;
    assert_refused(&third, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    let retry: u64 = third
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=3600).contains(&retry), "{retry}");
    let restore = app
        .send(Req::post(&format!("/api/aides/{id}/versions/1/restore")).bearer(&token))
        .await;
    assert_refused(&restore, StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED");
    assert_eq!(version_count(&app, &id, &token).await, 2);

    // Per user: another account publishes.
    let other = app.sign_in("other@example.com").await;
    let theirs = app.create_aide(&other, "Theirs").await;
    app.put_file(&other, &theirs, "index.html", "<p>y</p>")
        .await;
    let answer = app.send(publish(&theirs, &other)).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

fn message(id: &str, token: &str, role: &str, content: &str) -> Req {
    Req::post(&format!("/api/aides/{id}/conversation/messages"))
        .bearer(token)
        .json(json!({"role": role, "content": content}))
}

async fn turns_used(app: &TestApp, token: &str) -> i64 {
    let me = app.send(Req::get("/auth/me").bearer(token)).await.json();
    me["turns"]["used"].as_i64().expect("turns used")
}

/// A conversation keeps at most FREE_MAX_CONVERSATION_BYTES of text, counted in bytes, whoever
/// writes it; a refused message is not stored and uses no turn.
#[tokio::test]
async fn a_conversation_stops_at_its_byte_cap_for_user_and_assistant_alike() {
    let app = TestApp::with(&[("FREE_MAX_CONVERSATION_BYTES", "1024")]).await;
    let token = app.sign_in("talk@example.com").await;
    let id = app.create_aide(&token, "Chat").await;

    // 300 characters, 600 bytes.
    let first = app
        .send(message(&id, &token, "user", &"é".repeat(300)))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(turns_used(&app, &token).await, 1);

    let assistant = app
        .send(message(&id, &token, "assistant", &"a".repeat(425)))
        .await;
    assert_refused(
        &assistant,
        StatusCode::PAYLOAD_TOO_LARGE,
        "CONVERSATION_FULL",
    );
    let user = app
        .send(message(&id, &token, "user", &"u".repeat(425)))
        .await;
    assert_refused(&user, StatusCode::PAYLOAD_TOO_LARGE, "CONVERSATION_FULL");
    assert_eq!(
        turns_used(&app, &token).await,
        1,
        "the refusal used no turn"
    );

    // Up to the cap exactly, then nothing more from either side.
    let last = app
        .send(message(&id, &token, "assistant", &"a".repeat(424)))
        .await;
    assert_eq!(last.status, StatusCode::CREATED, "{}", last.body);
    for role in ["user", "assistant"] {
        let refused = app.send(message(&id, &token, role, "x")).await;
        assert_refused(&refused, StatusCode::PAYLOAD_TOO_LARGE, "CONVERSATION_FULL");
    }
    assert_eq!(turns_used(&app, &token).await, 1);
    let stored = app
        .send(Req::get(&format!("/api/aides/{id}/conversation?limit=100")).bearer(&token))
        .await
        .json();
    let roles: Vec<&str> = stored["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);

    // Each aide's conversation has its own cap.
    let other = app.create_aide(&token, "Other chat").await;
    let elsewhere = app.send(message(&other, &token, "user", "hello")).await;
    assert_eq!(elsewhere.status, StatusCode::CREATED, "{}", elsewhere.body);
}
