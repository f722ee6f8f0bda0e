//! The web app's pages through the router: what a browser without JavaScript gets and can do.

use axum::http::StatusCode;

use crate::app::{Answer, Req, TestApp};
use crate::stripe_stub::StripeStub;

/// Signs in through the forms, as a browser does; returns the session cookie.
async fn browser(app: &TestApp, email: &str) -> String {
    let sent = app
        .send(Req::post("/auth/send").form(&[("email", email)]))
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let (token, _, _) = app.last_email(email).await;
    let verified = app
        .send(Req::post("/auth/verify").form(&[("token", &token)]))
        .await;
    assert_eq!(verified.status, StatusCode::SEE_OTHER, "{}", verified.body);
    verified.session_cookie()
}

fn csp(answer: &Answer) -> String {
    answer
        .header("content-security-policy")
        .expect("a policy")
        .to_string()
}

fn strict(policy: &str) {
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
    assert!(policy.contains("base-uri 'none'"), "{policy}");
}

/// The stylesheet's address on a page.
fn stylesheet(body: &str) -> String {
    let at = body.find("/static/app-").expect("a stylesheet link");
    let end = body[at..].find('"').expect("end of the link") + at;
    body[at..end].to_string()
}

#[tokio::test]
async fn signed_out_the_home_page_is_sign_in_with_a_strict_policy_and_our_stylesheet() {
    let app = TestApp::new().await;
    let home = app.send(Req::get("/")).await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("action=\"/auth/send\""), "{}", home.body);
    assert!(!home.body.contains("<style"), "no inline style");
    strict(&csp(&home));
    assert_eq!(home.header("cache-control"), Some("no-store"));
    let css = app.send(Req::get(&stylesheet(&home.body))).await;
    assert_eq!(css.status, StatusCode::OK);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(
        css.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    assert!(css.body.contains(":focus-visible"));
    let stale = app.send(Req::get("/static/app-000000000000.css")).await;
    assert_eq!(stale.status, StatusCode::NOT_FOUND);
    assert!(stale.body.contains("<h1>Not found</h1>"));
    let unknown = app.send(Req::get("/no/such/page")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown.body.contains("Go to your aides"),
        "{}",
        unknown.body
    );
    strict(&csp(&unknown));
    // Signed out, the account page sends you to sign in.
    let account = app.send(Req::get("/account")).await;
    assert_eq!(account.status, StatusCode::SEE_OTHER);
    assert_eq!(account.header("location"), Some("/"));
}

#[tokio::test]
async fn the_list_creates_archives_restores_and_deletes_with_forms() {
    let app = TestApp::new().await;
    let cookie = browser(&app, "lister@example.com").await;
    let empty = app.send(Req::get("/").cookie(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No aides yet"), "{}", empty.body);
    assert!(empty.body.contains("0 of 5 aides"), "{}", empty.body);
    let policy = csp(&empty);
    strict(&policy);
    assert!(policy.contains("script-src 'self'"), "{policy}");

    let created = app
        .send(
            Req::post("/a")
                .cookie(&cookie)
                .form(&[("title", "<script>alert(1)</script> Groceries")]),
        )
        .await;
    assert_eq!(created.status, StatusCode::SEE_OTHER, "{}", created.body);
    assert!(
        created
            .header("location")
            .is_some_and(|l| l.starts_with("/a/")),
        "to the new aide's editor"
    );
    let untitled = app
        .send(Req::post("/a").cookie(&cookie).form(&[("title", "  ")]))
        .await;
    assert_eq!(untitled.status, StatusCode::SEE_OTHER);
    let list = app.send(Req::get("/").cookie(&cookie)).await;
    assert!(
        list.body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62; Groceries")
            || list
                .body
                .contains("&lt;script&gt;alert(1)&lt;/script&gt; Groceries"),
        "escaped: {}",
        list.body
    );
    assert!(!list.body.contains("<script>alert"), "{}", list.body);
    assert!(list.body.contains("Untitled"));
    assert!(list.body.contains("2 of 5 aides"), "{}", list.body);
    assert_eq!(list.body.matches("class=\"badge draft\"").count(), 2);

    let id = {
        let at = list.body.find("/a/").expect("an aide's form") + 3;
        list.body[at..at + 36].to_string()
    };
    let archived = app
        .send(
            Req::post(&format!("/a/{id}/archive"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(archived.status, StatusCode::SEE_OTHER);
    let list = app.send(Req::get("/").cookie(&cookie)).await;
    assert!(list.body.contains("1 of 5 aides"), "{}", list.body);
    let shelf = app.send(Req::get("/?archived=1").cookie(&cookie)).await;
    assert!(shelf.body.contains("Archived aides"));
    assert!(
        shelf.body.contains(&format!("/a/{id}/restore")),
        "{}",
        shelf.body
    );
    let restored = app
        .send(
            Req::post(&format!("/a/{id}/restore"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(restored.status, StatusCode::SEE_OTHER);
    assert_eq!(restored.header("location"), Some("/"));
    app.send(
        Req::post(&format!("/a/{id}/archive"))
            .cookie(&cookie)
            .form(&[]),
    )
    .await;

    let confirm = app
        .send(Req::get(&format!("/a/{id}/delete")).cookie(&cookie))
        .await;
    assert_eq!(confirm.status, StatusCode::OK);
    assert!(confirm.body.contains("Delete for good"), "{}", confirm.body);
    let deleted = app
        .send(
            Req::post(&format!("/a/{id}/delete"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(deleted.status, StatusCode::SEE_OTHER);
    let shelf = app.send(Req::get("/?archived=1").cookie(&cookie)).await;
    assert!(shelf.body.contains("Nothing is archived"), "{}", shelf.body);
    let again = app
        .send(
            Req::post(&format!("/a/{id}/delete"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert!(again.body.contains("<h1>Not found</h1>"));
}

#[tokio::test]
async fn the_free_limit_is_shown_and_explained_and_others_ids_are_not_found() {
    let app = TestApp::new().await;
    let cookie = browser(&app, "full@example.com").await;
    for n in 0..5 {
        let created = app
            .send(
                Req::post("/a")
                    .cookie(&cookie)
                    .form(&[("title", &format!("Aide {n}"))]),
            )
            .await;
        assert_eq!(created.status, StatusCode::SEE_OTHER);
    }
    let list = app.send(Req::get("/").cookie(&cookie)).await;
    assert!(list.body.contains("5 of 5 aides"), "{}", list.body);
    assert!(
        list.body.contains("href=\"/account\">upgrade to Pro"),
        "{}",
        list.body
    );
    let refused = app
        .send(Req::post("/a").cookie(&cookie).form(&[("title", "Sixth")]))
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert!(
        refused.body.contains("Free accounts can keep 5 aides"),
        "{}",
        refused.body
    );
    assert!(refused.body.contains("role=\"alert\""));

    let other = browser(&app, "other@example.com").await;
    let id = {
        let at = list.body.find("/a/").expect("an aide") + 3;
        list.body[at..at + 36].to_string()
    };
    for (method, path) in [
        ("POST", format!("/a/{id}/archive")),
        ("POST", format!("/a/{id}/delete")),
        ("GET", format!("/a/{id}/delete")),
        ("GET", "/a/not-an-id/delete".to_string()),
    ] {
        let req = if method == "POST" {
            Req::post(&path).cookie(&other).form(&[])
        } else {
            Req::get(&path).cookie(&other)
        };
        let answer = app.send(req).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
        assert!(!answer.body.contains("Aide 0"), "{method} {path}");
    }
    // Signed out, a form sends you to sign in and changes nothing.
    let anonymous = app.send(Req::post("/a").form(&[("title", "x")])).await;
    assert_eq!(anonymous.status, StatusCode::SEE_OTHER);
    assert_eq!(anonymous.header("location"), Some("/"));
    // A form from another site is refused.
    let forged = app
        .send(
            Req::post("/a")
                .header("origin", "https://evil.example")
                .cookie(&cookie)
                .form(&[("title", "x")]),
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn the_account_page_shows_the_plan_and_upgrades_through_checkout() {
    let stub = StripeStub::start().await;
    let vars = stub.vars();
    let all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::with(&all).await;
    let cookie = browser(&app, "upgrader@example.com").await;
    let account = app.send(Req::get("/account").cookie(&cookie)).await;
    assert_eq!(account.status, StatusCode::OK);
    for text in [
        "upgrader@example.com",
        "<dd>Free</dd>",
        "0 of 50",
        "Upgrade to Pro",
        "action=\"/auth/logout-all\"",
    ] {
        assert!(account.body.contains(text), "{text}: {}", account.body);
    }
    let policy = csp(&account);
    strict(&policy);
    assert!(
        policy
            .contains("form-action 'self' https://checkout.stripe.com https://billing.stripe.com"),
        "{policy}"
    );
    assert!(policy.contains(&stub.url), "the stand-in's pages: {policy}");

    let checkout = app
        .send(Req::post("/api/billing/checkout").cookie(&cookie).form(&[]))
        .await;
    assert_eq!(checkout.status, StatusCode::SEE_OTHER, "{}", checkout.body);
    let to = checkout
        .header("location")
        .expect("to Checkout")
        .to_string();
    assert!(to.starts_with("https://checkout.stripe.com/"), "{to}");
    let session = to.rsplit('/').next().expect("session");
    let (_, _) = stub.complete_checkout(session);
    let back = app
        .send(Req::get(&format!("/billing/success?session_id={session}")))
        .await;
    assert_eq!(
        back.header("location"),
        Some("http://127.0.0.1:8000/account?billing=success")
    );
    let account = app
        .send(Req::get("/account?billing=success").cookie(&cookie))
        .await;
    for text in [
        "Welcome to Pro",
        "<dd>Pro</dd>",
        "no weekly limit",
        "Renews on",
        "Manage billing",
    ] {
        assert!(account.body.contains(text), "{text}: {}", account.body);
    }
    assert!(!account.body.contains("Upgrade to Pro"));
    assert!(!account.body.contains("cus_"), "no Stripe id on the page");
}

#[tokio::test]
async fn without_stripe_the_account_page_says_payments_are_off() {
    let app = TestApp::new().await;
    let cookie = browser(&app, "plain@example.com").await;
    let account = app.send(Req::get("/account").cookie(&cookie)).await;
    assert!(
        account.body.contains("Payments are not set up"),
        "{}",
        account.body
    );
    assert!(!account.body.contains("Upgrade to Pro"));
    assert!(
        csp(&account).contains("form-action 'self';"),
        "{}",
        csp(&account)
    );
}

#[tokio::test]
async fn the_editor_shows_the_page_in_an_isolated_preview_and_its_forms_work() {
    let app = TestApp::new().await;
    let cookie = browser(&app, "editor@example.com").await;
    let created = app
        .send(
            Req::post("/a")
                .cookie(&cookie)
                .form(&[("title", "Trip <plan>")]),
        )
        .await;
    let location = created
        .header("location")
        .expect("to the editor")
        .to_string();
    let id = location.trim_start_matches("/a/").to_string();
    let empty = app.send(Req::get(&location).cookie(&cookie)).await;
    assert_eq!(empty.status, StatusCode::OK);
    assert!(empty.body.contains("No page yet"), "{}", empty.body);
    assert!(empty.body.contains("Trip &#60;plan&#62;") || empty.body.contains("Trip &lt;plan&gt;"));
    assert!(empty.body.contains("Chat needs JavaScript"));
    assert!(
        empty.body.contains("0 of 50 turns this week"),
        "{}",
        empty.body
    );
    let script = {
        let at = empty
            .body
            .find("/static/editor-")
            .expect("the editor's script");
        let end = empty.body[at..].find('"').expect("end") + at;
        empty.body[at..end].to_string()
    };
    let js = app.send(Req::get(&script)).await;
    assert_eq!(js.status, StatusCode::OK);
    assert_eq!(
        js.header("content-type"),
        Some("text/javascript; charset=utf-8")
    );
    assert!(js.body.contains("readEvents"));

    // A page in the workspace: the preview shows it, from a signed address.
    let put = app
        .send(
            Req::new(
                axum::http::Method::PUT,
                &format!("/api/aides/{id}/files/index.html"),
            )
            .cookie(&cookie)
            .header("origin", crate::app::APP_URL)
            .header("content-type", "text/html")
            .raw_body("<h1>Packing list</h1><script>document.title = 'ran'</script>"),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    let page = app.send(Req::get(&location).cookie(&cookie)).await;
    let src = {
        let at = page.body.find("src=\"/p/").expect("a preview frame") + 5;
        let end = page.body[at..].find('"').expect("end") + at;
        page.body[at..end].to_string()
    };
    assert!(
        page.body
            .contains("sandbox=\"allow-scripts allow-forms allow-popups\"")
    );
    assert!(!page.body.contains("allow-same-origin"));
    let preview = app.send(Req::get(&src)).await;
    assert_eq!(preview.status, StatusCode::OK, "{}", preview.body);
    assert!(preview.body.contains("<h1>Packing list</h1>"));
    assert_eq!(
        preview.header("content-security-policy"),
        Some(
            "sandbox allow-scripts allow-forms allow-popups; frame-ancestors http://127.0.0.1:8000"
        )
    );
    assert_eq!(preview.header("x-frame-options"), None, "framed by the app");
    assert_eq!(preview.header("referrer-policy"), Some("no-referrer"));
    assert_eq!(
        app.send(Req::get(&format!("{src}index.html"))).await.status,
        StatusCode::OK
    );
    // Forged, altered or unknown addresses say nothing.
    let parts: Vec<&str> = src.trim_matches('/').split('/').collect();
    let (aide, revision, expires, signature) = (parts[1], parts[2], parts[3], parts[4]);
    for bad in [
        format!("/p/{aide}/{revision}/{expires}/AAAAAAAAAAAAAAAAAAAAAAAA/"),
        format!(
            "/p/{aide}/{}/{expires}/{signature}/",
            revision.parse::<i32>().unwrap_or(0) + 1
        ),
        format!(
            "/p/{aide}/{revision}/{}/{signature}/",
            expires.parse::<i64>().unwrap_or(0) + 600
        ),
        format!("/p/{aide}/{revision}/1/{signature}/"),
        format!("{src}missing.css"),
        format!("/p/{aide}/x/{expires}/{signature}/"),
    ] {
        let answer = app.send(Req::get(&bad)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{bad}");
        assert!(!answer.body.contains("Packing list"), "{bad}");
    }
    let fresh = app
        .send(Req::get(&format!("/a/{id}/preview-url?revision=1")).cookie(&cookie))
        .await;
    assert_eq!(fresh.status, StatusCode::OK, "{}", fresh.body);
    assert!(
        fresh.json()["url"]
            .as_str()
            .is_some_and(|u| u.starts_with(&format!("/p/{id}/1/")))
    );
    let none = app
        .send(Req::get(&format!("/a/{id}/preview-url?revision=9")).cookie(&cookie))
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    // A turn's working copy: only for a turn of this aide, and only while it runs here.
    let stranger = uuid::Uuid::new_v4();
    let no_turn = app
        .send(Req::get(&format!("/a/{id}/preview-url?turn={stranger}")).cookie(&cookie))
        .await;
    assert_eq!(no_turn.status, StatusCode::NOT_FOUND);
    let neither = app
        .send(Req::get(&format!("/a/{id}/preview-url")).cookie(&cookie))
        .await;
    assert_eq!(neither.status, StatusCode::UNPROCESSABLE_ENTITY);
    let unsigned = app
        .send(Req::get(&format!(
            "/p/{id}/t-{stranger}/9999999999/AAAAAAAAAAAAAAAAAAAAAAAA/"
        )))
        .await;
    assert_eq!(unsigned.status, StatusCode::NOT_FOUND);

    // Someone else sees none of it.
    let other = browser(&app, "not-the-editor@example.com").await;
    let theirs = app.send(Req::get(&location).cookie(&other)).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert!(!theirs.body.contains("Trip"));
    let url = app
        .send(Req::get(&format!("/a/{id}/preview-url?revision=1")).cookie(&other))
        .await;
    assert_eq!(url.status, StatusCode::NOT_FOUND);
    let signed_out = app.send(Req::get(&location)).await;
    assert_eq!(signed_out.status, StatusCode::SEE_OTHER);

    // Rename, publish, unpublish.
    let renamed = app
        .send(
            Req::post(&format!("/a/{id}/rename"))
                .cookie(&cookie)
                .form(&[("title", "Packing")]),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::SEE_OTHER);
    let published = app
        .send(
            Req::post(&format!("/a/{id}/publish"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(
        published.status,
        StatusCode::SEE_OTHER,
        "{}",
        published.body
    );
    let live = app.send(Req::get(&location).cookie(&cookie)).await;
    assert!(live.body.contains("Live at"), "{}", live.body);
    assert!(live.body.contains("value=\"Packing\""));
    let public = {
        let at = live.body.find("/s/").expect("the public address");
        let end = live.body[at..].find('"').expect("end") + at;
        live.body[at..end].to_string()
    };
    assert_eq!(app.send(Req::get(&public)).await.status, StatusCode::OK);
    let down = app
        .send(
            Req::post(&format!("/a/{id}/unpublish"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(down.status, StatusCode::SEE_OTHER);
    assert_eq!(
        app.send(Req::get(&public)).await.status,
        StatusCode::NOT_FOUND
    );
    let blank = app
        .send(
            Req::post(&format!("/a/{id}/rename"))
                .cookie(&cookie)
                .form(&[("title", "   ")]),
        )
        .await;
    assert_eq!(blank.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        blank.body.contains("title: must not be empty"),
        "{}",
        blank.body
    );
}

#[tokio::test]
async fn history_lists_changes_and_versions_and_undo_and_restore_go_back() {
    let app = TestApp::new().await;
    let cookie = browser(&app, "historian@example.com").await;
    let created = app
        .send(Req::post("/a").cookie(&cookie).form(&[("title", "Diary")]))
        .await;
    let location = created.header("location").expect("editor").to_string();
    let id = location.trim_start_matches("/a/").to_string();
    let put = |body: &'static str| {
        app.send(
            Req::new(
                axum::http::Method::PUT,
                &format!("/api/aides/{id}/files/index.html"),
            )
            .cookie(&cookie)
            .header("origin", crate::app::APP_URL)
            .header("content-type", "text/html")
            .raw_body(body),
        )
    };
    assert_eq!(put("<p>first</p>").await.status, StatusCode::OK);
    let first_only = app.send(Req::get(&location).cookie(&cookie)).await;
    assert!(
        !first_only.body.contains(&format!("/a/{id}/undo")),
        "nothing to undo yet"
    );
    assert_eq!(put("<p>second</p>").await.status, StatusCode::OK);
    let read = || async {
        app.send(Req::get(&format!("/api/aides/{id}/files/index.html")).cookie(&cookie))
            .await
            .body
    };

    let history = app
        .send(Req::get(&format!("/a/{id}/history")).cookie(&cookie))
        .await;
    assert_eq!(history.status, StatusCode::OK);
    assert!(
        history.body.contains("#2: a file uploaded"),
        "{}",
        history.body
    );
    assert!(history.body.contains("#1: a file uploaded"));
    assert!(history.body.contains("Current"));
    assert_eq!(
        history.body.matches("href=\"/p/").count(),
        2,
        "each change previews"
    );
    assert!(history.body.contains("Not published yet"));

    let restored = app
        .send(
            Req::post(&format!("/a/{id}/revisions/1/restore"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(restored.status, StatusCode::SEE_OTHER);
    assert_eq!(read().await, "<p>first</p>");
    let editor = app.send(Req::get(&location).cookie(&cookie)).await;
    assert!(
        editor.body.contains(&format!("action=\"/a/{id}/undo\"")),
        "{}",
        editor.body
    );
    let undone = app
        .send(
            Req::post(&format!("/a/{id}/undo"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(undone.status, StatusCode::SEE_OTHER);
    assert_eq!(
        read().await,
        "<p>second</p>",
        "undo brings back what the restore replaced"
    );
    let history = app
        .send(Req::get(&format!("/a/{id}/history")).cookie(&cookie))
        .await;
    assert!(history.body.contains("#4: #2 restored"), "{}", history.body);
    assert!(history.body.contains("#3: #1 restored"));

    // Published twice, then version 1 again from the history.
    for _ in 0..2 {
        let published = app
            .send(
                Req::post(&format!("/a/{id}/publish"))
                    .cookie(&cookie)
                    .form(&[]),
            )
            .await;
        assert_eq!(
            published.status,
            StatusCode::SEE_OTHER,
            "{}",
            published.body
        );
    }
    let history = app
        .send(Req::get(&format!("/a/{id}/history")).cookie(&cookie))
        .await;
    assert!(
        history.body.contains("Version 2 (the newest)"),
        "{}",
        history.body
    );
    assert!(
        history
            .body
            .contains(&format!("/a/{id}/versions/1/publish"))
    );
    assert!(
        !history
            .body
            .contains(&format!("/a/{id}/versions/2/publish"))
    );
    let again = app
        .send(
            Req::post(&format!("/a/{id}/versions/1/publish"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(again.status, StatusCode::SEE_OTHER, "{}", again.body);
    let history = app
        .send(Req::get(&format!("/a/{id}/history")).cookie(&cookie))
        .await;
    assert!(
        history.body.contains("Version 3 (the newest)"),
        "{}",
        history.body
    );
    app.send(
        Req::post(&format!("/a/{id}/unpublish"))
            .cookie(&cookie)
            .form(&[]),
    )
    .await;
    let history = app
        .send(Req::get(&format!("/a/{id}/history")).cookie(&cookie))
        .await;
    assert!(history.body.contains("not live now"), "{}", history.body);
    assert!(!history.body.contains("/s/"), "no dead links");
    // Each version still previews, from its own files.
    let previews: Vec<String> = history
        .body
        .match_indices("href=\"/p/")
        .map(|(at, _)| {
            let start = at + 6;
            let end = history.body[start..].find('"').expect("end") + start;
            history.body[start..end].to_string()
        })
        .filter(|href| href.contains("/v-"))
        .collect();
    assert_eq!(previews.len(), 3, "{}", history.body);
    let v1 = previews
        .iter()
        .find(|p| p.contains("/v-1/"))
        .expect("version 1's preview");
    let shown = app.send(Req::get(v1)).await;
    assert_eq!(shown.status, StatusCode::OK, "{}", shown.body);
    assert!(
        shown.body.contains("second"),
        "version 1 was published from the workspace then: {}",
        shown.body
    );
    assert!(
        shown
            .header("content-security-policy")
            .is_some_and(|c| c.starts_with("sandbox allow-scripts"))
    );
    let forged = v1.replace("/v-1/", "/v-2/");
    assert_eq!(
        app.send(Req::get(&forged)).await.status,
        StatusCode::NOT_FOUND
    );

    let gone = app
        .send(
            Req::post(&format!("/a/{id}/revisions/99/restore"))
                .cookie(&cookie)
                .form(&[]),
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    let other = browser(&app, "not-the-historian@example.com").await;
    for path in [format!("/a/{id}/history")] {
        let answer = app.send(Req::get(&path).cookie(&other)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND);
        assert!(!answer.body.contains("Diary"));
    }
    let theirs = app
        .send(Req::post(&format!("/a/{id}/undo")).cookie(&other).form(&[]))
        .await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert_eq!(read().await, "<p>second</p>");
}
