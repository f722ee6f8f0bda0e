//! Sessions at the edges: what exempts a request from the CSRF check, what a dead token can still
//! do, what the confirm page says, the cookie's name, caching of private answers, and logging out
//! with a dead session.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::app::{APP_URL, Req, TestApp};
use crate::support::scalar;

/// Signs in `email` through the browser flow; returns the session cookie as `name=value`.
async fn browser_sign_in(app: &TestApp, email: &str, origin: &str) -> String {
    let sent = app
        .send(
            Req::new(Method::POST, "/auth/send")
                .header("origin", origin)
                .json(json!({ "email": email })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let (token, _, _) = app.last_email(email).await;
    let signed_in = app
        .send(
            Req::new(Method::POST, "/auth/verify")
                .header("origin", origin)
                .form(&[("token", &token)]),
        )
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    signed_in.session_cookie()
}

#[tokio::test]
async fn only_a_bearer_token_exempts_a_cookie_request_from_the_csrf_check() {
    let app = TestApp::new().await;
    let cookie = browser_sign_in(&app, "cs@example.com", APP_URL).await;
    for scheme in ["Basic dXNlcjpwYXNz", "Negotiate YIIB", "Bearer"] {
        let answer = app
            .send(
                Req::new(Method::POST, "/api/aides")
                    .cookie(&cookie)
                    .header("authorization", scheme)
                    .json(json!({ "title": "planted" })),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::FORBIDDEN,
            "{scheme}: {}",
            answer.body
        );
        assert_eq!(answer.json()["code"], "CSRF_REJECTED");
    }
    assert_eq!(app.count_rows("aides").await, 0);

    // A well-formed Bearer token is what the session extractor reads instead of the cookie, and
    // browsers never attach one on their own.
    let token = app.sign_in("cs@example.com").await;
    let answer = app
        .send(
            Req::new(Method::POST, "/api/aides")
                .cookie(&cookie)
                .bearer(&token)
                .json(json!({ "title": "mine" })),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
}

#[tokio::test]
async fn a_revoked_token_cannot_spend_its_owners_api_budget() {
    let app = TestApp::new().await;
    let live = app.sign_in("rv@example.com").await;
    let stolen = app.sign_in("rv@example.com").await;
    let out = app
        .send(Req::new(Method::POST, "/auth/logout").bearer(&stolen))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);

    // More than the whole budget (100 a minute) with the dead token: every one is 401.
    for i in 0..110 {
        let answer = app.send(Req::get("/api/aides").bearer(&stolen)).await;
        assert_eq!(
            answer.status,
            StatusCode::UNAUTHORIZED,
            "request {i}: {}",
            answer.body
        );
    }
    let answer = app.send(Req::get("/api/aides").bearer(&live)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    // The live request leased 5 tokens (3 s of a 100-a-minute budget); the dead ones none.
    let tx = app.t.db.system().await.expect("system");
    let ahead: f64 = scalar(
        &tx,
        "select extract(epoch from tat - now())::float8 from rate_limits where key like 'api:user:%'",
        &[],
    )
    .await
    .expect("the owner's row");
    assert!(
        ahead < 10.0,
        "the dead token spent the budget: {ahead} s ahead"
    );
}

#[tokio::test]
async fn the_confirm_page_names_the_account_and_warns_of_a_switch() {
    let app = TestApp::new().await;
    app.send(Req::post("/auth/send").json(json!({ "email": "ada@example.com" })))
        .await;
    let (token, _, _) = app.last_email("ada@example.com").await;
    let path = format!("/auth/verify?token={token}");

    let page = app.send(Req::get(&path)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body
            .contains("This link signs in as <strong>a•••@example.com</strong>"),
        "{}",
        page.body
    );
    assert!(
        !page.body.contains("ada@example.com"),
        "masked: {}",
        page.body
    );
    assert!(!page.body.contains("You are signed in as"));

    let other = browser_sign_in(&app, "bo@example.com", APP_URL).await;
    let page = app.send(Req::get(&path).cookie(&other)).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.body.contains(
            "You are signed in as <strong>b•••@example.com</strong>; continuing signs you in \
             as <strong>a•••@example.com</strong> instead."
        ),
        "{}",
        page.body
    );
    assert!(!page.body.contains("bo@example.com"), "{}", page.body);

    // Signed in as the same account: nothing to warn about. The GET consumed nothing.
    let (token2, _, _) = {
        app.send(
            Req::post("/auth/send")
                .ip("192.0.2.9")
                .json(json!({ "email": "ada@example.com" })),
        )
        .await;
        app.last_email("ada@example.com").await
    };
    let own = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.9")
                .form(&[("token", &token)]),
        )
        .await
        .session_cookie();
    let page = app
        .send(Req::get(&format!("/auth/verify?token={token2}")).cookie(&own))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("a•••@example.com"));
    assert!(!page.body.contains("You are signed in as"), "{}", page.body);
}

#[tokio::test]
async fn the_session_cookie_is_host_prefixed_when_secure() {
    let origin = "https://app.example.com";
    let app = TestApp::with(&[("APP_URL", origin)]).await;
    let cookie = browser_sign_in(&app, "hp@example.com", origin).await;
    let (name, token) = cookie.split_once('=').expect("name=value");
    assert_eq!(name, "__Host-session");

    let me = app.send(Req::get("/auth/me").cookie(&cookie)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    // The unprefixed name is not read where the cookie is Secure: a sibling subdomain could set it.
    let shadow = app
        .send(Req::get("/auth/me").cookie(&format!("session={token}")))
        .await;
    assert_eq!(shadow.status, StatusCode::UNAUTHORIZED);

    let out = app
        .send(
            Req::new(Method::POST, "/auth/logout")
                .header("origin", origin)
                .cookie(&cookie),
        )
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.header("set-cookie").expect("cleared");
    assert!(cleared.starts_with("__Host-session=;"), "{cleared}");
    for flag in ["Path=/", "Max-Age=0", "Secure"] {
        assert!(cleared.contains(flag), "{flag}: {cleared}");
    }
    assert!(!cleared.contains("Domain"), "{cleared}");

    // Plain-http localhost keeps `session`: browsers refuse `__Host-` without Secure.
    let local = TestApp::new().await;
    let cookie = browser_sign_in(&local, "hp@example.com", APP_URL).await;
    assert!(cookie.starts_with("session="), "{cookie}");
}

#[tokio::test]
async fn authenticated_answers_are_not_stored_by_caches() {
    let app = TestApp::new().await;
    let cookie = browser_sign_in(&app, "ns@example.com", APP_URL).await;
    let token = app.sign_in("ns@example.com").await;

    let me = app.send(Req::get("/auth/me").cookie(&cookie)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.header("cache-control"), Some("no-store"));
    let list = app.send(Req::get("/api/aides").bearer(&token)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.header("cache-control"), Some("no-store"));
    let aide = app.create_aide(&token, "Cached?").await;
    let read = app
        .send(Req::get(&format!("/api/aides/{aide}")).bearer(&token))
        .await;
    assert_eq!(read.header("cache-control"), Some("no-store"));
    // An error answer to a request with a (dead or foreign) token is private too.
    let refused = app.send(Req::get("/auth/me").bearer("x.y.z")).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert_eq!(refused.header("cache-control"), Some("no-store"));

    // Public answers keep their own caching.
    let doc = app.send(Req::get("/api/openapi.json")).await;
    assert_eq!(doc.header("cache-control"), None);
    let health = app.send(Req::get("/health").bearer(&token)).await;
    assert_eq!(health.header("cache-control"), None);
}

#[tokio::test]
async fn logging_out_with_a_dead_session_clears_the_cookie() {
    let app = TestApp::new().await;
    let cookie = browser_sign_in(&app, "lo@example.com", APP_URL).await;
    let first = app
        .send(Req::post("/auth/logout").cookie(&cookie).form(&[]))
        .await;
    assert_eq!(first.status, StatusCode::SEE_OTHER);

    // The cookie is dead now; logging out again still clears it.
    let again = app
        .send(Req::post("/auth/logout").cookie(&cookie).form(&[]))
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    assert!(
        again
            .header("set-cookie")
            .expect("cleared")
            .starts_with("session=;")
    );
    let json = app.send(Req::post("/auth/logout").cookie(&cookie)).await;
    assert_eq!(json.status, StatusCode::NO_CONTENT, "{}", json.body);
    assert!(
        json.header("set-cookie")
            .expect("cleared")
            .contains("Max-Age=0")
    );
    let forged = app
        .send(Req::post("/auth/logout").cookie("session=x.y.z"))
        .await;
    assert_eq!(forged.status, StatusCode::NO_CONTENT);
    // Logging out everywhere needs a live session (a revoked token must not end its owner's
    // other sessions), but the dead cookie is cleared all the same.
    let everywhere = app
        .send(Req::post("/auth/logout-all").cookie(&cookie))
        .await;
    assert_eq!(everywhere.status, StatusCode::UNAUTHORIZED);
    assert_eq!(everywhere.json()["code"], "UNAUTHORIZED");
    assert!(
        everywhere
            .header("set-cookie")
            .expect("cleared")
            .contains("Max-Age=0")
    );

    // Only the real logout was audited.
    let logouts = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "auth.logout")
        .count();
    assert_eq!(logouts, 1);
}
