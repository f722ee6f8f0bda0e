//! Public pages through the real router: what is served, with which headers, and when it stops.

use axum::http::{Method, StatusCode};

use crate::app::{Answer, Req, TestApp};
use crate::support::exec;

const PAGE: &str = "<html><head><title>Groceries</title></head><body><h1>Milk</h1></body></html>";

async fn published(app: &TestApp, token: &str, html: &str) -> (String, String) {
    let id = app.create_aide(token, "Groceries").await;
    app.put_file(token, &id, "index.html", html).await;
    app.put_file(token, &id, "css/site.css", "h1{color:green}")
        .await;
    let slug = app.publish(token, &id).await;
    (id, slug)
}

fn assert_sandboxed(answer: &Answer) {
    let csp = answer.header("content-security-policy").expect("CSP");
    assert_eq!(csp, "sandbox allow-scripts allow-forms allow-popups");
    assert!(!csp.contains("allow-same-origin"));
    assert_eq!(answer.header("x-content-type-options"), Some("nosniff"));
    assert!(answer.header("referrer-policy").is_some());
}

#[tokio::test]
async fn a_published_page_is_served_safely_with_footer_and_open_graph() {
    let app = TestApp::with(&[("PUBLIC_URL", "http://pages.localhost:8000")]).await;
    let token = app.sign_in("pp@example.com").await;
    let (_, slug) = published(&app, &token, PAGE).await;

    for path in [
        format!("/s/{slug}"),
        format!("/s/{slug}/"),
        format!("/s/{slug}/index.html"),
    ] {
        let page = app.send(Req::get(&path)).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert_eq!(
            page.header("content-type"),
            Some("text/html; charset=utf-8")
        );
        assert_sandboxed(&page);
        assert_eq!(page.header("cache-control"), Some("public, no-cache"));
        assert!(page.body.contains("<h1>Milk</h1>"));
        assert!(
            page.body
                .contains("Made with <a href=\"http://127.0.0.1:8000/\""),
            "{}",
            page.body
        );
        assert!(
            page.body
                .contains("<meta property=\"og:title\" content=\"Groceries\">")
        );
        assert!(page.body.contains(&format!(
            "<meta property=\"og:url\" content=\"http://pages.localhost:8000/s/{slug}/\">"
        )));
        assert!(
            page.body
                .contains("<meta property=\"og:type\" content=\"website\">")
        );
    }

    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    let etag = page.header("etag").expect("ETag").to_string();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag: {etag}"
    );
    let again = app
        .send(Req::get(&format!("/s/{slug}/")).header("if-none-match", &etag))
        .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
    assert!(again.body.is_empty());
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    assert_sandboxed(&again);
    let other = app
        .send(Req::get(&format!("/s/{slug}/")).header("if-none-match", "\"other\""))
        .await;
    assert_eq!(other.status, StatusCode::OK);

    let css = app.send(Req::get(&format!("/s/{slug}/css/site.css"))).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.body, "h1{color:green}", "only index.html is changed");
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_sandboxed(&css);

    let missing = app.send(Req::get(&format!("/s/{slug}/nope.html"))).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(
        missing
            .header("content-type")
            .expect("type")
            .starts_with("text/html")
    );
    assert!(missing.body.contains("Page not found"));
    let unknown = app.send(Req::get("/s/no-such-page/")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn version_urls_stay_while_the_latest_moves_and_everything_stops_when_unpublished() {
    let app = TestApp::new().await;
    let token = app.sign_in("pv@example.com").await;
    let (id, slug) = published(&app, &token, "<body>one</body>").await;
    app.put_file(&token, &id, "index.html", "<body>two</body>")
        .await;
    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;

    let latest = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert!(latest.body.contains("two"), "{}", latest.body);
    let v1 = app.send(Req::get(&format!("/s/{slug}/v/1/"))).await;
    assert_eq!(v1.status, StatusCode::OK);
    assert!(v1.body.contains("one"), "{}", v1.body);
    assert_eq!(
        v1.header("cache-control"),
        Some("public, max-age=3600, immutable")
    );
    assert_sandboxed(&v1);
    let v1_css = app
        .send(Req::get(&format!("/s/{slug}/v/1/css/site.css")))
        .await;
    assert_eq!(v1_css.status, StatusCode::OK);
    let v9 = app.send(Req::get(&format!("/s/{slug}/v/9/"))).await;
    assert_eq!(v9.status, StatusCode::NOT_FOUND);

    app.send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    for path in [
        format!("/s/{slug}/"),
        format!("/s/{slug}/v/1/"),
        format!("/s/{slug}/css/site.css"),
    ] {
        let gone = app.send(Req::get(&path)).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{path} after unpublish");
    }

    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );
    app.send(Req::post(&format!("/api/aides/{id}/archive")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND,
        "archived"
    );
    app.send(Req::post(&format!("/api/aides/{id}/restore")).bearer(&token))
        .await;
    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );
    app.send(Req::new(Method::DELETE, &format!("/api/aides/{id}")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND,
        "deleted"
    );
}

#[tokio::test]
async fn pro_pages_have_no_footer_and_own_open_graph_tags_are_kept() {
    let app = TestApp::new().await;
    let token = app.sign_in("pr@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update users set tier = 'pro' where email = 'pr@example.com'",
        &[],
    )
    .await
    .expect("pro");
    tx.commit().await.expect("commit");
    let html =
        "<html><head><meta property=\"og:title\" content=\"Mine\"></head><body>x</body></html>";
    let (_, slug) = published(&app, &token, html).await;
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(!page.body.contains("Made with"), "{}", page.body);
    assert_eq!(page.body.matches("og:title").count(), 1);
    assert!(page.body.contains("content=\"Mine\""));
    assert!(page.body.contains("og:type"));
}

/// Starts `state`'s listener for page changes, so that answers are kept in memory.
pub(crate) async fn start_listening(state: &aide::AppState) -> tokio::sync::watch::Sender<bool> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(aide::notify::listen(
        state.live_pages.clone(),
        state.turns.clone(),
        state.db.clone(),
        stopped,
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !state.live_pages.is_listening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener did not start"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop
}

/// With the in-memory answers in use, a change made by this process is seen at once.
#[tokio::test]
async fn cached_answers_never_outlive_a_change_in_the_same_process() {
    let app = TestApp::new().await;
    let _stop = start_listening(&app.state).await;
    let token = app.sign_in("lc@example.com").await;
    let (id, slug) = published(&app, &token, PAGE).await;

    // The publish's own notification arrives a moment later and evicts once; then the answer
    // stays in memory.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        assert_eq!(
            app.send(Req::get(&format!("/s/{slug}/"))).await.status,
            StatusCode::OK
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if matches!(app.state.live_pages.lookup(&slug, None), Some(Some(_))) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the answer is never kept in memory"
        );
    }
    app.send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND
    );
    app.send(Req::post(&format!("/api/aides/{id}/publish")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );
    app.send(Req::post(&format!("/api/aides/{id}/archive")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Another server process hears of the change through PostgreSQL's notification.
#[tokio::test]
async fn other_processes_forget_a_page_when_it_is_unpublished() {
    let app = TestApp::new().await;
    let token = app.sign_in("lp@example.com").await;
    let (id, slug) = published(&app, &token, PAGE).await;

    let other_state = aide::AppState::new(
        app.state.config.clone(),
        aide::db::Db::connect(app.t.app_options(), 2)
            .await
            .expect("pool"),
        app.state.session_key.clone(),
        app.state.storage.clone(),
    );
    let _stop = start_listening(&other_state).await;
    let other = aide::build_app(other_state.clone());
    let page = TestApp::send_via(&other, Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(matches!(
        other_state.live_pages.lookup(&slug, None),
        Some(Some(_))
    ));

    app.send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let answer = TestApp::send_via(&other, Req::get(&format!("/s/{slug}/"))).await;
        if answer.status == StatusCode::NOT_FOUND {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the other process still serves the page"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Publish, serve, version URL, unpublish and 404 with both buckets on a real S3-protocol server.
#[tokio::test]
async fn publish_and_serve_from_s3() {
    let app = TestApp::on_s3(None).await;
    let token = app.sign_in("s3pub@example.com").await;
    let (id, slug) = published(&app, &token, PAGE).await;
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("<h1>Milk</h1>"));
    assert_sandboxed(&page);
    let css = app
        .send(Req::get(&format!("/s/{slug}/v/1/css/site.css")))
        .await;
    assert_eq!(css.body, "h1{color:green}");
    app.send(Req::post(&format!("/api/aides/{id}/unpublish")).bearer(&token))
        .await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND
    );
}
