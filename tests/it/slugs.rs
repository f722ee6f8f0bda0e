//! A page's address never changes hands (finding 10): a slug an aide was published under stays
//! with its owner after a rename or a delete, so neither `/s/{slug}/` nor its version URLs can
//! ever serve someone else's page; and a draft's chosen slug is only a request, which tells
//! nobody anything.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::app::{Answer, Req, TestApp};

async fn set_slug(app: &TestApp, token: &str, id: &str, slug: &str) -> Answer {
    app.send(
        Req::new(Method::PATCH, &format!("/api/aides/{id}"))
            .bearer(token)
            .json(json!({ "slug": slug })),
    )
    .await
}

async fn publish(app: &TestApp, token: &str, id: &str) -> Answer {
    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(token))
        .await
}

async fn page_with(app: &TestApp, token: &str, html: &str) -> String {
    let id = app.create_aide(token, "Page").await;
    app.put_file(token, &id, "index.html", html).await;
    id
}

fn assert_taken(answer: &Answer) {
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.body);
    assert_eq!(answer.json()["code"], "SLUG_TAKEN");
}

/// Every address under `town-fair` is either Alice's page or nothing, never Bob's.
async fn never_bobs(app: &TestApp) {
    for path in ["/s/town-fair/", "/s/town-fair/v/1/", "/s/town-fair/v/2/"] {
        let page = app.send(Req::get(path)).await;
        assert!(!page.body.contains("BOB"), "{path}: {}", page.body);
    }
}

#[tokio::test]
async fn a_renamed_or_deleted_pages_slug_never_passes_to_another_owner() {
    let app = TestApp::new().await;
    let alice = app.sign_in("alice@example.com").await;
    let bob = app.sign_in("bob@example.com").await;
    app.make_pro("alice@example.com").await;
    app.make_pro("bob@example.com").await;

    let fair = page_with(&app, &alice, "<p>ALICE town fair</p>").await;
    assert_eq!(
        set_slug(&app, &alice, &fair, "town-fair").await.status,
        StatusCode::OK
    );
    let first = publish(&app, &alice, &fair).await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.json()["aide"]["slug"], "town-fair");
    let renamed = set_slug(&app, &alice, &fair, "town-fair-2025").await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json()["slug"], "town-fair-2025");
    let moved = app.send(Req::get("/s/town-fair-2025/v/1/")).await;
    assert!(moved.body.contains("ALICE"), "{}", moved.body);

    // Bob's published page may not take the old address...
    let phish = page_with(&app, &bob, "<p>BOB phishing page</p>").await;
    let published = publish(&app, &bob, &phish).await;
    assert_eq!(published.status, StatusCode::CREATED, "{}", published.body);
    assert_taken(&set_slug(&app, &bob, &phish, "town-fair").await);
    // ...nor can a draft of his that asked for it be published under it.
    let draft = page_with(&app, &bob, "<p>BOB again</p>").await;
    let requested = set_slug(&app, &bob, &draft, "town-fair").await;
    assert_eq!(requested.status, StatusCode::OK, "a request holds nothing");
    assert_taken(&publish(&app, &bob, &draft).await);
    let versions = app
        .send(Req::get(&format!("/api/aides/{draft}/versions")).bearer(&bob))
        .await
        .json();
    assert_eq!(versions["versions"], json!([]));
    never_bobs(&app).await;
    assert_eq!(
        app.send(Req::get("/s/town-fair/v/1/")).await.status,
        StatusCode::NOT_FOUND
    );

    // Alice may take it back, and her version URLs work again.
    let back = set_slug(&app, &alice, &fair, "town-fair").await;
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    let v1 = app.send(Req::get("/s/town-fair/v/1/")).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert!(v1.body.contains("ALICE"), "{}", v1.body);
    // The name she gave up meanwhile is now hers in reserve.
    assert_taken(&set_slug(&app, &bob, &phish, "town-fair-2025").await);

    // Deleted, the aide still keeps both from everyone else.
    let deleted = app
        .send(Req::new(Method::DELETE, &format!("/api/aides/{fair}")).bearer(&alice))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_taken(&set_slug(&app, &bob, &phish, "town-fair").await);
    assert_taken(&set_slug(&app, &bob, &phish, "town-fair-2025").await);
    assert_taken(&publish(&app, &bob, &draft).await);
    never_bobs(&app).await;
    assert_eq!(
        app.send(Req::get("/s/town-fair/")).await.status,
        StatusCode::NOT_FOUND
    );

    // Alice's next page may use it.
    let again = page_with(&app, &alice, "<p>ALICE 2026</p>").await;
    assert_eq!(
        set_slug(&app, &alice, &again, "town-fair").await.status,
        StatusCode::OK
    );
    let republished = publish(&app, &alice, &again).await;
    assert_eq!(
        republished.status,
        StatusCode::CREATED,
        "{}",
        republished.body
    );
    assert_eq!(republished.json()["aide"]["slug"], "town-fair");
}

/// A slug chosen for a draft holds nothing: another user choosing it, for a draft or a published
/// page, is told nothing about it.
#[tokio::test]
async fn a_drafts_requested_slug_reveals_nothing() {
    let app = TestApp::new().await;
    let alice = app.sign_in("alice@example.com").await;
    let bob = app.sign_in("bob@example.com").await;
    app.make_pro("alice@example.com").await;
    app.make_pro("bob@example.com").await;

    let secret = page_with(&app, &alice, "<p>secret</p>").await;
    let chosen = set_slug(&app, &alice, &secret, "merger-plans").await;
    assert_eq!(chosen.status, StatusCode::OK, "{}", chosen.body);

    let bobs_draft = page_with(&app, &bob, "<p>draft</p>").await;
    let same = set_slug(&app, &bob, &bobs_draft, "merger-plans").await;
    assert_eq!(same.status, StatusCode::OK, "{}", same.body);
    let unused = set_slug(&app, &bob, &bobs_draft, "nobody-has-this").await;
    assert_eq!(unused.status, same.status, "alike");

    let bobs_page = page_with(&app, &bob, "<p>published</p>").await;
    publish(&app, &bob, &bobs_page).await;
    let taken_first = set_slug(&app, &bob, &bobs_page, "merger-plans").await;
    assert_eq!(taken_first.status, StatusCode::OK, "{}", taken_first.body);
    assert_eq!(
        app.send(Req::get("/s/merger-plans/")).await.status,
        StatusCode::OK
    );
    // Alice learns of it only by publishing, and then her page is not published anywhere.
    assert_taken(&publish(&app, &alice, &secret).await);
}

/// A publish that fails part-way has already taken the draft's requested slug. Choosing another
/// one before the next attempt must still work: that one is published.
#[tokio::test]
async fn a_slug_chosen_after_a_failed_publish_is_the_one_published() {
    // The published bucket is created only after the first attempt.
    let bucket = format!("late-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let app = TestApp::on_s3(Some(&bucket)).await;
    let token = app.sign_in("retry@example.com").await;
    app.make_pro("retry@example.com").await;
    let id = page_with(&app, &token, "<p>retry</p>").await;
    assert_eq!(
        set_slug(&app, &token, &id, "first-choice").await.status,
        StatusCode::OK
    );
    let failed = publish(&app, &token, &id).await;
    assert_eq!(
        failed.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{}",
        failed.body
    );

    let created = reqwest::Client::new()
        .put(format!("{}/{bucket}", crate::s3::endpoint()))
        .send()
        .await
        .expect("create bucket");
    assert!(created.status().is_success());
    let chosen = set_slug(&app, &token, &id, "second-choice").await;
    assert_eq!(chosen.status, StatusCode::OK, "{}", chosen.body);
    assert_eq!(chosen.json()["slug"], "second-choice", "{}", chosen.body);
    let published = publish(&app, &token, &id).await;
    assert_eq!(published.status, StatusCode::CREATED, "{}", published.body);
    assert_eq!(published.json()["aide"]["slug"], "second-choice");
}
