//! Pages and the app on hosts of their own (finding 3): with PUBLIC_URL on another host than
//! APP_URL, `/s/` answers only on the pages' host (an old link on the app's host is redirected
//! there) and the app only on its own host, so a published page never runs on the app's origin.

use axum::http::StatusCode;
use serde_json::json;

use crate::app::{Answer, Req, TestApp};
use crate::support::scalar;

const PAGES_URL: &str = "http://pages.localhost:8000";
const PAGES_HOST: &str = "pages.localhost:8000";
const APP_HOST: &str = "127.0.0.1:8000";

/// Publishes a page; returns the bearer token and the slug.
async fn published(app: &TestApp, email: &str) -> (String, String) {
    let token = app.sign_in(email).await;
    let id = app.create_aide(&token, "Fair").await;
    app.put_file(&token, &id, "index.html", "<p>the fair</p>")
        .await;
    let slug = app.publish(&token, &id).await;
    (token, slug)
}

/// Our JSON 404: a code, a sentence and the request id.
fn assert_json_not_found(answer: &Answer, what: &str) {
    assert_eq!(
        answer.status,
        StatusCode::NOT_FOUND,
        "{what}: {}",
        answer.body
    );
    let body = answer.json();
    assert_eq!(body["code"], "NOT_FOUND", "{what}");
    assert!(body["detail"].is_string(), "{what}");
    assert!(body["request_id"].is_string(), "{what}");
}

#[tokio::test]
async fn pages_and_the_app_answer_only_on_their_own_hosts() {
    let app = TestApp::with(&[("PUBLIC_URL", PAGES_URL)]).await;
    let (token, slug) = published(&app, "hosts@example.com").await;

    let page = app
        .send(Req::get(&format!("/s/{slug}/")).host(PAGES_HOST))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("the fair"));

    // An old link on the app's host: the same address on the pages' host, query and all.
    for path in [
        format!("/s/{slug}/"),
        format!("/s/{slug}/v/1/index.html?from=mail"),
    ] {
        let moved = app.send(Req::get(&path).host(APP_HOST)).await;
        assert_eq!(moved.status, StatusCode::PERMANENT_REDIRECT, "{path}");
        assert_eq!(
            moved.header("location"),
            Some(format!("{PAGES_URL}{path}").as_str())
        );
        assert!(!moved.body.contains("the fair"));
    }
    let posted = app
        .send(Req::post(&format!("/s/{slug}/")).host(APP_HOST))
        .await;
    assert_eq!(posted.status, StatusCode::NOT_FOUND);
    assert!(!posted.body.contains("the fair"));
    let elsewhere = app
        .send(Req::get(&format!("/s/{slug}/")).host("elsewhere.example"))
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);

    // The app is not on the pages' host, signed in or not.
    for (what, req) in [
        ("me", Req::get("/auth/me").bearer(&token)),
        ("list", Req::get("/api/aides").bearer(&token)),
        ("openapi", Req::get("/api/openapi.json")),
        (
            "send",
            Req::post("/auth/send").json(json!({"email": "phished@example.com"})),
        ),
    ] {
        let answer = app.send(req.host(PAGES_HOST)).await;
        assert_json_not_found(&answer, what);
    }
    let home = app.send(Req::get("/").host(PAGES_HOST)).await;
    assert_eq!(home.status, StatusCode::NOT_FOUND);
    assert!(
        home.header("content-type")
            .expect("type")
            .starts_with("text/html")
    );
    assert!(!home.body.contains("Sign in"), "{}", home.body);
    let admin = app.t.admin_conn().await;
    let emails: i64 = scalar(
        &admin,
        "select count(*) from email_outbox where to_address = $1",
        &[&"phished@example.com"],
    )
    .await
    .expect("count");
    assert_eq!(emails, 0, "a sign-in from the pages' host sends nothing");

    // Probes answer on any host.
    for host in [APP_HOST, PAGES_HOST, "elsewhere.example"] {
        for path in ["/health", "/ready"] {
            let answer = app.send(Req::get(path).host(host)).await;
            assert_eq!(answer.status, StatusCode::OK, "{path} on {host}");
        }
    }

    // And the app still works on its own host.
    let me = app
        .send(Req::get("/auth/me").bearer(&token).host(APP_HOST))
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let sent = app
        .send(
            Req::post("/auth/send")
                .json(json!({"email": "phished@example.com"}))
                .host(APP_HOST),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
}

/// Development's default: PUBLIC_URL unset, so pages and the app share APP_URL's host.
#[tokio::test]
async fn with_one_host_for_both_everything_answers_there() {
    let app = TestApp::new().await;
    assert!(!app.state.config.pages_apart());
    let (token, slug) = published(&app, "onehost@example.com").await;
    let page = app
        .send(Req::get(&format!("/s/{slug}/")).host(APP_HOST))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("the fair"));
    for req in [
        Req::get("/auth/me").bearer(&token),
        Req::get("/api/aides").bearer(&token),
        Req::get("/"),
        Req::get("/ready"),
        Req::get("/health"),
    ] {
        let answer = app.send(req.host(APP_HOST)).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}
