//! Sign-in through the real router against real PostgreSQL.

use aide::auth::jwt;
use axum::http::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::app::{APP_URL, JWT_SECRET, Req, TestApp};
use crate::support::{exec, scalar};

async fn link_consumed(app: &TestApp, email: &str) -> bool {
    let tx = app.t.db.system().await.expect("system");
    scalar(
        &tx,
        "select consumed_at is not null from magic_links where email = $1 order by created_at desc limit 1",
        &[&email],
    )
    .await
    .expect("link")
}

#[tokio::test]
async fn the_whole_browser_flow_from_form_to_logout() {
    let app = TestApp::new().await;

    let page = app.send(Req::get("/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("action=\"/auth/send\""), "{}", page.body);

    let sent = app
        .send(Req::post("/auth/send").form(&[("email", " Ada@Example.com ")]))
        .await;
    assert_eq!(sent.status, StatusCode::OK);
    assert!(sent.body.contains("Check your email"), "{}", sent.body);
    assert!(sent.body.contains("action=\"/auth/verify-code\""));

    let (token, _code, text) = app.last_email("ada@example.com").await;
    assert!(
        text.contains(&format!("{APP_URL}/auth/verify?token={token}")),
        "{text}"
    );
    assert!(text.contains("15 minutes"), "{text}");

    // What a mail scanner does: fetch the link. It shows a button and consumes nothing.
    for _ in 0..3 {
        let page = app
            .send(Req::get(&format!("/auth/verify?token={token}")))
            .await;
        assert_eq!(page.status, StatusCode::OK);
        assert!(
            page.body
                .contains("<button type=\"submit\">Sign in</button>")
        );
        assert!(page.body.contains(&format!("value=\"{token}\"")));
        assert_eq!(page.header("referrer-policy"), Some("same-origin"));
        assert_eq!(page.header("cache-control"), Some("no-store"));
    }
    assert!(!link_consumed(&app, "ada@example.com").await);

    // The person presses the button.
    let signed_in = app
        .send(Req::post("/auth/verify").form(&[("token", &token)]))
        .await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    assert_eq!(signed_in.header("location"), Some("http://127.0.0.1:8000/"));
    let set_cookie = signed_in.header("set-cookie").expect("cookie").to_string();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(set_cookie.contains(flag), "{flag} missing: {set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "plain-http localhost: {set_cookie}"
    );
    assert!(link_consumed(&app, "ada@example.com").await);
    let cookie = signed_in.session_cookie();

    let me = app.send(Req::get("/auth/me").cookie(&cookie)).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    let me = me.json();
    assert_eq!(me["email"], "ada@example.com");
    assert_eq!(me["tier"], "free");
    assert_eq!(me["turns"]["used"], 0);
    assert_eq!(me["turns"]["limit"], 50);
    let resets: chrono::DateTime<chrono::Utc> = me["turns"]["resets_at"]
        .as_str()
        .expect("resets_at")
        .parse()
        .expect("a timestamp");
    let days = (resets - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!(
        (6.9..=7.0).contains(&days),
        "a new account's week ends in 7 days: {days}"
    );
    assert!(me.get("stripe_customer_id").is_none());

    let home = app.send(Req::get("/").cookie(&cookie)).await;
    assert!(
        home.body
            .contains("<a href=\"/account\">ada@example.com</a>")
            && home.body.contains("Your aides"),
        "{}",
        home.body
    );

    let out = app
        .send(Req::post("/auth/logout").cookie(&cookie).form(&[]))
        .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(
        out.header("set-cookie")
            .expect("cleared")
            .contains("Max-Age=0")
    );

    let after = app.send(Req::get("/auth/me").cookie(&cookie)).await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    assert_eq!(after.json()["code"], "UNAUTHORIZED");

    let actions: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .collect();
    assert_eq!(
        actions,
        ["auth.link_requested", "auth.sign_in", "auth.logout"]
    );
}

#[tokio::test]
async fn json_clients_get_the_user_and_a_bearer_token() {
    let app = TestApp::new().await;
    app.send(Req::post("/auth/send").json(json!({"email": "bo@example.com"})))
        .await;
    let (token, _, _) = app.last_email("bo@example.com").await;
    let answer = app
        .send(Req::post("/auth/verify").json(json!({"token": token})))
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let body = answer.json();
    assert_eq!(body["user"]["email"], "bo@example.com");
    let bearer = body["token"].as_str().expect("token");
    assert!(answer.header("set-cookie").is_some());

    let me = app.send(Req::get("/auth/me").bearer(bearer)).await;
    assert_eq!(me.status, StatusCode::OK);
    // A bearer client needs no Origin: browsers never attach the header on their own.
    let out = app
        .send(Req::new(axum::http::Method::POST, "/auth/logout").bearer(bearer))
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let me = app.send(Req::get("/auth/me").bearer(bearer)).await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_all_ends_every_session() {
    let app = TestApp::new().await;
    let first = app.sign_in("cy@example.com").await;
    let second = app.sign_in("cy@example.com").await;
    let other = app.sign_in("di@example.com").await;
    let out = app.send(Req::post("/auth/logout-all").bearer(&first)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    for token in [&first, &second] {
        let me = app.send(Req::get("/auth/me").bearer(token)).await;
        assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    }
    let me = app.send(Req::get("/auth/me").bearer(&other)).await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "another user's session is untouched"
    );
    let audit = app.audit_actions().await;
    let (_, _, details) = audit
        .iter()
        .find(|(a, _, _)| a == "auth.logout_all")
        .expect("logout_all audited");
    assert_eq!(details["sessions_ended"], 2);
}

#[tokio::test]
async fn the_code_signs_in_on_another_device_and_dies_after_five_wrong_attempts() {
    let app = TestApp::new().await;
    app.send(Req::post("/auth/send").json(json!({"email": "ed@example.com"})))
        .await;
    let (_, code, _) = app.last_email("ed@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };

    for _ in 0..2 {
        let answer = app
            .send(
                Req::post("/auth/verify-code")
                    .json(json!({"email": "ed@example.com", "code": wrong})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.json()["code"], "CODE_INVALID");
        // No count of attempts left: that would tell an attacker a sign-in is pending.
        assert_eq!(
            answer.json()["detail"],
            "That code is not right, or it is no longer valid. Use the newest email, or ask for a new link."
        );
    }
    let spaced = format!("{} {}", &code[..3], &code[3..]);
    let answer = app
        .send(
            Req::post("/auth/verify-code").json(json!({"email": "ED@example.com", "code": spaced})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["user"]["email"], "ed@example.com");
    // The code went with the link: it works once.
    let again = app
        .send(Req::post("/auth/verify-code").json(json!({"email": "ed@example.com", "code": code})))
        .await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);

    // A new link: five wrong attempts kill its code, even for the right one afterwards.
    app.send(Req::post("/auth/send").json(json!({"email": "ed@example.com"})))
        .await;
    let (token, code, _) = app.last_email("ed@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for i in 0..5 {
        let answer = app
            .send(
                Req::post("/auth/verify-code")
                    .ip(&format!("192.0.2.{}", 10 + i))
                    .json(json!({"email": "ed@example.com", "code": wrong})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    }
    let dead = app
        .send(
            Req::post("/auth/verify-code")
                .ip("192.0.2.20")
                .json(json!({"email": "ed@example.com", "code": code})),
        )
        .await;
    assert_eq!(dead.status, StatusCode::BAD_REQUEST);
    assert_eq!(dead.json()["code"], "CODE_INVALID");
    // The emailed link itself still works: having the email is proof enough.
    let link = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.21")
                .json(json!({"token": token})),
        )
        .await;
    assert_eq!(link.status, StatusCode::OK);

    let reasons: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "auth.sign_in_failed")
        .map(|(_, _, d)| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    let wrong_codes = reasons.iter().filter(|r| *r == "wrong_code").count();
    assert_eq!(wrong_codes, 7, "{reasons:?}");
    assert_eq!(
        reasons.last().map(String::as_str),
        Some("too_many_attempts"),
        "the audit keeps the real reason"
    );
}

#[tokio::test]
async fn malformed_codes_and_emails_get_422() {
    let app = TestApp::new().await;
    for (body, field) in [
        (json!({"email": "not-an-email", "code": "123456"}), "email"),
        (json!({"email": "a@example.com", "code": "12ab56"}), "code"),
    ] {
        let answer = app.send(Req::post("/auth/verify-code").json(body)).await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(answer.json()["fields"][0]["field"], field);
    }
    let answer = app
        .send(Req::post("/auth/send").json(json!({"email": "nobody"})))
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    let body = answer.json();
    assert_eq!(body["code"], "VALIDATION_FAILED");
    assert_eq!(body["fields"][0]["field"], "email");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));

    let missing = app.send(Req::post("/auth/send").json(json!({}))).await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        missing.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("email"),
        "{}",
        missing.body
    );

    let mut broken = Req::post("/auth/send").json(json!({}));
    broken = broken.raw_body("{\"email\": ");
    let broken = app.send(broken).await;
    assert_eq!(broken.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(broken.json()["code"], "VALIDATION_FAILED");

    let text = app
        .send(Req::post("/auth/send").header("content-type", "text/plain"))
        .await;
    assert_eq!(text.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn simultaneous_posts_with_one_token_get_exactly_one_session() {
    let app = TestApp::new().await;
    for round in 0..5u8 {
        let email = format!("race{round}@example.com");
        app.send(
            Req::post("/auth/send")
                .ip(&format!("192.0.2.{}", 200 + round))
                .json(json!({"email": email})),
        )
        .await;
        let (token, _, _) = app.last_email(&email).await;
        let attempts = (0..8u8).map(|i| {
            app.send(
                Req::post("/auth/verify")
                    .ip(&format!("198.51.100.{}", round * 8 + i))
                    .json(json!({"token": token})),
            )
        });
        let answers = crate::app::join_all(attempts).await;
        let ok = answers
            .iter()
            .filter(|a| a.status == StatusCode::OK)
            .count();
        let used = answers
            .iter()
            .filter(|a| a.status == StatusCode::GONE && a.json()["code"] == "LINK_USED")
            .count();
        assert_eq!((ok, used), (1, 7), "round {round}");
        let tx = app.t.db.system().await.expect("system");
        let sessions: i64 = scalar(
            &tx,
            "select count(*) from sessions s join users u on u.id = s.user_id where u.email = $1",
            &[&email],
        )
        .await
        .expect("count");
        assert_eq!(sessions, 1, "round {round}: exactly one session");
    }
}

#[tokio::test]
async fn expired_used_and_unknown_links_each_say_so() {
    let app = TestApp::new().await;
    app.send(Req::post("/auth/send").json(json!({"email": "gu@example.com"})))
        .await;
    let (used, _, _) = app.last_email("gu@example.com").await;
    app.send(Req::post("/auth/verify").json(json!({"token": used})))
        .await;

    app.send(Req::post("/auth/send").json(json!({"email": "gu@example.com"})))
        .await;
    let (expired, _, _) = app.last_email("gu@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update magic_links set created_at = now() - interval '20 minutes', expires_at = now() - interval '5 minutes'
         where consumed_at is null",
        &[],
    )
    .await
    .expect("age the link");
    tx.commit().await.expect("commit");

    let unknown = "A".repeat(43);
    for (token, status, code) in [
        (used.as_str(), StatusCode::GONE, "LINK_USED"),
        (expired.as_str(), StatusCode::GONE, "LINK_EXPIRED"),
        (unknown.as_str(), StatusCode::BAD_REQUEST, "LINK_INVALID"),
        ("not-even-a-token", StatusCode::BAD_REQUEST, "LINK_INVALID"),
    ] {
        let json = app
            .send(
                Req::post("/auth/verify")
                    .ip("192.0.2.50")
                    .json(json!({"token": token})),
            )
            .await;
        assert_eq!(
            (json.status, json.json()["code"].as_str()),
            (status, Some(code)),
            "{token}"
        );
        let form = app
            .send(
                Req::post("/auth/verify")
                    .ip("192.0.2.51")
                    .form(&[("token", token)]),
            )
            .await;
        assert_eq!(form.status, status);
        assert!(
            form.body.contains("Email me a new sign-in link"),
            "{}",
            form.body
        );
        let page = app
            .send(Req::get(&format!("/auth/verify?token={token}")))
            .await;
        assert_eq!(page.status, status, "GET for {code}");
        assert!(
            !page
                .body
                .contains("<button type=\"submit\">Sign in</button>")
        );
    }
    let reasons: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, _)| a == "auth.sign_in_failed")
        .map(|(_, _, d)| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "used", "used", "expired", "expired", "unknown", "unknown", "unknown", "unknown"
        ]
    );
}

#[tokio::test]
async fn sending_answers_the_same_for_new_and_existing_accounts() {
    let app = TestApp::new().await;
    app.sign_in("known@example.com").await;
    let known = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.60")
                .json(json!({"email": "known@example.com"})),
        )
        .await;
    let unknown = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.61")
                .json(json!({"email": "unknown@example.com"})),
        )
        .await;
    assert_eq!(known.status, unknown.status);
    assert_eq!(known.body, unknown.body);
    let known_form = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.62")
                .form(&[("email", "known@example.com")]),
        )
        .await;
    let unknown_form = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.63")
                .form(&[("email", "unknown@example.com")]),
        )
        .await;
    assert_eq!(known_form.status, unknown_form.status);
    assert_eq!(
        known_form.body.replace("known@example.com", "X"),
        unknown_form.body.replace("unknown@example.com", "X")
    );
}

#[tokio::test]
async fn send_is_limited_per_email_and_per_ip_with_retry_after() {
    let app = TestApp::new().await;
    for i in 0..5 {
        let ok = app
            .send(
                Req::post("/auth/send")
                    .ip(&format!("192.0.2.{}", 70 + i))
                    .json(json!({"email": "hy@example.com"})),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let limited = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.80")
                .json(json!({"email": "HY@example.com"})),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "RATE_LIMITED");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(
        (600..=720).contains(&retry),
        "one link per 12 minutes: {retry}"
    );

    // 20 per IP per hour, whatever the addresses.
    for i in 0..20 {
        let ok = app
            .send(
                Req::post("/auth/send")
                    .ip("192.0.2.90")
                    .json(json!({"email": format!("u{i}@example.com")})),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "request {i}");
    }
    let limited = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.90")
                .json(json!({"email": "fresh@example.com"})),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
    let form = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.90")
                .form(&[("email", "fresh@example.com")]),
        )
        .await;
    assert_eq!(form.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(form.header("retry-after").is_some());
    assert!(
        form.body.contains("Too many sign-in requests"),
        "{}",
        form.body
    );
}

#[tokio::test]
async fn verification_is_limited_per_ip_per_minute() {
    let app = TestApp::new().await;
    for i in 0..10 {
        let answer = app
            .send(
                Req::post("/auth/verify")
                    .ip("192.0.2.99")
                    .json(json!({"token": "A".repeat(43)})),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "attempt {i}");
    }
    for path_body in [
        ("/auth/verify", json!({"token": "A".repeat(43)})),
        (
            "/auth/verify-code",
            json!({"email": "a@example.com", "code": "123456"}),
        ),
    ] {
        let answer = app
            .send(Req::post(path_body.0).ip("192.0.2.99").json(path_body.1))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{}",
            path_body.0
        );
        let retry: u64 = answer
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("secs");
        assert!((1..=60).contains(&retry), "{retry}");
    }
    // Another address is not affected.
    let other = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.98")
                .json(json!({"token": "A".repeat(43)})),
        )
        .await;
    assert_eq!(other.status, StatusCode::BAD_REQUEST);
}

/// Limits live in PostgreSQL: two app instances (two "servers", each with its own pool) share
/// one budget.
#[tokio::test]
async fn limits_hold_across_server_instances() {
    let app = TestApp::new().await;
    let other = aide::build_app(aide::AppState::new(
        app.state.config.clone(),
        aide::db::Db::connect(app.t.app_options(), 2)
            .await
            .expect("second pool"),
        app.state.session_key.clone(),
        app.state.storage.clone(),
    ));
    for i in 0..5 {
        let req = Req::post("/auth/send")
            .ip(&format!("192.0.2.{}", 120 + i))
            .json(json!({"email": "iv@example.com"}));
        let answer = if i % 2 == 0 {
            app.send(req).await
        } else {
            TestApp::send_via(&other, req).await
        };
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
    }
    for router in [None, Some(&other)] {
        let req = Req::post("/auth/send")
            .ip("192.0.2.130")
            .json(json!({"email": "iv@example.com"}));
        let answer = match router {
            None => app.send(req).await,
            Some(r) => TestApp::send_via(r, req).await,
        };
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    }
}

#[tokio::test]
async fn cookies_are_secure_and_hsts_is_sent_when_app_url_is_https() {
    let app = TestApp::with(&[("APP_URL", "https://app.example.com")]).await;
    let sent = app
        .send(
            Req::new(axum::http::Method::POST, "/auth/send")
                .header("origin", "https://app.example.com")
                .json(json!({"email": "jo@example.com"})),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let (token, _, _) = app.last_email("jo@example.com").await;
    // Req::post sends the default Origin; this app expects its own.
    let answer = app
        .send(
            Req::new(axum::http::Method::POST, "/auth/verify")
                .header("origin", "https://app.example.com")
                .json(json!({"token": token})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        answer
            .header("set-cookie")
            .expect("cookie")
            .ends_with("; Secure")
    );
    assert!(answer.header("strict-transport-security").is_some());
}

#[tokio::test]
async fn cross_site_requests_with_the_cookie_are_refused() {
    let app = TestApp::new().await;
    app.send(Req::post("/auth/send").json(json!({"email": "ka@example.com"})))
        .await;
    let (token, _, _) = app.last_email("ka@example.com").await;
    let cookie = app
        .send(Req::post("/auth/verify").form(&[("token", &token)]))
        .await
        .session_cookie();

    let from_elsewhere = app
        .send(
            Req::new(axum::http::Method::POST, "/auth/logout")
                .header("origin", "https://evil.example")
                .cookie(&cookie),
        )
        .await;
    assert_eq!(from_elsewhere.status, StatusCode::FORBIDDEN);
    assert_eq!(from_elsewhere.json()["code"], "CSRF_REJECTED");
    let no_origin = app
        .send(Req::new(axum::http::Method::POST, "/auth/logout").cookie(&cookie))
        .await;
    assert_eq!(no_origin.status, StatusCode::FORBIDDEN);
    let me = app.send(Req::get("/auth/me").cookie(&cookie)).await;
    assert_eq!(
        me.status,
        StatusCode::OK,
        "the session survived the attempts"
    );

    let with_referer = app
        .send(
            Req::new(axum::http::Method::POST, "/auth/logout")
                .header("referer", &format!("{APP_URL}/"))
                .cookie(&cookie),
        )
        .await;
    assert_eq!(with_referer.status, StatusCode::NO_CONTENT);

    // Login CSRF: a foreign page posting someone's token is refused too.
    let planted = app
        .send(
            Req::new(axum::http::Method::POST, "/auth/verify")
                .header("origin", "https://evil.example")
                .form(&[("token", &token)]),
        )
        .await;
    assert_eq!(planted.status, StatusCode::FORBIDDEN);
    assert!(
        planted.body.contains("<h1>Refused</h1>"),
        "a form gets a page: {}",
        planted.body
    );
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_get_401() {
    let app = TestApp::new().await;
    let good = app.sign_in("le@example.com").await;
    let claims = jwt::verify(JWT_SECRET.as_bytes(), &good, chrono::Utc::now().timestamp())
        .expect("our own token verifies");
    let now = chrono::Utc::now().timestamp();

    let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut other = claims.clone();
    other.sub = Uuid::new_v4();
    parts[1] = b64.encode(serde_json::to_vec(&other).expect("json"));
    let tampered = parts.join(".");

    let expired = jwt::sign(
        JWT_SECRET.as_bytes(),
        &jwt::Claims {
            iat: now - 7200,
            exp: now - 60,
            ..claims.clone()
        },
    );
    let alg_none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","typ":"JWT"}"#),
        b64.encode(serde_json::to_vec(&claims).expect("json"))
    );
    let foreign = jwt::sign(b"some-other-secret-0123456789abcdef", &claims);
    // Well signed, but for a session that does not exist.
    let no_session = jwt::sign(
        JWT_SECRET.as_bytes(),
        &jwt::Claims {
            sid: Uuid::new_v4(),
            ..claims.clone()
        },
    );
    for (name, token) in [
        ("tampered", tampered),
        ("expired", expired),
        ("alg none", alg_none),
        ("other secret", foreign),
        ("no session row", no_session),
        ("garbage", "x.y.z".to_string()),
    ] {
        let bearer = app.send(Req::get("/auth/me").bearer(&token)).await;
        assert_eq!(bearer.status, StatusCode::UNAUTHORIZED, "{name} as bearer");
        let cookie = app
            .send(Req::get("/auth/me").cookie(&format!("session={token}")))
            .await;
        assert_eq!(cookie.status, StatusCode::UNAUTHORIZED, "{name} as cookie");
    }
    let none = app.send(Req::get("/auth/me")).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    let ok = app.send(Req::get("/auth/me").bearer(&good)).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn every_response_has_a_request_id_and_security_headers() {
    let app = TestApp::new().await;
    let answer = app.send(Req::get("/health")).await;
    let id = answer.header("x-request-id").expect("generated id");
    assert!(Uuid::parse_str(id).is_ok(), "{id}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("content-security-policy", "frame-ancestors 'none'"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        assert_eq!(answer.header(name), Some(value), "{name}");
    }
    assert!(
        answer.header("strict-transport-security").is_none(),
        "not on plain http"
    );

    let kept = app
        .send(Req::get("/auth/me").header("x-request-id", "client-chosen-42"))
        .await;
    assert_eq!(kept.header("x-request-id"), Some("client-chosen-42"));
    assert_eq!(kept.json()["request_id"], "client-chosen-42");
    let replaced = app
        .send(Req::get("/health").header("x-request-id", "has spaces\tand tabs"))
        .await;
    assert_ne!(
        replaced.header("x-request-id"),
        Some("has spaces\tand tabs")
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let app = TestApp::new().await;
    let huge = "a".repeat(aide::http::MAX_BODY_BYTES + 1);
    let answer = app
        .send(Req::post("/auth/send").json(json!({"email": huge})))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        answer.body
    );
}

#[tokio::test]
async fn the_openapi_document_and_docs_page_are_served() {
    let app = TestApp::new().await;
    let doc = app.send(Req::get("/api/openapi.json")).await;
    assert_eq!(doc.status, StatusCode::OK);
    let doc = doc.json();
    for path in [
        "/auth/send",
        "/auth/verify",
        "/auth/verify-code",
        "/auth/me",
        "/auth/logout",
        "/auth/logout-all",
        "/health",
        "/ready",
        "/api/aides",
        "/api/aides/{id}",
        "/api/aides/{id}/archive",
        "/api/aides/{id}/restore",
        "/api/aides/{id}/conversation",
        "/api/aides/{id}/conversation/messages",
        "/api/audit",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from the document"
        );
    }
    let docs = app.send(Req::get("/api/docs")).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert!(docs.body.contains("/api/openapi.json"));
    assert!(docs.body.contains("/api/aides/{id}/publish"));
}

/// The reference page runs no script and loads nothing from another origin: it is rendered on
/// the server, and its only asset, a stylesheet named by its content, comes from the binary.
#[tokio::test]
async fn the_docs_page_loads_nothing_from_another_origin() {
    let app = TestApp::new().await;
    let docs = app.send(Req::get("/api/docs")).await;
    assert_eq!(docs.status, StatusCode::OK);
    assert_eq!(
        docs.header("content-security-policy"),
        Some(
            "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        )
    );
    assert!(!docs.body.contains("<script"), "no script at all");
    for attribute in ["src=\"", "href=\""] {
        for value in docs.body.split(attribute).skip(1) {
            let target = value.split('"').next().unwrap_or_default();
            assert!(
                target.starts_with('/') || target.starts_with('#'),
                "{attribute}{target} leaves the origin"
            );
        }
    }
    let css = docs
        .body
        .split("rel=\"stylesheet\" href=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a stylesheet")
        .to_string();
    assert!(
        css.starts_with("/api/docs/docs-") && css.ends_with(".css"),
        "{css}"
    );
    let sheet = app.send(Req::get(&css)).await;
    assert_eq!(sheet.status, StatusCode::OK);
    assert_eq!(
        sheet.header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        sheet.header("cache-control"),
        Some("public, max-age=31536000, immutable")
    );
}

#[tokio::test]
async fn cleanup_removes_dead_links_and_sessions_only() {
    let app = TestApp::new().await;
    let live = app.sign_in("mo@example.com").await;
    let dead = app.sign_in("mo@example.com").await;
    app.send(Req::post("/auth/logout").bearer(&dead)).await;
    app.send(Req::post("/auth/send").json(json!({"email": "mo@example.com"})))
        .await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update magic_links set created_at = now() - interval '3 days', expires_at = now() - interval '2 days'
         where consumed_at is not null",
        &[],
    )
    .await
    .expect("age");
    tx.commit().await.expect("commit");

    aide::jobs::cleanup(&app.t.db).await.expect("cleanup");

    let tx = app.t.db.system().await.expect("system");
    let rows = tx
        .unregistered(
            "select (select count(*) from magic_links), (select count(*) from sessions)",
            &[],
        )
        .await
        .expect("count");
    let (links, sessions): (i64, i64) = (rows[0].get(0), rows[0].get(1));
    assert_eq!(links, 1, "the unconsumed link stays");
    assert_eq!(sessions, 1, "the live session stays");
    let me = app.send(Req::get("/auth/me").bearer(&live)).await;
    assert_eq!(me.status, StatusCode::OK);
}

#[tokio::test]
async fn forwarded_addresses_are_believed_only_when_configured() {
    let bad_token = json!({"token": "A".repeat(43)});
    // Not configured: X-Forwarded-For is ignored, the socket address counts.
    let app = TestApp::new().await;
    for i in 0..10 {
        let answer = app
            .send(
                Req::post("/auth/verify")
                    .ip("192.0.2.150")
                    .header("x-forwarded-for", &format!("203.0.113.{i}"))
                    .json(bad_token.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    }
    let limited = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.150")
                .header("x-forwarded-for", "203.0.113.99")
                .json(bad_token.clone()),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);

    // Configured: the proxy's entry (the last) counts, whatever the client put before it.
    let app = TestApp::with(&[("TRUSTED_PROXY_HEADER", "X-Forwarded-For")]).await;
    for i in 0..10 {
        let answer = app
            .send(
                Req::post("/auth/verify")
                    .ip("192.0.2.151")
                    .header("x-forwarded-for", &format!("198.51.100.{i}, 203.0.113.7"))
                    .json(bad_token.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    }
    let same_client = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.151")
                .header("x-forwarded-for", "203.0.113.7")
                .json(bad_token.clone()),
        )
        .await;
    assert_eq!(same_client.status, StatusCode::TOO_MANY_REQUESTS);
    let other_client = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.151")
                .header("x-forwarded-for", "203.0.113.8")
                .json(bad_token),
        )
        .await;
    assert_eq!(other_client.status, StatusCode::BAD_REQUEST);
}
