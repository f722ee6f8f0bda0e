//! Driving the real router: a test app over a test database, and small request helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use aide::auth::SessionKey;
use aide::config::Config;
use aide::{AppState, build_app};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use secrecy::SecretString;
use tower::ServiceExt;

use crate::support::{TestDb, exec, scalar};

pub const APP_URL: &str = "http://127.0.0.1:8000";
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";

pub struct TestApp {
    pub t: TestDb,
    pub state: AppState,
    pub router: Router,
    pub data_dir: tempfile::TempDir,
}

pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The session cookie this answer sets, as `session=...` for a Cookie header.
    pub fn session_cookie(&self) -> String {
        let set = self.header("set-cookie").expect("a Set-Cookie header");
        set.split(';').next().expect("cookie pair").to_string()
    }
}

/// A request under construction.
pub struct Req {
    builder: axum::http::request::Builder,
    body: Body,
    ip: SocketAddr,
    path: String,
    host: Option<String>,
}

impl Req {
    pub fn new(method: Method, path: &str) -> Self {
        Req {
            builder: Request::builder().method(method).uri(path),
            body: Body::empty(),
            ip: "192.0.2.1:50000".parse().expect("addr"),
            path: path.to_string(),
            host: None,
        }
    }

    pub fn get(path: &str) -> Self {
        Self::new(Method::GET, path)
    }

    pub fn post(path: &str) -> Self {
        Self::new(Method::POST, path).header("origin", APP_URL)
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.builder = self.builder.header(name, value);
        self
    }

    /// The Host header. Without one, a request goes to the host a browser would use: PUBLIC_URL's
    /// for `/s/` paths, APP_URL's for the rest.
    pub fn host(mut self, host: &str) -> Self {
        self.host = Some(host.to_string());
        self
    }

    pub fn cookie(self, cookie: &str) -> Self {
        self.header("cookie", cookie)
    }

    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    pub fn ip(mut self, ip: &str) -> Self {
        self.ip = format!("{ip}:50000").parse().expect("addr");
        self
    }

    pub fn json(mut self, value: serde_json::Value) -> Self {
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/json");
        self.body = Body::from(value.to_string());
        self
    }

    /// Replaces the body, keeping the headers (for malformed bodies).
    pub fn raw_body(mut self, body: &str) -> Self {
        self.body = Body::from(body.to_string());
        self
    }

    pub fn form(mut self, pairs: &[(&str, &str)]) -> Self {
        let encoded: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.builder = self
            .builder
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        self.body = Body::from(encoded);
        self
    }
}

impl TestApp {
    pub async fn new() -> Self {
        Self::with(&[]).await
    }

    /// An app whose configuration adds `vars` to the test defaults.
    pub async fn with(vars: &[(&str, &str)]) -> Self {
        Self::build(vars, 4, |_| {}).await
    }

    /// [`TestApp::with`] over a pool of exactly `pool_size` connections, with `adjust` applied to
    /// the state before the router is built.
    pub async fn build(
        vars: &[(&str, &str)],
        pool_size: u32,
        adjust: impl FnOnce(&mut aide::Shared),
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut all: Vec<(String, String)> = vec![
            ("APP_URL".into(), APP_URL.into()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            (
                "AIDE_DATA_DIR".into(),
                data_dir.path().to_string_lossy().into_owned(),
            ),
        ];
        all.extend(vars.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_vars(all).expect("test configuration");
        let t = TestDb::with_pool_size(pool_size).await;
        let key = SessionKey::new(SecretString::from(
            config.jwt_secret.clone().expect("JWT_SECRET is set"),
        ));
        let storage = aide::storage::Storage::from_config(&config).expect("local storage");
        let mut shared = aide::Shared::new(Arc::new(config), t.db.clone(), key, storage);
        adjust(&mut shared);
        let state = AppState::from(shared);
        let router = build_app(state.clone());
        TestApp {
            t,
            state,
            router,
            data_dir,
        }
    }

    /// An app whose buckets live on the test S3 server: fresh ones, or `published` for the
    /// published bucket when given (a name that does not exist makes storage fail).
    pub async fn on_s3(published: Option<&str>) -> Self {
        Self::on_s3_with(published, &[]).await
    }

    /// [`TestApp::on_s3`] with `vars` added to the configuration.
    pub async fn on_s3_with(published: Option<&str>, vars: &[(&str, &str)]) -> Self {
        let workspace = crate::s3::new_bucket("ws").await;
        let published = match published {
            Some(name) => name.to_string(),
            None => crate::s3::new_bucket("pub").await,
        };
        let mut all = vec![
            ("R2_ENDPOINT", crate::s3::endpoint()),
            ("R2_ACCESS_KEY", "test-access-key"),
            ("R2_SECRET_KEY", "test-secret-key"),
            ("R2_WORKSPACE_BUCKET", &workspace),
            ("R2_PUBLISHED_BUCKET", &published),
        ];
        all.extend_from_slice(vars);
        Self::with(&all).await
    }

    pub async fn send(&self, mut req: Req) -> Answer {
        if req.host.is_none() {
            let config = &self.state.config;
            let url = if req.path.starts_with("/s/") {
                &config.public_url
            } else {
                &config.app_url
            };
            req.host = Some(aide::config::authority(url));
        }
        Self::send_via(&self.router, req).await
    }

    /// Sends `req` through another router (another "server" on the same database), to APP_URL's
    /// host unless it names one.
    pub async fn send_via(router: &Router, req: Req) -> Answer {
        let host = req
            .host
            .unwrap_or_else(|| APP_URL.trim_start_matches("http://").to_string());
        let mut request = req
            .builder
            .header(header::HOST, host)
            .body(req.body)
            .expect("request");
        request.extensions_mut().insert(ConnectInfo(req.ip));
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    /// The newest queued email to `to`: (link token, code, whole text).
    pub async fn last_email(&self, to: &str) -> (String, String, String) {
        let tx = self.t.db.system().await.expect("system scope");
        let text: String = scalar(
            &tx,
            "select text_body from email_outbox where to_address = $1 order by created_at desc, id limit 1",
            &[&to],
        )
        .await
        .expect("a queued email");
        let token_at = text.find("token=").expect("a link with a token") + "token=".len();
        let token = text[token_at..token_at + 43].to_string();
        let code = text
            .lines()
            .map(str::trim)
            .find(|l| {
                l.len() == 7
                    && l.as_bytes()[3] == b' '
                    && l.replace(' ', "").bytes().all(|b| b.is_ascii_digit())
            })
            .expect("a code line")
            .replace(' ', "");
        (token, code, text)
    }

    /// Asks for a link for `email` and signs in with it as a JSON client; returns the token.
    pub async fn sign_in(&self, email: &str) -> String {
        let sent = self
            .send(Req::post("/auth/send").json(serde_json::json!({"email": email})))
            .await;
        assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
        let (token, _, _) = self.last_email(email).await;
        let verified = self
            .send(Req::post("/auth/verify").json(serde_json::json!({"token": token})))
            .await;
        assert_eq!(verified.status, StatusCode::OK, "{}", verified.body);
        verified.json()["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    /// Stores a workspace file through the API, expecting success.
    /// Creates an aide titled `title` through the API and returns its id.
    pub async fn create_aide(&self, token: &str, title: &str) -> String {
        let answer = self
            .send(
                Req::post("/api/aides")
                    .bearer(token)
                    .json(serde_json::json!({ "title": title })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.json()["id"].as_str().expect("id").to_string()
    }

    /// How many objects the published bucket holds for aide `aide`.
    pub async fn published_objects(&self, aide: &str) -> usize {
        use futures_util::TryStreamExt;
        let prefix = object_store::path::Path::from(format!("aides/{aide}/"));
        let found: Vec<_> = self
            .state
            .storage
            .published
            .list(Some(&prefix))
            .try_collect()
            .await
            .expect("list");
        found.len()
    }

    /// Publishes aide `aide` through the API, expecting success; returns its slug.
    pub async fn publish(&self, token: &str, aide: &str) -> String {
        let answer = self
            .send(Req::post(&format!("/api/aides/{aide}/publish")).bearer(token))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
        answer.json()["aide"]["slug"]
            .as_str()
            .expect("slug")
            .to_string()
    }

    pub async fn put_file(&self, token: &str, aide: &str, path: &str, body: &str) {
        let answer = self
            .send(
                Req::new(Method::PUT, &format!("/api/aides/{aide}/files/{path}"))
                    .bearer(token)
                    .raw_body(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    /// Audit actions recorded so far, oldest first (read as the owner role).
    pub async fn audit_actions(&self) -> Vec<(String, Option<uuid::Uuid>, serde_json::Value)> {
        let owner = self.t.owner_conn().await;
        owner
            .query(
                "select action, user_id, details from audit_log order by id",
                &[],
            )
            .await
            .expect("audit rows")
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect()
    }
}

/// Runs futures concurrently on this task (no extra dependency needed).
pub async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut outputs = Vec::with_capacity(handles.len());
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = pinned.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs.extend(done.into_iter().flatten());
    outputs
}

impl Req {
    /// Replaces the body with `body` (for one that arrives slowly or never ends).
    pub fn body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}

impl TestApp {
    /// Moves `email`'s account to the Pro tier.
    pub async fn make_pro(&self, email: &str) {
        let tx = self.t.db.system().await.expect("system");
        exec(
            &tx,
            "update users set tier = 'pro' where email = $1",
            &[&email],
        )
        .await
        .expect("pro");
        tx.commit().await.expect("commit");
    }

    /// Rows in `table`, read as the owner role (which sees every user's rows).
    pub async fn count_rows(&self, table: &str) -> i64 {
        let owner = self.t.owner_conn().await;
        scalar(&owner, &format!("select count(*) from {table}"), &[])
            .await
            .expect("count")
    }
}
