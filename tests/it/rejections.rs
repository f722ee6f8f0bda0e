//! Every rejection the framework makes comes back in our shape: JSON `{detail, code, request_id}`
//! for programs (with `fields` for bad input), an HTML page for browsers, never axum's plain text.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::app::{Answer, Req, TestApp};

/// Our JSON error: the status, a stable code, a sentence and the request id.
fn assert_error(answer: &Answer, status: StatusCode, code: &str, what: &str) {
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    assert_eq!(
        answer.header("content-type"),
        Some("application/json"),
        "{what}"
    );
    let body = answer.json();
    assert_eq!(body["code"], code, "{what}: {body}");
    assert!(
        body["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{what}"
    );
    assert_eq!(
        body["request_id"].as_str(),
        answer.header("x-request-id"),
        "{what}"
    );
}

#[tokio::test]
async fn framework_rejections_use_our_error_shape() {
    let app = TestApp::new().await;
    let token = app.sign_in("rj@example.com").await;
    let id = app.create_aide(&token, "Mine").await;

    // Query strings: a malformed value names its parameter.
    for path in [
        "/api/aides?limit=abc",
        "/api/aides?limit=-1",
        "/api/audit?limit=many",
        &format!("/api/aides/{id}/conversation?limit=x"),
    ] {
        let answer = app.send(Req::get(path).bearer(&token)).await;
        assert_error(
            &answer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            path,
        );
        assert_eq!(answer.json()["fields"][0]["field"], "limit", "{path}");
    }

    // Paths: a malformed id.
    let answer = app
        .send(Req::get("/api/aides/not-a-uuid").bearer(&token))
        .await;
    assert_error(
        &answer,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "id",
    );

    // Bodies: wrong content type, malformed JSON, wrong field types, too large.
    let plain = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .header("content-type", "text/plain")
                .raw_body("{}"),
        )
        .await;
    assert_error(
        &plain,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UNSUPPORTED_MEDIA_TYPE",
        "type",
    );
    let broken = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({}))
                .raw_body("{"),
        )
        .await;
    assert_error(
        &broken,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "syntax",
    );
    let typed = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": 5})),
        )
        .await;
    assert_error(
        &typed,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "types",
    );
    let huge = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "x".repeat(100 * 1024)})),
        )
        .await;
    assert_error(
        &huge,
        StatusCode::PAYLOAD_TOO_LARGE,
        "PAYLOAD_TOO_LARGE",
        "size",
    );

    // Methods an address does not take: 405 with Allow.
    let wrong = app
        .send(Req::new(Method::PUT, "/api/aides").bearer(&token))
        .await;
    assert_error(
        &wrong,
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        "method",
    );
    let allow = wrong.header("allow").expect("Allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    // Addresses nobody serves.
    for path in ["/api/nothing", "/auth/nothing", "/api"] {
        let answer = app.send(Req::get(path).bearer(&token)).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", path);
    }
}

/// Browsers get pages: an unknown address, and a sign-in link cut short.
#[tokio::test]
async fn browsers_get_pages_for_rejections() {
    let app = TestApp::new().await;
    let unknown = app.send(Req::get("/no/such/page")).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(
        unknown
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        unknown.header("content-type")
    );
    assert!(unknown.body.contains("Not found"));

    // A form that does not parse: the error page, not axum's plain text.
    let form = app
        .send(Req::post("/auth/send").form(&[("address", "ada@example.com")]))
        .await;
    assert_eq!(
        form.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{}",
        form.body
    );
    assert!(
        form.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        form.header("content-type")
    );
    assert!(form.body.contains("That didn"), "{}", form.body);

    for path in ["/auth/verify", "/auth/verify?token", "/auth/verify?other=1"] {
        let page = app.send(Req::get(path)).await;
        assert_eq!(
            page.status,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            page.body
        );
        assert!(
            page.header("content-type")
                .is_some_and(|t| t.starts_with("text/html")),
            "{path}"
        );
        assert!(page.body.contains("not valid"), "{path}: {}", page.body);
    }
}

/// Found by the contract fuzzer: inputs at the edges of what the schema allows once answered 500.
#[tokio::test]
async fn edge_inputs_the_fuzzer_found_are_answered_properly() {
    let app = TestApp::new().await;
    // A domain of 250 characters made the per-domain limit's key too long for its column.
    let label = "a".repeat(62);
    let email = format!("0@{label}.{label}.{label}.{label}");
    assert!(email.len() <= 254);
    let sent = app
        .send(Req::post("/auth/send").json(json!({ "email": email })))
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);

    // A number near the largest double was stored, then could never be read back.
    let token = app.sign_in("edge@example.com").await;
    let id = app.create_aide(&token, "Edge").await;
    let path = format!("/api/aides/{id}/conversation/messages");
    let huge = app
        .send(Req::post(&path).bearer(&token).json(json!({
            "role": "user", "content": "x", "metadata": {"n": -1.797_693_134_862_315_5e308}
        })))
        .await;
    assert_error(
        &huge,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "huge",
    );
    // PostgreSQL stores no NUL character in text or jsonb: refused up front, not a 500.
    for body in [
        json!({"role": "assistant", "content": "0", "metadata": {"\u{0}": 1}}),
        json!({"role": "user", "content": "a\u{0}b"}),
        json!({"role": "user", "content": "x", "metadata": {"k": ["\u{0}"]}}),
    ] {
        let nul = app.send(Req::post(&path).bearer(&token).json(body)).await;
        assert_error(
            &nul,
            StatusCode::UNPROCESSABLE_ENTITY,
            "VALIDATION_FAILED",
            "nul",
        );
    }
    let notes = app
        .send(
            Req::post(&format!("/api/aides/{id}/publish"))
                .bearer(&token)
                .json(json!({"notes": "a\u{0}"})),
        )
        .await;
    assert_error(
        &notes,
        StatusCode::UNPROCESSABLE_ENTITY,
        "VALIDATION_FAILED",
        "notes",
    );
    let fine = app
        .send(Req::post(&path).bearer(&token).json(json!({
            "role": "user", "content": "x", "metadata": {"n": 9_007_199_254_740_991_i64, "f": [0.5]}
        })))
        .await;
    assert_eq!(fine.status, StatusCode::CREATED, "{}", fine.body);
    let read = app
        .send(Req::get(&format!("/api/aides/{id}/conversation")).bearer(&token))
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.body);
    assert_eq!(read.json()["messages"].as_array().map(Vec::len), Some(1));
}
