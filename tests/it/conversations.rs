//! Conversations and turns: the free weekly limit under concurrency, the weekly reset, Pro, and
//! pagination.

use axum::http::StatusCode;
use serde_json::json;

use crate::app::{Req, TestApp, join_all};
use crate::support::exec;

async fn app_and_aide(email: &str) -> (TestApp, String, String) {
    let app = TestApp::with(&[("API_REQUESTS_PER_USER_PER_MINUTE", "100000")]).await;
    let token = app.sign_in(email).await;
    let id = app.create_aide(&token, "Chat").await;
    (app, token, id)
}

fn message(id: &str, token: &str, role: &str, content: &str) -> Req {
    Req::post(&format!("/api/aides/{id}/conversation/messages"))
        .bearer(token)
        .json(json!({"role": role, "content": content}))
}

#[tokio::test]
async fn of_200_simultaneous_user_messages_exactly_50_are_accepted() {
    let (app, token, id) = app_and_aide("max@example.com").await;
    let answers =
        join_all((0..200).map(|i| app.send(message(&id, &token, "user", &format!("message {i}")))))
            .await;
    let accepted = answers
        .iter()
        .filter(|a| a.status == StatusCode::CREATED)
        .count();
    let limited: Vec<_> = answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert_eq!((accepted, limited.len()), (50, 150));
    let refusal = limited[0].json();
    assert_eq!(refusal["code"], "TURN_LIMIT_REACHED");
    assert_eq!(refusal["usage"]["used"], 50);
    assert_eq!(refusal["usage"]["limit"], 50);
    assert!(refusal["usage"]["resets_at"].is_string());
    let retry: u64 = limited[0]
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("secs");
    assert!(retry > 6 * 86_400 && retry <= 7 * 86_400, "{retry}");

    // Only the accepted messages were stored: a refused one leaves nothing behind.
    let page = app
        .send(Req::get(&format!("/api/aides/{id}/conversation?limit=100")).bearer(&token))
        .await
        .json();
    assert_eq!(page["messages"].as_array().expect("messages").len(), 50);
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    assert_eq!(me["turns"]["used"], 50);
    assert_eq!(me["turns"]["limit"], 50);

    // Assistant messages use no turn, even at the limit.
    let assistant = app
        .send(message(&id, &token, "assistant", "Here is your list."))
        .await;
    assert_eq!(assistant.status, StatusCode::CREATED);
    assert_eq!(assistant.json()["turns"], serde_json::Value::Null);
}

#[tokio::test]
async fn the_week_restarts_after_seven_days() {
    let (app, token, id) = app_and_aide("ned@example.com").await;
    for i in 0..50 {
        let answer = app
            .send(message(&id, &token, "user", &format!("m{i}")))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED);
    }
    assert_eq!(
        app.send(message(&id, &token, "user", "one more"))
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let tx = app.t.db.system().await.expect("system");
    exec(&tx, "update users set turn_week_start = turn_week_start - interval '8 days' where email = 'ned@example.com'", &[])
        .await
        .expect("age the week");
    tx.commit().await.expect("commit");
    let answer = app.send(message(&id, &token, "user", "new week")).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    assert_eq!(answer.json()["turns"]["used"], 1);
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    assert_eq!(me["turns"]["used"], 1);
}

#[tokio::test]
async fn pro_accounts_have_no_turn_limit() {
    let (app, token, id) = app_and_aide("ola@example.com").await;
    let tx = app.t.db.system().await.expect("system");
    exec(
        &tx,
        "update users set tier = 'pro' where email = 'ola@example.com'",
        &[],
    )
    .await
    .expect("pro");
    tx.commit().await.expect("commit");
    for i in 0..60 {
        let answer = app
            .send(message(&id, &token, "user", &format!("m{i}")))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "message {i}");
        assert_eq!(answer.json()["turns"]["limit"], serde_json::Value::Null);
    }
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    assert_eq!(me["turns"]["used"], 60);
    assert_eq!(me["turns"]["limit"], serde_json::Value::Null);
}

#[tokio::test]
async fn messages_page_oldest_first_without_repeats_or_gaps_while_more_arrive() {
    let (app, token, id) = app_and_aide("pam@example.com").await;
    for i in 0..12 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        app.send(message(&id, &token, role, &format!("m{i}"))).await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut extra = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/aides/{id}/conversation?limit=5&cursor={c}"),
            None => format!("/api/aides/{id}/conversation?limit=5"),
        };
        let page = app.send(Req::get(&path).bearer(&token)).await.json();
        for m in page["messages"].as_array().expect("messages") {
            seen.push(m["content"].as_str().expect("content").to_string());
        }
        if extra < 2 {
            app.send(message(&id, &token, "assistant", &format!("late{extra}")))
                .await;
            extra += 1;
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    expected.extend(["late0".to_string(), "late1".to_string()]);
    assert_eq!(seen, expected);
    let first = app
        .send(Req::get(&format!("/api/aides/{id}/conversation?limit=1")).bearer(&token))
        .await
        .json();
    assert_eq!(first["messages"][0]["role"], "user");
    assert_eq!(first["messages"][0]["metadata"], json!({}));
}

#[tokio::test]
async fn message_audit_rows_hold_no_content() {
    let (app, token, id) = app_and_aide("quin@example.com").await;
    let answer = app
        .send(
            Req::post(&format!("/api/aides/{id}/conversation/messages"))
                .bearer(&token)
                .json(json!({"role": "user", "content": "my secret shopping list", "metadata": {"client": "web"}})),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED);
    assert_eq!(
        answer.json()["message"]["metadata"],
        json!({"client": "web"})
    );
    let audit = app.audit_actions().await;
    let (_, _, details) = audit
        .iter()
        .find(|(a, _, _)| a == "conversation.message")
        .expect("audited");
    assert_eq!(details["role"], "user");
    assert_eq!(details["chars"], 23);
    assert!(!details.to_string().contains("secret"), "{details}");
}
