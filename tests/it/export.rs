//! The data export: an account with two aides, files, revisions, a conversation and three
//! published versions comes back whole in one zip, every byte and hash matching the database and
//! storage; another user cannot see or download it; it expires after its days, and its archive
//! with it.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use axum::http::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::app::{Req, TestApp};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Waits until export `id` is no longer running; returns it.
async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    for _ in 0..300 {
        let answer = app
            .send(Req::get(&format!("/api/account/exports/{id}")).bearer(token))
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        let export = answer.json();
        if export["status"] != "running" {
            return export;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("export {id} still running");
}

/// The archive's entries by name.
fn unzip(bytes: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("a zip archive");
    let mut entries = BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).expect("entry");
        let mut content = Vec::new();
        file.read_to_end(&mut content).expect("read entry");
        assert!(
            entries
                .insert(file.name().expect("a UTF-8 name").to_string(), content)
                .is_none(),
            "one entry per name"
        );
    }
    entries
}

#[tokio::test]
async fn an_export_holds_everything_byte_for_byte_and_only_its_owner_gets_it() {
    let app = TestApp::new().await;
    let token = app.sign_in("exporter@example.com").await;
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    let user = uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");

    // Two aides; the first with three published versions and several revisions.
    let first = app.create_aide(&token, "Groceries").await;
    let second = app.create_aide(&token, "Trip").await;
    for (n, list) in ["milk", "milk, eggs", "milk, eggs, bread"]
        .iter()
        .enumerate()
    {
        app.put_file(
            &token,
            &first,
            "index.html",
            &format!("<h1>Groceries</h1><p>{list}</p>"),
        )
        .await;
        if n == 1 {
            app.put_file(&token, &first, "style.css", "h1 { color: teal }")
                .await;
        }
        app.publish(&token, &first).await;
    }
    app.put_file(
        &token,
        &second,
        "notes/day1.txt",
        "Lisbon: trams, pastel de nata",
    )
    .await;
    // A conversation, written as turns write it.
    let tx = app
        .t
        .db
        .user(aide::db::UserId(user))
        .await
        .expect("user scope");
    let first_id = uuid::Uuid::parse_str(&first).expect("uuid");
    crate::support::exec(
        &tx,
        "with c as (insert into conversations (aide_id, user_id) values ($1, $2)
                    on conflict (aide_id, user_id) do update set updated_at = now() returning id)
         insert into conversation_messages (conversation_id, user_id, role, content)
         select c.id, $2, r, t from c,
             (values ('user', 'make a grocery list'), ('assistant', 'Here it is.'),
                     ('user', 'add \"bread\" ✓')) as m(r, t)",
        &[&first_id, &user],
    )
    .await
    .expect("messages");
    tx.commit().await.expect("commit");

    let started = app
        .send(Req::post("/api/account/export").bearer(&token))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.json()["id"].as_str().expect("id").to_string();
    let export = finished(&app, &token, &id).await;
    assert_eq!(export["status"], "ready", "{export}");
    let download = export["download_url"]
        .as_str()
        .expect("download url")
        .to_string();
    assert_eq!(download, format!("/api/account/exports/{id}/download"));

    // One a day.
    let again = app
        .send(Req::post("/api/account/export").bearer(&token))
        .await;
    assert_eq!(again.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(again.json()["code"], "EXPORT_LIMIT");
    let retry: u64 = again
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry > 86_000 && retry <= 86_400, "{retry}");

    let answer = app.send(Req::get(&download).bearer(&token)).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.header("content-type"), Some("application/zip"));
    assert!(
        answer
            .header("content-disposition")
            .is_some_and(|d| d.starts_with("attachment; filename=\"aide-export-"))
    );
    let bytes = download_bytes(&app, &token, &download).await;
    assert_eq!(Some(bytes.len() as i64), export["size_bytes"].as_i64());
    let entries = unzip(&bytes);

    // The manifest lists every other entry with its exact size and hash.
    let manifest: Value = serde_json::from_slice(&entries["manifest.json"]).expect("manifest");
    assert_eq!(manifest["schema_version"], 1);
    assert_eq!(manifest["user_id"], user.to_string());
    let listed = manifest["files"].as_array().expect("files");
    assert_eq!(listed.len(), entries.len() - 1);
    assert_eq!(export["file_count"].as_u64(), Some(entries.len() as u64));
    for file in listed {
        let path = file["path"].as_str().expect("path");
        let content = &entries[path];
        assert_eq!(file["size"].as_u64(), Some(content.len() as u64), "{path}");
        assert_eq!(file["sha256"], hex(&Sha256::digest(content)), "{path}");
    }
    assert_eq!(
        manifest["counts"],
        serde_json::json!({"aides": 2, "messages": 3, "workspace_files": 3, "revisions": 5,
                           "published_versions": 3, "published_files": 5,
                           "audit_rows": manifest["counts"]["audit_rows"]})
    );
    assert!(entries["README.txt"].starts_with(b"Your AIde data"));

    // The account, without Stripe ids.
    let account: Value = serde_json::from_slice(&entries["account.json"]).expect("account");
    assert_eq!(account["email"], "exporter@example.com");
    assert_eq!(account["plan"], "free");
    assert!(!String::from_utf8_lossy(&entries["account.json"]).contains("stripe"));

    // Every workspace file, byte for byte, matching the database's hash.
    let owner = app.t.owner_conn().await;
    let rows = owner
        .query(
            "select aide_id, path, sha256, size_bytes from workspace_files where user_id = $1",
            &[&user],
        )
        .await
        .expect("files");
    assert_eq!(rows.len(), 3);
    for row in rows {
        let aide: uuid::Uuid = row.get(0);
        let path: String = row.get(1);
        let sha: Vec<u8> = row.get(2);
        let content = &entries[&format!("aides/{aide}/files/{path}")];
        assert_eq!(Sha256::digest(content).to_vec(), sha, "{path}");
        assert_eq!(content.len() as i64, row.get::<_, i64>(3));
    }
    assert_eq!(
        entries[&format!("aides/{first}/files/index.html")],
        b"<h1>Groceries</h1><p>milk, eggs, bread</p>"
    );
    // Each published version's files, as published.
    for (version, list) in [(1, "milk"), (2, "milk, eggs"), (3, "milk, eggs, bread")] {
        assert_eq!(
            entries[&format!("aides/{first}/published/v{version}/index.html")],
            format!("<h1>Groceries</h1><p>{list}</p>").as_bytes()
        );
    }
    assert!(!entries.contains_key(&format!("aides/{first}/published/v1/style.css")));
    assert_eq!(
        entries[&format!("aides/{first}/published/v3/style.css")],
        b"h1 { color: teal }"
    );
    let published = owner
        .query(
            "select version, path, sha256 from published_files where user_id = $1",
            &[&user],
        )
        .await
        .expect("published files");
    assert_eq!(published.len(), 5);
    for row in published {
        let (version, path, sha): (i32, String, Vec<u8>) = (row.get(0), row.get(1), row.get(2));
        let content = &entries[&format!("aides/{first}/published/v{version}/{path}")];
        assert_eq!(Sha256::digest(content).to_vec(), sha);
    }

    // The aide, its revisions and its conversation.
    let aide_json: Value =
        serde_json::from_slice(&entries[&format!("aides/{first}/aide.json")]).expect("aide");
    assert_eq!(aide_json["title"], "Groceries");
    assert_eq!(aide_json["status"], "published");
    assert_eq!(
        aide_json["published_versions"].as_array().map(Vec::len),
        Some(3)
    );
    let revisions: Value =
        serde_json::from_slice(&entries[&format!("aides/{first}/revisions.json")])
            .expect("revisions");
    assert_eq!(revisions.as_array().map(Vec::len), Some(4));
    assert_eq!(revisions[3]["files"].as_array().map(Vec::len), Some(2));
    let conversation =
        String::from_utf8(entries[&format!("aides/{first}/conversation.jsonl")].clone())
            .expect("utf-8");
    let messages: Vec<Value> = conversation
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(messages.len(), 3);
    assert_eq!(messages[2]["content"], "add \"bread\" ✓");
    assert_eq!(messages[1]["role"], "assistant");
    assert!(entries[&format!("aides/{second}/conversation.jsonl")].is_empty());
    assert_eq!(
        entries[&format!("aides/{second}/files/notes/day1.txt")],
        "Lisbon: trams, pastel de nata".as_bytes()
    );
    let audit = String::from_utf8_lossy(&entries["audit_log.jsonl"]).into_owned();
    assert!(audit.contains("\"account.export_requested\""), "{audit}");
    assert!(
        audit.contains("\"aide.create\"") || audit.contains("\"aide."),
        "{audit}"
    );

    // An email said it was ready, with no link that signs in.
    let email: (String, String) = {
        let row = owner
            .query_one(
                "select subject, text_body from email_outbox where kind = 'export_ready' and to_address = $1",
                &[&"exporter@example.com"],
            )
            .await
            .expect("the ready email");
        (row.get(0), row.get(1))
    };
    assert_eq!(email.0, "Your AIde data export is ready");
    assert!(email.1.contains("/account") && !email.1.contains("token"));

    // The download is audited.
    let actions = app.audit_actions().await;
    assert!(
        actions
            .iter()
            .any(|(action, who, _)| action == "account.export_downloaded" && *who == Some(user))
    );

    // Another user: 404 for the export and its download.
    let other = app.sign_in("someone-else@example.com").await;
    for path in [format!("/api/account/exports/{id}"), download.clone()] {
        let answer = app.send(Req::get(&path).bearer(&other)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(answer.json()["code"], "NOT_FOUND");
    }
    let theirs = app
        .send(Req::get("/api/account/exports").bearer(&other))
        .await;
    assert_eq!(theirs.json()["items"], serde_json::json!([]));
    // Signed out: 401; a malformed id: 422.
    assert_eq!(
        app.send(Req::get(&download)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Req::get("/api/account/exports/nope/download").bearer(&token))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );

    // Seven days on: the upkeep deletes the archive; the download is gone.
    owner
        .execute(
            "update account_exports set expires_at = now() - interval '1 second' where id = $1",
            &[&uuid::Uuid::parse_str(&id).expect("uuid")],
        )
        .await
        .expect("age the export");
    let (expired, abandoned) = aide::account::export::upkeep(&app.t.db, &app.state.storage)
        .await
        .expect("upkeep");
    assert_eq!((expired, abandoned), (1, 0));
    let key = object_store::path::Path::from(format!("exports/{user}/{id}.zip"));
    assert!(matches!(
        app.state.storage.workspace.head(&key).await,
        Err(object_store::Error::NotFound { .. })
    ));
    assert_eq!(
        app.send(Req::get(&download).bearer(&token)).await.status,
        StatusCode::NOT_FOUND
    );
    let list = app
        .send(Req::get("/api/account/exports").bearer(&token))
        .await
        .json();
    assert_eq!(list["items"][0]["status"], "expired");
    assert!(list["items"][0]["download_url"].is_null());
}

async fn download_bytes(app: &TestApp, token: &str, path: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let request = axum::http::Request::get(path)
        .header("host", "127.0.0.1:8000")
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .expect("request");
    let mut request = request;
    request
        .extensions_mut()
        .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
            [127, 0, 0, 1],
            40000,
        ))));
    let response = app.router.clone().oneshot(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn an_export_left_running_by_a_stopped_server_fails_and_frees_the_next() {
    let app = TestApp::new().await;
    let token = app.sign_in("interrupted@example.com").await;
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    let user = uuid::Uuid::parse_str(me["id"].as_str().expect("id")).expect("uuid");
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "insert into account_exports (user_id, created_at) values ($1, now() - interval '7 hours')",
            &[&user],
        )
        .await
        .expect("a running export");
    let busy = app
        .send(Req::post("/api/account/export").bearer(&token))
        .await;
    assert_eq!(busy.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(busy.json()["code"], "EXPORT_LIMIT");
    let (expired, abandoned) = aide::account::export::upkeep(&app.t.db, &app.state.storage)
        .await
        .expect("upkeep");
    assert_eq!((expired, abandoned), (0, 1));
    let list = app
        .send(Req::get("/api/account/exports").bearer(&token))
        .await
        .json();
    assert_eq!(list["items"][0]["status"], "failed");
    // A failed export does not count against the day.
    let started = app
        .send(Req::post("/api/account/export").bearer(&token))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let id = started.json()["id"].as_str().expect("id").to_string();
    assert_eq!(finished(&app, &token, &id).await["status"], "ready");
}
