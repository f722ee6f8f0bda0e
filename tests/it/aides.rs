//! The aides API through the real router: happy paths, validation, limits, pagination, audit, and
//! a cross-tenant probe of every route.

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::app::{Req, TestApp, join_all};

async fn create(app: &TestApp, token: &str, title: &str) -> Value {
    let answer = app
        .send(
            Req::post("/api/aides")
                .bearer(token)
                .json(json!({"title": title})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    answer.json()
}

#[tokio::test]
async fn an_aide_from_creation_to_deletion() {
    let app = TestApp::new().await;
    let token = app.sign_in("ann@example.com").await;

    let untitled = app.send(Req::post("/api/aides").bearer(&token)).await;
    assert_eq!(untitled.status, StatusCode::CREATED, "{}", untitled.body);
    assert_eq!(untitled.json()["title"], "Untitled");
    let aide = create(&app, &token, "  Groceries  ").await;
    assert_eq!(aide["title"], "Groceries");
    assert_eq!(aide["status"], "draft");
    assert_eq!(aide["slug"], Value::Null);
    for hidden in ["r2_prefix", "user_id"] {
        assert!(
            aide.get(hidden).is_none(),
            "{hidden} must not be exposed: {aide}"
        );
    }
    let id = aide["id"].as_str().expect("id").to_string();

    let list = app.send(Req::get("/api/aides").bearer(&token)).await.json();
    let titles: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|a| a["title"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        titles,
        ["Groceries", "Untitled"],
        "most recently updated first"
    );
    assert_eq!(list["next_cursor"], Value::Null);

    let got = app
        .send(Req::get(&format!("/api/aides/{id}")).bearer(&token))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json()["id"], aide["id"]);

    let renamed = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{id}"))
                .bearer(&token)
                .json(json!({"title": "Weekly shop"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    assert_eq!(renamed.json()["title"], "Weekly shop");
    assert!(renamed.json()["updated_at"].as_str() > aide["updated_at"].as_str());

    let archived = app
        .send(Req::post(&format!("/api/aides/{id}/archive")).bearer(&token))
        .await;
    assert_eq!(archived.json()["status"], "archived");
    let list = app.send(Req::get("/api/aides").bearer(&token)).await.json();
    assert_eq!(
        list["items"].as_array().expect("items").len(),
        1,
        "archived aides leave the default list"
    );
    let only_archived = app
        .send(Req::get("/api/aides?status=archived").bearer(&token))
        .await
        .json();
    assert_eq!(only_archived["items"][0]["id"], aide["id"]);

    let restored = app
        .send(Req::post(&format!("/api/aides/{id}/restore")).bearer(&token))
        .await;
    assert_eq!(restored.json()["status"], "draft");

    app.send(
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .bearer(&token)
            .json(json!({"role": "user", "content": "add milk"})),
    )
    .await;
    let deleted = app
        .send(Req::new(Method::DELETE, &format!("/api/aides/{id}")).bearer(&token))
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    for path in [
        format!("/api/aides/{id}"),
        format!("/api/aides/{id}/conversation"),
    ] {
        let gone = app.send(Req::get(&path).bearer(&token)).await;
        assert_eq!(gone.status, StatusCode::NOT_FOUND, "{path}");
    }
    let tx = app.t.db.system().await.expect("system");
    let _ = &tx;
    let owner = app.t.owner_conn().await;
    let aide_id: Uuid = id.parse().expect("aide id");
    let row = owner
        .query_one(
            "select (select count(*) from conversations where aide_id = $1::uuid), (select count(*) from conversation_messages m join conversations c on c.id = m.conversation_id where c.aide_id = $1::uuid)",
            &[&aide_id],
        )
        .await
        .expect("count");
    let left: (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(left, (0, 0));

    let actions: Vec<String> = app
        .audit_actions()
        .await
        .into_iter()
        .map(|(a, _, _)| a)
        .filter(|a| a.starts_with("aide.") || a.starts_with("conversation."))
        .collect();
    assert_eq!(
        actions,
        [
            "aide.create",
            "aide.create",
            "aide.update",
            "aide.archive",
            "aide.restore",
            "conversation.message",
            "aide.delete"
        ]
    );
}

/// The list is read in one round trip, its rows arriving as text; a single aide is read in a
/// transaction, its rows arriving in binary. Both must describe an aide identically, timestamps
/// to the microsecond, fixed-width RFC 3339 in UTC.
#[tokio::test]
async fn the_list_and_the_single_read_agree_to_the_microsecond() {
    let app = TestApp::new().await;
    let token = app.sign_in("same@example.com").await;
    let created = create(&app, &token, "Groceries \"weekly\" — ünïcode").await;
    let id = created["id"].as_str().expect("id");
    // Timestamps with fewer significant fractional digits (set by the superuser, past the trigger
    // that stamps updated_at).
    let admin = app.t.admin_conn().await;
    admin
        .batch_execute("set session_replication_role = replica")
        .await
        .expect("skip triggers");
    let aide_id: Uuid = id.parse().expect("aide id");
    admin
        .execute(
            "update aides set created_at = '2026-01-02 03:04:05.1+00', updated_at = '2026-01-02 03:04:06+00'
             where id = $1::uuid",
            &[&aide_id],
        )
        .await
        .expect("set timestamps");
    let single = app
        .send(Req::get(&format!("/api/aides/{id}")).bearer(&token))
        .await;
    assert_eq!(single.status, StatusCode::OK);
    let list = app.send(Req::get("/api/aides").bearer(&token)).await;
    assert_eq!(list.status, StatusCode::OK);
    let listed = &list.json()["items"][0];
    assert_eq!(listed, &single.json());
    assert_eq!(listed["created_at"], "2026-01-02T03:04:05.100000Z");
    assert_eq!(listed["updated_at"], "2026-01-02T03:04:06.000000Z");
    assert_eq!(listed["title"], "Groceries \"weekly\" — ünïcode");
}

#[tokio::test]
async fn bad_input_gets_422_with_the_field_named() {
    let app = TestApp::new().await;
    let token = app.sign_in("bea@example.com").await;
    let id = create(&app, &token, "Plan").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let cases: Vec<(Req, &str)> = vec![
        (
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "   "})),
            "title",
        ),
        (
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "x".repeat(201)})),
            "title",
        ),
        (
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "ok", "owner": "me"})),
            "",
        ),
        (
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": 5})),
            "",
        ),
        (
            Req::new(Method::PATCH, &format!("/api/aides/{id}"))
                .bearer(&token)
                .json(json!({})),
            "title",
        ),
        (
            Req::new(Method::PATCH, &format!("/api/aides/{id}"))
                .bearer(&token)
                .json(json!({"slug": "Bad Slug"})),
            "slug",
        ),
        (
            Req::new(Method::PATCH, &format!("/api/aides/{id}"))
                .bearer(&token)
                .json(json!({"slug": "api"})),
            "slug",
        ),
        (
            Req::get("/api/aides?status=deleted").bearer(&token),
            "status",
        ),
        (Req::get("/api/aides?limit=0").bearer(&token), "limit"),
        (
            Req::get("/api/aides?cursor=nonsense").bearer(&token),
            "cursor",
        ),
        (Req::get("/api/aides/not-a-uuid").bearer(&token), "id"),
        (Req::post("/api/aides/12345/archive").bearer(&token), "id"),
        (
            Req::get(&format!("/api/aides/{id}/conversation?cursor=%%%")).bearer(&token),
            "",
        ),
        (
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "system", "content": "x"})),
            "",
        ),
        (
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "user", "content": "  "})),
            "content",
        ),
        (
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "user", "content": "x".repeat(10_001)})),
            "content",
        ),
        (
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "assistant", "content": "x".repeat(100_001)})),
            "content",
        ),
        (
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "user", "content": "x", "metadata": [1]})),
            "metadata",
        ),
    ];
    for (req, field) in cases {
        let answer = app.send(req).await;
        if answer.status == StatusCode::PAYLOAD_TOO_LARGE {
            continue;
        }
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{}",
            answer.body
        );
        let body = answer.json();
        assert_eq!(body["code"], "VALIDATION_FAILED");
        assert!(!body["detail"].as_str().unwrap_or_default().is_empty());
        if !field.is_empty() {
            assert_eq!(body["fields"][0]["field"], field, "{body}");
        }
    }
    // A long assistant message is fine within its own limit (bodies up to 64 KiB here).
    let long = app
        .send(
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "assistant", "content": "y".repeat(50_000)})),
        )
        .await;
    assert_eq!(long.status, StatusCode::CREATED, "{}", long.body);
}

#[tokio::test]
async fn every_route_needs_a_session() {
    let app = TestApp::new().await;
    let id = uuid::Uuid::new_v4();
    for req in [
        Req::get("/api/aides"),
        Req::post("/api/aides").json(json!({})),
        Req::get(&format!("/api/aides/{id}")),
        Req::new(Method::PATCH, &format!("/api/aides/{id}")).json(json!({"title": "x"})),
        Req::new(Method::DELETE, &format!("/api/aides/{id}")),
        Req::post(&format!("/api/aides/{id}/archive")),
        Req::post(&format!("/api/aides/{id}/restore")),
        Req::get(&format!("/api/aides/{id}/conversation")),
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .json(json!({"role": "user", "content": "x"})),
        Req::get("/api/audit"),
    ] {
        let answer = app.send(req).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
        assert_eq!(answer.json()["code"], "UNAUTHORIZED");
    }
}

/// User B gets 404 for every one of A's ids on every route, and A's data is unchanged.
#[tokio::test]
async fn another_users_ids_are_not_found_anywhere() {
    let app = TestApp::new().await;
    let a = app.sign_in("a@example.com").await;
    let b = app.sign_in("b@example.com").await;
    app.make_pro("b@example.com").await;
    let aide = create(&app, &a, "A's plan").await;
    let id = aide["id"].as_str().expect("id").to_string();
    app.send(
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .bearer(&a)
            .json(json!({"role": "user", "content": "secret"})),
    )
    .await;
    let before_aide = app
        .send(Req::get(&format!("/api/aides/{id}")).bearer(&a))
        .await
        .body;
    let before_conversation = app
        .send(Req::get(&format!("/api/aides/{id}/conversation")).bearer(&a))
        .await
        .body;

    for req in [
        Req::get(&format!("/api/aides/{id}")),
        Req::new(Method::PATCH, &format!("/api/aides/{id}")).json(json!({"title": "mine now"})),
        Req::new(Method::PATCH, &format!("/api/aides/{id}")).json(json!({"slug": "stolen-page"})),
        Req::new(Method::DELETE, &format!("/api/aides/{id}")),
        Req::post(&format!("/api/aides/{id}/archive")),
        Req::post(&format!("/api/aides/{id}/restore")),
        Req::get(&format!("/api/aides/{id}/conversation")),
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .json(json!({"role": "user", "content": "planted"})),
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .json(json!({"role": "assistant", "content": "planted"})),
    ] {
        let answer = app.send(req.bearer(&b)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert_eq!(answer.json()["code"], "NOT_FOUND");
    }
    let list = app
        .send(Req::get("/api/aides?status=draft").bearer(&b))
        .await
        .json();
    assert_eq!(list["items"], json!([]));
    let audit = app.send(Req::get("/api/audit").bearer(&b)).await.json();
    assert!(
        audit["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|e| e["resource_id"] != aide["id"]),
        "B sees nothing of A's in the audit trail: {audit}"
    );

    assert_eq!(
        app.send(Req::get(&format!("/api/aides/{id}")).bearer(&a))
            .await
            .body,
        before_aide
    );
    assert_eq!(
        app.send(Req::get(&format!("/api/aides/{id}/conversation")).bearer(&a))
            .await
            .body,
        before_conversation
    );
    // B's turn count did not move either (a refused message uses nothing).
    let me = app.send(Req::get("/auth/me").bearer(&b)).await.json();
    assert_eq!(me["turns"]["used"], 0);
}

#[tokio::test]
async fn free_accounts_hold_five_active_aides_and_pro_accounts_any_number() {
    let app = TestApp::new().await;
    let token = app.sign_in("cat@example.com").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            create(&app, &token, &format!("Aide {i}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let sixth = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "Six"})),
        )
        .await;
    assert_eq!(sixth.status, StatusCode::FORBIDDEN);
    let body = sixth.json();
    assert_eq!(body["code"], "AIDE_LIMIT_REACHED");
    assert!(
        body["detail"]
            .as_str()
            .expect("detail")
            .contains("upgrade to Pro"),
        "{body}"
    );

    app.send(Req::post(&format!("/api/aides/{}/archive", ids[0])).bearer(&token))
        .await;
    create(&app, &token, "Six").await;
    let restore = app
        .send(Req::post(&format!("/api/aides/{}/restore", ids[0])).bearer(&token))
        .await;
    assert_eq!(
        restore.status,
        StatusCode::FORBIDDEN,
        "restoring respects the limit"
    );
    assert_eq!(restore.json()["code"], "AIDE_LIMIT_REACHED");

    app.make_pro("cat@example.com").await;
    let restore = app
        .send(Req::post(&format!("/api/aides/{}/restore", ids[0])).bearer(&token))
        .await;
    assert_eq!(restore.status, StatusCode::OK);
    for i in 0..5 {
        create(&app, &token, &format!("Pro {i}")).await;
    }
}

#[tokio::test]
async fn simultaneous_creates_cannot_pass_the_free_limit() {
    let app = TestApp::new().await;
    let token = app.sign_in("dee@example.com").await;
    let attempts = (0..12).map(|i| {
        app.send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": format!("Race {i}")})),
        )
    });
    let answers = join_all(attempts).await;
    let created = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let refused = answers
        .iter()
        .filter(|a| a.status == StatusCode::FORBIDDEN)
        .count();
    assert_eq!((created, refused), (5, 7));
}

#[tokio::test]
async fn slugs_are_a_pro_feature_and_unique() {
    let app = TestApp::new().await;
    let free = app.sign_in("eve@example.com").await;
    let pro = app.sign_in("fay@example.com").await;
    let other_pro = app.sign_in("gus@example.com").await;
    app.make_pro("fay@example.com").await;
    app.make_pro("gus@example.com").await;

    let free_aide = create(&app, &free, "Mine").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let refused = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{free_aide}"))
                .bearer(&free)
                .json(json!({"slug": "my-page"})),
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "PRO_REQUIRED");

    let pro_aide = create(&app, &pro, "Poker").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let chosen = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{pro_aide}"))
                .bearer(&pro)
                .json(json!({"slug": "poker-night"})),
        )
        .await;
    assert_eq!(chosen.status, StatusCode::OK, "{}", chosen.body);
    assert_eq!(chosen.json()["slug"], "poker-night");

    // Before its first publish a chosen slug is only a request: it holds nothing, so another
    // user's request for it tells them nothing about anyone's unpublished drafts.
    let other_aide = create(&app, &other_pro, "Also poker").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let also = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{other_aide}"))
                .bearer(&other_pro)
                .json(json!({"slug": "poker-night"})),
        )
        .await;
    assert_eq!(also.status, StatusCode::OK, "{}", also.body);

    // The first to publish takes it; the other's publish is refused and changes nothing.
    app.put_file(&pro, &pro_aide, "index.html", "<p>pro</p>")
        .await;
    app.put_file(&other_pro, &other_aide, "index.html", "<p>other</p>")
        .await;
    let first = app
        .send(Req::post(&format!("/api/aides/{pro_aide}/publish")).bearer(&pro))
        .await;
    assert_eq!(first.status, StatusCode::CREATED, "{}", first.body);
    assert_eq!(first.json()["aide"]["slug"], "poker-night");
    let second = app
        .send(Req::post(&format!("/api/aides/{other_aide}/publish")).bearer(&other_pro))
        .await;
    assert_eq!(second.status, StatusCode::CONFLICT, "{}", second.body);
    assert_eq!(second.json()["code"], "SLUG_TAKEN");
    let versions = app
        .send(Req::get(&format!("/api/aides/{other_aide}/versions")).bearer(&other_pro))
        .await
        .json();
    assert_eq!(versions["versions"], json!([]));

    // Once published, a slug is taken at once, or refused with nothing half-written.
    let renamed = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{other_aide}"))
                .bearer(&other_pro)
                .json(json!({"slug": "poker-evening"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);
    let published = app
        .send(Req::post(&format!("/api/aides/{other_aide}/publish")).bearer(&other_pro))
        .await;
    assert_eq!(published.status, StatusCode::CREATED, "{}", published.body);
    let both = app
        .send(
            Req::new(Method::PATCH, &format!("/api/aides/{other_aide}"))
                .bearer(&other_pro)
                .json(json!({"slug": "poker-night", "title": "Renamed"})),
        )
        .await;
    assert_eq!(both.status, StatusCode::CONFLICT);
    assert_eq!(both.json()["code"], "SLUG_TAKEN");
    let still = app
        .send(Req::get(&format!("/api/aides/{other_aide}")).bearer(&other_pro))
        .await
        .json();
    assert_eq!(still["title"], "Also poker");
    assert_eq!(still["slug"], "poker-evening");
}

/// Keyset pagination neither repeats nor skips items while new ones are added between pages.
#[tokio::test]
async fn pages_neither_repeat_nor_skip_while_aides_are_added() {
    let app = TestApp::with(&[("API_REQUESTS_PER_USER_PER_MINUTE", "100000")]).await;
    let token = app.sign_in("hal@example.com").await;
    app.make_pro("hal@example.com").await;
    let mut originals = Vec::new();
    for i in 0..23 {
        originals.push(
            create(&app, &token, &format!("Original {i}")).await["id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/aides?limit=5&cursor={c}"),
            None => "/api/aides?limit=5".to_string(),
        };
        let page = app.send(Req::get(&path).bearer(&token)).await.json();
        for item in page["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_string());
        }
        // Someone adds aides while we page.
        create(&app, &token, &format!("New {added}")).await;
        added += 1;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected = originals.clone();
    expected.reverse();
    assert_eq!(seen, expected, "every original exactly once, newest first");
}

#[tokio::test]
async fn the_audit_trail_lists_ones_own_entries_newest_first_in_pages() {
    let app = TestApp::new().await;
    let token = app.sign_in("ida@example.com").await;
    let other = app.sign_in("jon@example.com").await;
    create(&app, &other, "Theirs").await;
    for i in 0..3 {
        create(&app, &token, &format!("Mine {i}")).await;
    }
    let first = app
        .send(Req::get("/api/audit?limit=2").bearer(&token))
        .await
        .json();
    let items = first["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["action"], "aide.create");
    assert!(
        items[0]["id"].as_i64() > items[1]["id"].as_i64(),
        "newest first"
    );
    let rest = app
        .send(
            Req::get(&format!(
                "/api/audit?cursor={}",
                first["next_cursor"].as_str().expect("cursor")
            ))
            .bearer(&token),
        )
        .await
        .json();
    let mut actions: Vec<String> = items
        .iter()
        .chain(rest["items"].as_array().expect("items"))
        .map(|e| e["action"].as_str().unwrap_or_default().to_string())
        .collect();
    actions.reverse();
    // The first link was asked for before the account existed, so it belongs to no one's trail.
    assert_eq!(
        actions,
        ["auth.sign_in", "aide.create", "aide.create", "aide.create"]
    );
    assert_eq!(first["items"][0]["ip_address"], "192.0.2.1");
}

#[tokio::test]
async fn the_api_is_rate_limited_per_user() {
    let app = TestApp::with(&[("API_REQUESTS_PER_USER_PER_MINUTE", "5")]).await;
    let token = app.sign_in("kim@example.com").await;
    let other = app.sign_in("lou@example.com").await;
    for _ in 0..5 {
        let ok = app.send(Req::get("/api/aides").bearer(&token)).await;
        assert_eq!(ok.status, StatusCode::OK);
    }
    let limited = app.send(Req::get("/api/aides").bearer(&token)).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "RATE_LIMITED");
    let retry: u64 = limited
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert!((1..=12).contains(&retry), "{retry}");
    let fine = app.send(Req::get("/api/aides").bearer(&other)).await;
    assert_eq!(
        fine.status,
        StatusCode::OK,
        "another user has their own budget"
    );
}

#[tokio::test]
async fn a_revoked_session_is_refused_by_every_api_route() {
    let app = TestApp::new().await;
    let token = app.sign_in("rev@example.com").await;
    let id = create(&app, &token, "Before logout").await["id"]
        .as_str()
        .expect("id")
        .to_string();
    let out = app.send(Req::post("/auth/logout").bearer(&token)).await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    for req in [
        Req::get("/api/aides"),
        Req::post("/api/aides").json(json!({})),
        Req::get(&format!("/api/aides/{id}")),
        Req::get(&format!("/api/aides/{id}/conversation")),
        Req::post(&format!("/api/aides/{id}/conversation/messages"))
            .json(json!({"role": "user", "content": "x"})),
        Req::get("/api/audit"),
        Req::get("/auth/me"),
    ] {
        let answer = app.send(req.bearer(&token)).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{}", answer.body);
    }
}

/// With a limit large enough for leases of several tokens, two servers together still allow no
/// more than the limit in a burst.
#[tokio::test]
async fn leased_rate_limit_tokens_never_exceed_the_limit_across_servers() {
    let app = TestApp::with(&[("API_REQUESTS_PER_USER_PER_MINUTE", "60")]).await;
    let token = app.sign_in("lease@example.com").await;
    let other = aide::build_app(aide::AppState::new(
        app.state.config.clone(),
        aide::db::Db::connect(app.t.app_options(), 2)
            .await
            .expect("pool"),
        app.state.session_key.clone(),
        app.state.storage.clone(),
    ));
    let mut allowed = 0;
    for i in 0..100 {
        let req = Req::get("/api/aides").bearer(&token);
        let answer = if i % 2 == 0 {
            app.send(req).await
        } else {
            TestApp::send_via(&other, req).await
        };
        match answer.status {
            StatusCode::OK => allowed += 1,
            StatusCode::TOO_MANY_REQUESTS => assert!(answer.header("retry-after").is_some()),
            other => panic!("unexpected {other}"),
        }
    }
    // Leases of 3 tokens: at most 60 pass; each server may hold back what it leased and not used.
    assert!((54..=60).contains(&allowed), "{allowed} allowed");
}
