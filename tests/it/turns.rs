//! The AI turn through the router, on real PostgreSQL, with the model provider stood in for by
//! [`ModelStub`] (Anthropic's wire format, every request checked).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::{Req, TestApp};
use crate::model_stub::{Answer, ModelStub, broken, paced, response};

const EDITOR: &str = "str_replace_based_edit_tool";

/// The events of a `text/event-stream` body: (id, name, data).
fn events(body: &str) -> Vec<(u64, String, Value)> {
    body.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .unwrap_or_default()
                    .to_string()
            };
            (
                field("id").parse().expect("an id"),
                field("event"),
                serde_json::from_str(&field("data")).expect("JSON data"),
            )
        })
        .collect()
}

async fn app_with(stub: &ModelStub, extra: &[(&str, &str)]) -> TestApp {
    let vars = stub.vars();
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    TestApp::with(&all).await
}

fn turn(id: &str, token: &str, content: &str, client: &str) -> Req {
    Req::post(&format!("/api/aides/{id}/turns"))
        .bearer(token)
        .json(json!({"content": content, "client_turn_id": client}))
}

async fn me_turns(app: &TestApp, token: &str) -> i64 {
    app.send(Req::get("/auth/me").bearer(token)).await.json()["turns"]["used"]
        .as_i64()
        .expect("used")
}

async fn page(app: &TestApp, id: &str, token: &str) -> String {
    app.send(Req::get(&format!("/api/aides/{id}/files/index.html")).bearer(token))
        .await
        .body
}

#[tokio::test]
async fn a_turn_streams_changes_the_page_and_is_metered_and_recorded() {
    let stub = ModelStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("turn@example.com").await;
    let id = app.create_aide(&token, "Groceries").await;
    app.put_file(&token, &id, "index.html", "<ul>\n<li>eggs</li>\n</ul>\n")
        .await;
    stub.script(vec![response(
        "Added milk to the list.",
        &[(
            EDITOR,
            json!({"command": "str_replace", "path": "index.html", "old_str": "<li>eggs</li>", "new_str": "<li>eggs</li>\n<li>milk \u{e9}</li>"}),
        )],
        "tool_use",
    )]);
    let answer = app.send(turn(&id, &token, "add milk", "c-1")).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.header("content-type"), Some("text/event-stream"));
    let seen = events(&answer.body);
    let names: Vec<&str> = seen.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"turn.started"), "{names:?}");
    assert_eq!(names.last(), Some(&"turn.completed"), "{names:?}");
    for expected in [
        "text.delta",
        "tool.started",
        "tool.delta",
        "tool.applied",
        "file.updated",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
    }
    let ids: Vec<u64> = seen.iter().map(|(i, _, _)| *i).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids in order, none lost"
    );
    let started = &seen[0].2;
    assert_eq!(started["turns"]["used"], 1);
    assert_eq!(started["turns"]["limit"], 50);
    let preview: String = seen
        .iter()
        .filter(|(_, n, d)| n == "tool.delta" && d["text"].is_string())
        .map(|(_, _, d)| d["text"].as_str().expect("text").to_string())
        .collect();
    assert_eq!(preview, "<li>eggs</li>\n<li>milk \u{e9}</li>");
    let done = &seen.last().expect("last").2;
    // 1,200 input, 150 output and 800 cache-write tokens at $3, $15 and $3.75 a million.
    assert_eq!(done["cost_micros"], 3600 + 2250 + 3000);
    assert_eq!(done["files_changed"], json!(["index.html"]));
    let turn_id = done["turn_id"].as_str().expect("turn id").to_string();

    assert_eq!(
        page(&app, &id, &token).await,
        "<ul>\n<li>eggs</li>\n<li>milk \u{e9}</li>\n</ul>\n"
    );
    assert_eq!(me_turns(&app, &token).await, 1);
    let row = app
        .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}")).bearer(&token))
        .await
        .json();
    assert_eq!(row["status"], "completed");
    assert_eq!(row["counted"], true);
    assert_eq!(row["provider"], "anthropic");
    assert_eq!(row["model"], crate::model_stub::MODEL);
    assert_eq!(row["rounds"], 1);
    assert_eq!(row["tool_calls_applied"], 1);
    assert_eq!(
        (row["input_tokens"].as_i64(), row["output_tokens"].as_i64()),
        (Some(1200), Some(150))
    );
    assert_eq!(row["cache_write_tokens"], 800);
    assert_eq!(row["provider_request_ids"], json!(["req_stub_1"]));
    assert_eq!(row["prompt_version"].as_str().map(str::len), Some(16));
    assert!(row["duration_ms"].is_i64() && row["first_event_ms"].is_i64());
    let revision = row["revision"].as_i64().expect("a revision");
    let history = app
        .send(Req::get(&format!("/api/aides/{id}/revisions")).bearer(&token))
        .await
        .json();
    assert_eq!(history["items"][0]["number"], revision);
    assert_eq!(history["items"][0]["cause"], "turn");
    assert_eq!(history["items"][0]["turn_id"], turn_id.as_str());
    let conversation = app
        .send(Req::get(&format!("/api/aides/{id}/conversation")).bearer(&token))
        .await
        .json();
    let messages: Vec<(String, String)> = conversation["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| {
            (
                m["role"].as_str().expect("role").into(),
                m["content"].as_str().expect("content").into(),
            )
        })
        .collect();
    assert_eq!(
        messages,
        vec![
            ("user".into(), "add milk".into()),
            ("assistant".into(), "Added milk to the list.".into())
        ]
    );
    // What the model was sent: the page's file with the message.
    let sent = stub.received();
    assert_eq!(sent.len(), 1);
    let last = sent[0]["messages"]
        .as_array()
        .expect("messages")
        .last()
        .expect("last")
        .clone();
    let text = last["content"][0]["text"].as_str().expect("text");
    assert!(
        text.contains("<file path=\"index.html\">") && text.ends_with("add milk"),
        "{text}"
    );
    assert!(stub.problems().is_empty(), "{:?}", stub.problems());

    // The same key again: the same turn, nothing new counted or sent.
    let again = app.send(turn(&id, &token, "add milk", "c-1")).await;
    assert_eq!(again.status, StatusCode::OK);
    let replay = events(&again.body);
    assert_eq!(
        replay.first().map(|e| e.2["turn_id"].clone()),
        Some(json!(turn_id))
    );
    assert_eq!(replay.last().map(|e| e.1.as_str()), Some("turn.completed"));
    assert_eq!(me_turns(&app, &token).await, 1);
    assert_eq!(stub.received().len(), 1);
    // Re-attaching after event 3 gives the rest.
    let rest = app
        .send(
            Req::get(&format!("/api/aides/{id}/turns/{turn_id}/events"))
                .bearer(&token)
                .header("last-event-id", "3"),
        )
        .await;
    assert_eq!(events(&rest.body).first().map(|e| e.0), Some(4));
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/turns")).bearer(&token))
        .await
        .json();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_turn_that_fails_is_given_back_and_transient_refusals_are_retried() {
    let stub = ModelStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("fails@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>hi</p>").await;
    stub.script(vec![Answer::Error {
        status: 400,
        kind: "invalid_request_error",
        retry_after: None,
    }]);
    let answer = app.send(turn(&id, &token, "change it", "f-1")).await;
    let seen = events(&answer.body);
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.failed");
    assert_eq!(data["code"], "AI_REFUSED");
    assert_eq!(data["refunded"], true);
    assert_eq!(me_turns(&app, &token).await, 0, "given back");
    assert_eq!(page(&app, &id, &token).await, "<p>hi</p>");
    assert_eq!(stub.received().len(), 1, "a 400 is not retried");

    // Overloaded, then fine: retried before the first byte.
    stub.script(vec![
        Answer::Error {
            status: 529,
            kind: "overloaded_error",
            retry_after: Some(0),
        },
        response(
            "",
            &[(
                EDITOR,
                json!({"command": "create", "path": "index.html", "file_text": "<p>new</p>"}),
            )],
            "tool_use",
        ),
    ]);
    let answer = app.send(turn(&id, &token, "change it", "f-2")).await;
    let seen = events(&answer.body);
    assert_eq!(
        seen.last().map(|e| e.1.as_str()),
        Some("turn.completed"),
        "{}",
        answer.body
    );
    assert_eq!(page(&app, &id, &token).await, "<p>new</p>");
    assert_eq!(stub.received().len(), 3);
    assert_eq!(me_turns(&app, &token).await, 1);
    // No reply text: the stored reply names the files.
    let conversation = app
        .send(Req::get(&format!("/api/aides/{id}/conversation")).bearer(&token))
        .await
        .json();
    let last = conversation["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("a reply");
    assert_eq!(last["content"], "Updated index.html.");
    assert!(stub.problems().is_empty(), "{:?}", stub.problems());
}

/// Sends a turn in a task of its own (the answer streams until the turn ends).
fn spawn_turn(
    app: &Arc<TestApp>,
    id: &str,
    token: &str,
    content: &'static str,
    client: &'static str,
) -> tokio::task::JoinHandle<crate::app::Answer> {
    let (app, id, token) = (app.clone(), id.to_string(), token.to_string());
    tokio::spawn(async move { app.send(turn(&id, &token, content, client)).await })
}

async fn running(app: &TestApp, id: &str, token: &str) -> Option<String> {
    let listed = app
        .send(Req::get(&format!("/api/aides/{id}/turns")).bearer(token))
        .await
        .json();
    listed["items"]
        .as_array()?
        .iter()
        .find(|t| t["status"] == "running")
        .and_then(|t| t["id"].as_str().map(str::to_string))
}

#[tokio::test]
async fn one_turn_runs_per_aide_and_a_stop_interrupts_it() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[("AI_STALL_TIMEOUT_SECONDS", "600")]).await);
    let token = app.sign_in("busy@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>hi</p>").await;
    let first_events = vec![
        (
            "message_start".to_string(),
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (
            "content_block_start".to_string(),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        (
            "content_block_delta".to_string(),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Thinking about it"}}),
        ),
    ];
    stub.script(vec![Answer::Stall {
        events: first_events,
    }]);
    // Twenty at once: one runs, the others are refused.
    let sends = (0..20).map(|n| {
        let app = app.clone();
        let token = token.clone();
        let id = id.clone();
        tokio::spawn(async move {
            app.send(turn(&id, &token, "hello", &format!("k-{n}")))
                .await
        })
    });
    let mut pending = Vec::new();
    for send in sends {
        pending.push(send);
    }
    // Wait for the refusals (the running one does not answer until it ends).
    let turn_id = running_turn(&app, &id, &token).await;
    // Let the refusals finish, then stop the running turn.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stop = app
        .send(Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&token))
        .await;
    assert_eq!(stop.status, StatusCode::ACCEPTED, "{}", stop.body);
    assert_eq!(stop.json()["status"], "stopping");
    let mut ok = 0;
    let mut conflicts = 0;
    for send in pending {
        let answer = tokio::time::timeout(Duration::from_secs(20), send)
            .await
            .expect("every request is answered")
            .expect("task");
        match answer.status {
            StatusCode::OK => {
                ok += 1;
                let seen = events(&answer.body);
                let (_, name, data) = seen.last().expect("an end");
                assert_eq!(name, "turn.interrupted", "{}", answer.body);
                assert_eq!(data["counted"], true, "the model had answered");
            }
            StatusCode::CONFLICT => {
                conflicts += 1;
                assert_eq!(answer.json()["code"], "TURN_IN_PROGRESS");
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!((ok, conflicts), (1, 19));
    assert_eq!(
        me_turns(&app, &token).await,
        1,
        "refused turns are not counted"
    );
    let row = app
        .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}")).bearer(&token))
        .await
        .json();
    assert_eq!(row["status"], "interrupted");
    assert_eq!(page(&app, &id, &token).await, "<p>hi</p>");
    let again = app
        .send(Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&token))
        .await;
    assert_eq!(again.json()["status"], "finished");
}

#[tokio::test]
async fn a_turn_stopped_before_the_model_answers_is_given_back() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[("AI_STALL_TIMEOUT_SECONDS", "600")]).await);
    let token = app.sign_in("early@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    stub.script(vec![Answer::Stall { events: vec![] }]);
    let send = spawn_turn(&app, &id, &token, "hello", "e-1");
    let turn_id = running_turn(&app, &id, &token).await;
    app.send(Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&token))
        .await;
    let answer = send.await.expect("task");
    let seen = events(&answer.body);
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.interrupted");
    assert_eq!(data["counted"], false);
    assert_eq!(me_turns(&app, &token).await, 0);
}

#[tokio::test]
async fn turns_are_refused_clearly() {
    let app = TestApp::new().await;
    let token = app.sign_in("noai@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    let off = app.send(turn(&id, &token, "hello", "n-1")).await;
    assert_eq!(off.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(off.json()["code"], "AI_NOT_CONFIGURED");
    assert_eq!(me_turns(&app, &token).await, 0);

    let stub = ModelStub::start().await;
    let app = app_with(&stub, &[("FREE_TURNS_PER_WEEK", "1")]).await;
    let owner = app.sign_in("owner@example.com").await;
    let other = app.sign_in("other@example.com").await;
    let id = app.create_aide(&owner, "Page").await;
    stub.script(vec![response("Hello.", &[], "end_turn")]);
    let first = app.send(turn(&id, &owner, "hello", "t-1")).await;
    assert_eq!(
        events(&first.body).last().map(|e| e.1.clone()),
        Some("turn.completed".into())
    );
    let turn_id = events(&first.body)[0].2["turn_id"]
        .as_str()
        .expect("id")
        .to_string();
    let limited = app.send(turn(&id, &owner, "again", "t-2")).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.json()["code"], "TURN_LIMIT_REACHED");
    assert!(limited.header("retry-after").is_some());

    for (body, field) in [
        (json!({"content": " ", "client_turn_id": "x"}), "content"),
        (
            json!({"content": "a\u{0}b", "client_turn_id": "x"}),
            "content",
        ),
        (
            json!({"content": "x".repeat(10_001), "client_turn_id": "x"}),
            "content",
        ),
        (
            json!({"content": "hi", "client_turn_id": "has space"}),
            "client_turn_id",
        ),
        (
            json!({"content": "hi", "client_turn_id": ""}),
            "client_turn_id",
        ),
    ] {
        let answer = app
            .send(
                Req::post(&format!("/api/aides/{id}/turns"))
                    .bearer(&owner)
                    .json(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY, "{field}");
        assert!(answer.body.contains(field), "{}", answer.body);
    }
    let missing = app
        .send(
            Req::post(&format!("/api/aides/{id}/turns"))
                .bearer(&owner)
                .json(json!({"content": "hi"})),
        )
        .await;
    assert_eq!(missing.status, StatusCode::UNPROCESSABLE_ENTITY);

    // Another user: nothing of the turn or the aide.
    for req in [
        turn(&id, &other, "mine now", "o-1"),
        Req::get(&format!("/api/aides/{id}/turns")).bearer(&other),
        Req::get(&format!("/api/aides/{id}/turns/{turn_id}")).bearer(&other),
        Req::get(&format!("/api/aides/{id}/turns/{turn_id}/events")).bearer(&other),
        Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&other),
    ] {
        let answer = app.send(req).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{}", answer.body);
        assert_eq!(answer.json()["code"], "NOT_FOUND");
    }
    // Without a session, and with malformed ids.
    let without = app
        .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}")))
        .await;
    assert_eq!(without.status, StatusCode::UNAUTHORIZED);
    let bad = app
        .send(Req::get(&format!("/api/aides/{id}/turns/not-a-uuid")).bearer(&owner))
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_id = app
        .send(
            Req::get(&format!("/api/aides/{id}/turns/{turn_id}/events"))
                .bearer(&owner)
                .header("last-event-id", "x"),
        )
        .await;
    assert_eq!(bad_id.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(stub.problems().is_empty(), "{:?}", stub.problems());
}

async fn wait_for_status(app: &TestApp, id: &str, token: &str, turn_id: &str, want: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let row = app
            .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}")).bearer(token))
            .await
            .json();
        if row["status"] == want {
            return row;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "turn is {}",
            row["status"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn running_turn(app: &TestApp, id: &str, token: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(turn_id) = running(app, id, token).await {
            return turn_id;
        }
        assert!(std::time::Instant::now() < deadline, "no turn started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_goes_away_does_not_stop_or_lose_the_turn() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[]).await);
    let token = app.sign_in("gone@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    stub.script(vec![paced(
        response(
            "Made it.",
            &[(
                EDITOR,
                json!({"command": "create", "path": "index.html", "file_text": "<h1>Trip</h1>"}),
            )],
            "tool_use",
        ),
        Duration::from_millis(30),
    )]);
    let send = spawn_turn(&app, &id, &token, "plan a trip", "g-1");
    let turn_id = running_turn(&app, &id, &token).await;
    // The client hangs up mid-stream.
    send.abort();
    let row = wait_for_status(&app, &id, &token, &turn_id, "completed").await;
    assert_eq!(row["counted"], true);
    assert_eq!(page(&app, &id, &token).await, "<h1>Trip</h1>");
    // Its events can be read again, whole.
    let again = app
        .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}/events")).bearer(&token))
        .await;
    let seen = events(&again.body);
    assert_eq!(seen.first().map(|e| e.1.as_str()), Some("turn.started"));
    assert_eq!(seen.last().map(|e| e.1.as_str()), Some("turn.completed"));
}

#[tokio::test]
async fn a_page_changed_meanwhile_is_a_conflict_and_the_turn_is_given_back() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[]).await);
    let token = app.sign_in("conflict@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>one</p>").await;
    stub.script(vec![paced(
        response(
            "",
            &[(
                EDITOR,
                json!({"command": "create", "path": "index.html", "file_text": "<p>model</p>"}),
            )],
            "tool_use",
        ),
        Duration::from_millis(60),
    )]);
    let send = spawn_turn(&app, &id, &token, "rewrite", "x-1");
    running_turn(&app, &id, &token).await;
    // The person uploads a file while the turn runs.
    app.put_file(&token, &id, "index.html", "<p>mine</p>").await;
    let answer = send.await.expect("task");
    let seen = events(&answer.body);
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.failed", "{}", answer.body);
    assert_eq!(data["code"], "CONFLICT");
    assert_eq!(data["refunded"], true);
    assert_eq!(
        page(&app, &id, &token).await,
        "<p>mine</p>",
        "the person's edit stands"
    );
    assert_eq!(me_turns(&app, &token).await, 0);
}

#[tokio::test]
async fn a_broken_stream_or_a_storage_failure_changes_nothing_and_is_given_back() {
    let stub = ModelStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("broken@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>kept</p>").await;
    // An overloaded error after the first output: the turn fails, nothing half-applied.
    stub.script(vec![broken(
        response(
            "Starting.",
            &[(
                EDITOR,
                json!({"command": "create", "path": "index.html", "file_text": "<p>half</p>"}),
            )],
            "tool_use",
        ),
        3,
        "overloaded_error",
    )]);
    let answer = app.send(turn(&id, &token, "change", "b-1")).await;
    let seen = events(&answer.body);
    let names: Vec<&str> = seen.iter().map(|e| e.1.as_str()).collect();
    assert!(
        names.contains(&"tool.applied"),
        "the call was applied to the working copy: {names:?}"
    );
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.failed");
    assert_eq!(data["code"], "AI_BUSY");
    assert_eq!(data["refunded"], true);
    assert_eq!(page(&app, &id, &token).await, "<p>kept</p>");
    assert_eq!(me_turns(&app, &token).await, 0);

    // Storage that fails when the turn saves: the page and the meter stay as they were.
    let stub = ModelStub::start().await;
    let mut vars: Vec<(&str, String)> = stub.vars();
    vars.push(("R2_WORKSPACE_BUCKET", "no-such-bucket-for-turns".into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::on_s3_with(None, &vars).await;
    let token = app.sign_in("store@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    stub.script(vec![response(
        "",
        &[(
            EDITOR,
            json!({"command": "create", "path": "index.html", "file_text": "<p>new</p>"}),
        )],
        "tool_use",
    )]);
    let answer = app.send(turn(&id, &token, "make a page", "s-1")).await;
    let seen = events(&answer.body);
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.failed", "{}", answer.body);
    assert_eq!(data["code"], "UNAVAILABLE");
    assert_eq!(data["refunded"], true);
    let files = app
        .send(Req::get(&format!("/api/aides/{id}/files")).bearer(&token))
        .await
        .json();
    assert_eq!(files["files"].as_array().map(Vec::len), Some(0), "{files}");
    assert_eq!(me_turns(&app, &token).await, 0);
    assert_eq!(
        app.count_rows("pending_blobs").await,
        0,
        "the guard was released"
    );
}

#[tokio::test]
async fn the_janitor_fails_and_gives_back_turns_a_dead_process_left() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[("AI_STALL_TIMEOUT_SECONDS", "600")]).await);
    let token = app.sign_in("janitor@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    stub.script(vec![Answer::Stall { events: vec![] }]);
    let send = spawn_turn(&app, &id, &token, "hello", "j-1");
    let turn_id = running_turn(&app, &id, &token).await;
    assert_eq!(me_turns(&app, &token).await, 1);
    // As if its process died long ago: the deadline has passed.
    let admin = app.t.admin_conn().await;
    crate::support::exec(
        &admin,
        "update ai_turns set deadline = now() - interval '1 hour' where id = $1",
        &[&uuid::Uuid::parse_str(&turn_id).expect("uuid")],
    )
    .await
    .expect("backdate");
    let (failed, refunded) = aide::turns::expire_abandoned(&app.t.db)
        .await
        .expect("janitor");
    assert_eq!((failed, refunded), (1, 1));
    let row = wait_for_status(&app, &id, &token, &turn_id, "failed").await;
    assert_eq!(row["error_code"], "TURN_ABANDONED");
    assert_eq!(row["counted"], false);
    assert_eq!(me_turns(&app, &token).await, 0);
    // The aide takes turns again; the orphaned task, stopped, changes nothing.
    app.send(Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&token))
        .await;
    let _ = send.await;
    assert_eq!(me_turns(&app, &token).await, 0);
    assert_eq!(
        aide::turns::expire_abandoned(&app.t.db)
            .await
            .expect("janitor"),
        (0, 0)
    );
    stub.script(vec![response("Hi.", &[], "end_turn")]);
    let next = app.send(turn(&id, &token, "hello again", "j-2")).await;
    assert_eq!(
        events(&next.body).last().map(|e| e.1.clone()),
        Some("turn.completed".into())
    );
}

#[tokio::test]
async fn turn_and_revision_rows_are_their_owners_only() {
    let stub = ModelStub::start().await;
    let app = app_with(&stub, &[]).await;
    let a = app.sign_in("rows-a@example.com").await;
    let b = app.sign_in("rows-b@example.com").await;
    let id = app.create_aide(&a, "Page").await;
    app.put_file(&a, &id, "index.html", "<p>a</p>").await;
    stub.script(vec![response("Hi.", &[], "end_turn")]);
    let answer = app.send(turn(&id, &a, "hello", "r-1")).await;
    let turn_id = uuid::Uuid::parse_str(events(&answer.body)[0].2["turn_id"].as_str().expect("id"))
        .expect("uuid");
    let aide = uuid::Uuid::parse_str(&id).expect("uuid");
    let b_user: uuid::Uuid = {
        let me = app.send(Req::get("/auth/me").bearer(&b)).await.json();
        uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid")
    };
    let tx = app
        .t
        .db
        .user(aide::db::UserId(b_user))
        .await
        .expect("B's scope");
    for table in [
        "ai_turns",
        "workspace_revisions",
        "workspace_revision_files",
    ] {
        let n = crate::support::scalar::<i64>(
            &tx,
            &format!("select count(*) from {table} where aide_id = $1"),
            &[&aide],
        )
        .await
        .expect("count");
        assert_eq!(n, 0, "B sees A's {table}");
    }
    use crate::support::Scoped;
    let changed = tx
        .run(
            "update ai_turns set status = 'failed' where id = $1",
            &[&turn_id],
        )
        .await
        .expect("update");
    assert!(changed.is_empty());
    let refunded = tx
        .run("select refund_turn($1)", &[&turn_id])
        .await
        .expect("refund");
    assert!(
        !refunded[0].get::<_, bool>(0),
        "B cannot give back A's turn"
    );
    assert!(
        tx.run(
            "select record_revision($1, 'upload', null, null, 5)",
            &[&aide]
        )
        .await
        .is_err(),
        "B cannot record a revision of A's aide"
    );
    drop(tx);
    let row = app
        .send(Req::get(&format!("/api/aides/{id}/turns/{turn_id}")).bearer(&a))
        .await
        .json();
    assert_eq!(row["status"], "completed");
    assert_eq!(row["counted"], true);
}

#[tokio::test]
async fn an_openai_compatible_server_drives_a_turn_with_a_second_round() {
    let stub = ModelStub::start().await;
    let vars = stub.openai_vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = TestApp::with(&vars).await;
    let token = app.sign_in("openai@example.com").await;
    let id = app.create_aide(&token, "Schedule").await;
    app.put_file(&token, &id, "index.html", "<p>Game: Thursday 7 pm</p>")
        .await;
    stub.script(vec![
        crate::model_stub::openai_response(
            "Moving the game.",
            &[(EDITOR, json!({"command": "str_replace", "path": "index.html", "old_str": "Thursday 7pm", "new_str": "Thursday 8 pm"}))],
            "tool_calls",
        ),
        crate::model_stub::openai_response(
            "",
            &[(EDITOR, json!({"command": "str_replace", "path": "index.html", "old_str": "Thursday 7 pm", "new_str": "Thursday 8 pm"}))],
            "tool_calls",
        ),
    ]);
    let answer = app
        .send(turn(&id, &token, "move Thursday's game to 8 pm", "o-1"))
        .await;
    let seen = events(&answer.body);
    let names: Vec<&str> = seen.iter().map(|e| e.1.as_str()).collect();
    assert!(
        names.contains(&"tool.failed") && names.contains(&"round.started"),
        "{names:?}"
    );
    let (_, name, data) = seen.last().expect("an end");
    assert_eq!(name, "turn.completed", "{}", answer.body);
    // Two rounds: 400 uncached and 600 cached input tokens, 100 output, each at $2, $0.5, $8.
    assert_eq!(data["usage"]["input_tokens"], 800);
    assert_eq!(data["usage"]["cache_read_tokens"], 1200);
    assert_eq!(data["cost_micros"], 2 * (800 + 300 + 800));
    assert_eq!(page(&app, &id, &token).await, "<p>Game: Thursday 8 pm</p>");
    let sent = stub.received();
    assert_eq!(sent.len(), 2);
    let second = sent[1]["messages"].as_array().expect("messages");
    let tool = second
        .iter()
        .find(|m| m["role"] == "tool")
        .expect("the failed call answered");
    assert!(
        tool["content"]
            .as_str()
            .is_some_and(|c| c.starts_with("Error:") && c.contains("not found")),
        "{tool}"
    );
    assert!(stub.problems().is_empty(), "{:?}", stub.problems());
}

#[tokio::test]
async fn edits_are_replayed_on_a_page_changed_meanwhile_when_they_still_apply() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[]).await);
    let token = app.sign_in("replay@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<h1>List</h1>\n<li>eggs</li>\n")
        .await;
    stub.script(vec![paced(
        response(
            "Added milk.",
            &[(
                EDITOR,
                json!({"command": "str_replace", "path": "index.html", "old_str": "<li>eggs</li>", "new_str": "<li>eggs</li>\n<li>milk</li>"}),
            )],
            "tool_use",
        ),
        Duration::from_millis(60),
    )]);
    let send = spawn_turn(&app, &id, &token, "add milk", "r-1");
    running_turn(&app, &id, &token).await;
    // Meanwhile the person changes the title and adds a stylesheet.
    app.put_file(
        &token,
        &id,
        "index.html",
        "<h1>Groceries</h1>\n<li>eggs</li>\n",
    )
    .await;
    app.put_file(&token, &id, "style.css", "h1 { color: green }")
        .await;
    let answer = send.await.expect("task");
    let seen = events(&answer.body);
    assert_eq!(
        seen.last().map(|e| e.1.as_str()),
        Some("turn.completed"),
        "{}",
        answer.body
    );
    assert_eq!(
        page(&app, &id, &token).await,
        "<h1>Groceries</h1>\n<li>eggs</li>\n<li>milk</li>\n",
        "both changes stand"
    );
    let css = app
        .send(Req::get(&format!("/api/aides/{id}/files/style.css")).bearer(&token))
        .await;
    assert_eq!(css.body, "h1 { color: green }");
    assert_eq!(me_turns(&app, &token).await, 1);
}

/// A stop sent to another server process reaches the one running the turn, through the database.
#[tokio::test]
async fn a_stop_sent_to_another_server_reaches_the_turn() {
    let stub = ModelStub::start().await;
    let app = Arc::new(app_with(&stub, &[("AI_STALL_TIMEOUT_SECONDS", "600")]).await);
    // This process listens for notifications, as `aide serve` does.
    let _listening = crate::public::start_listening(&app.state).await;
    let other = aide::build_app(aide::AppState::new(
        app.state.config.clone(),
        aide::db::Db::connect(app.t.app_options(), 2)
            .await
            .expect("second pool"),
        app.state.session_key.clone(),
        app.state.storage.clone(),
    ));
    let token = app.sign_in("two@example.com").await;
    let id = app.create_aide(&token, "Page").await;
    stub.script(vec![Answer::Stall {
        events: vec![(
            "message_start".to_string(),
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 5, "output_tokens": 1}}}),
        )],
    }]);
    let send = spawn_turn(&app, &id, &token, "hello", "two-1");
    let turn_id = running_turn(&app, &id, &token).await;
    let stop = TestApp::send_via(
        &other,
        Req::post(&format!("/api/aides/{id}/turns/{turn_id}/cancel")).bearer(&token),
    )
    .await;
    assert_eq!(stop.status, StatusCode::ACCEPTED, "{}", stop.body);
    assert_eq!(stop.json()["status"], "stopping");
    let answer = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .expect("the turn stopped")
        .expect("task");
    let seen = events(&answer.body);
    assert_eq!(
        seen.last().map(|e| e.1.as_str()),
        Some("turn.interrupted"),
        "{}",
        answer.body
    );
    assert_eq!(
        me_turns(&app, &token).await,
        0,
        "stopped before any output: given back"
    );
}
