//! `/metrics`: off without METRICS_TOKEN, behind it otherwise; route templates, not paths, in the
//! labels; histograms with buckets; the outbox and pool read when scraped.

use axum::http::StatusCode;

use crate::app::{Req, TestApp};

const TOKEN: &str = "metrics-token-0123456789abcdef";

#[tokio::test]
async fn metrics_are_off_without_a_token_and_need_it_with_one() {
    let off = TestApp::new().await;
    assert_eq!(
        off.send(Req::get("/metrics")).await.status,
        StatusCode::NOT_FOUND
    );

    let app = TestApp::with(&[("METRICS_TOKEN", TOKEN)]).await;
    let none = app.send(Req::get("/metrics")).await;
    assert_eq!(none.status, StatusCode::UNAUTHORIZED);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let wrong = app
        .send(Req::get("/metrics").bearer("metrics-token-0123456789abcdeX"))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let ok = app.send(Req::get("/metrics").bearer(TOKEN)).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(
        ok.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
}

#[tokio::test]
async fn requests_are_counted_by_route_template_with_bounded_labels() {
    let app = TestApp::with(&[("METRICS_TOKEN", TOKEN)]).await;
    let token = app.sign_in("counted@example.com").await;
    let aide = app.create_aide(&token, "Counted").await;
    for _ in 0..3 {
        app.send(Req::get(&format!("/api/aides/{aide}")).bearer(&token))
            .await;
    }
    app.send(Req::get(&format!("/api/aides/{}", uuid::Uuid::new_v4())).bearer(&token))
        .await;
    app.send(Req::get("/health")).await;
    // A scanner: a thousand addresses nobody serves.
    for n in 0..1000 {
        app.send(Req::get(&format!("/wp-admin/{n}/setup.php")))
            .await;
    }
    let text = app.send(Req::get("/metrics").bearer(TOKEN)).await.body;
    assert!(
        text.contains(
            "aide_http_requests_total{method=\"GET\",route=\"/api/aides/{id}\",status=\"200\"} 3"
        ),
        "{text}"
    );
    assert!(text.contains(
        "aide_http_requests_total{method=\"GET\",route=\"/api/aides/{id}\",status=\"404\"} 1"
    ));
    assert!(text.contains(
        "aide_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1000"
    ));
    assert!(!text.contains("wp-admin"), "no path becomes a label");
    let series = text
        .lines()
        .filter(|l| l.starts_with("aide_http_requests_total{"))
        .count();
    assert!(series < 20, "{series} series:\n{text}");
    for bucket in ["0.005", "0.1", "1", "10", "+Inf"] {
        assert!(
            text.contains(&format!(
                "aide_http_request_duration_seconds_bucket{{method=\"GET\",route=\"/health\",status=\"200\",le=\"{bucket}\"}}"
            )),
            "{bucket}: {text}"
        );
    }
    assert!(text.contains("# TYPE aide_http_request_duration_seconds histogram"));
    // The sign-in email waits in the outbox (no worker runs in the tests).
    assert!(
        text.contains("aide_outbox_emails{status=\"pending\"} 1"),
        "{text}"
    );
    assert!(text.contains("aide_outbox_oldest_pending_seconds "));
    assert!(text.contains("aide_db_pool_connections{state=\"max\"} "));
    assert!(text.contains("aide_stripe_webhook_signature_refusals_total 0"));
    // Nobody's address or token is in it.
    assert!(!text.contains("counted@example.com") && !text.contains(&token));
}
