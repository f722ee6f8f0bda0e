//! Liveness and readiness through the real router.

use std::sync::Arc;

use aide::config::Config;
use aide::db::{ConnectOptions, Db};
use aide::{AppState, build_app};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use crate::support::TestDb;

fn config() -> Arc<Config> {
    Arc::new(Config::from_vars(Vec::<(String, String)>::new()).expect("default configuration"))
}

fn storage() -> aide::storage::Storage {
    let dir = std::env::temp_dir().join(format!("aide-http-test-{}", std::process::id()));
    let config = Config::from_vars([(
        "AIDE_DATA_DIR".to_string(),
        dir.to_string_lossy().into_owned(),
    )])
    .expect("configuration");
    aide::storage::Storage::from_config(&config).expect("local storage")
}

fn key() -> aide::auth::SessionKey {
    aide::auth::SessionKey::new(secrecy::SecretString::from(
        "0123456789abcdef0123456789abcdef",
    ))
}

async fn get(state: AppState, path: &str) -> (StatusCode, serde_json::Value) {
    let response = build_app(state)
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let json = serde_json::from_slice(&bytes).expect("JSON body");
    (status, json)
}

#[tokio::test]
async fn health_and_ready_answer_when_the_database_does() {
    let t = TestDb::new().await;
    let state = AppState::new(config(), t.db.clone(), key(), storage());
    let (status, body) = get(state.clone(), "/health").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ok"}));
    let (status, body) = get(state.clone(), "/ready").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, serde_json::json!({"status": "ready"}));
    // Asked to stop: not ready from that moment, though still alive and serving.
    state
        .draining
        .store(true, std::sync::atomic::Ordering::Release);
    let (status, body) = get(state.clone(), "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "SHUTTING_DOWN");
    let (status, _) = get(state, "/health").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn ready_is_503_when_the_database_is_unreachable_while_health_stays_200() {
    let dir = tempfile::tempdir().expect("temp dir");
    // A socket folder with no server in it.
    let mut options = ConnectOptions::new();
    options
        .host_path(dir.path())
        .user("aide_app")
        .dbname("aide");
    let state = AppState::new(config(), Db::new(options, 1), key(), storage());
    let (status, body) = get(state.clone(), "/ready").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["code"], "DATABASE_UNREACHABLE");
    assert_eq!(body["detail"], "The database is not reachable.");
    let (status, _) = get(state, "/health").await;
    assert_eq!(status, StatusCode::OK);
}
