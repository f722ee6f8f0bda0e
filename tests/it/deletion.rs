//! Account deletion: the emailed code is required; confirming ends every session, stops every
//! public page at once and cancels the subscription; signing in during the grace can cancel it;
//! the purge, stopped midway by Stripe being down and run again, leaves no trace of the account in
//! any column of any table, in storage or at Stripe, and leaves other accounts alone.

use axum::http::StatusCode;
use futures_util::TryStreamExt;
use serde_json::json;

use crate::app::{Req, TestApp};
use crate::billing::{app_with, deliver, paid};
use crate::stripe_stub::StripeStub;

const EMAIL: &str = "leaving@example.com";

/// The code in the newest deletion email to `to`.
async fn deletion_code(app: &TestApp, to: &str) -> String {
    let owner = app.t.owner_conn().await;
    let text: String = owner
        .query_one(
            "select text_body from email_outbox where kind = 'account_deletion_code' and to_address = $1
             order by created_at desc limit 1",
            &[&to],
        )
        .await
        .expect("a deletion email")
        .get(0);
    let at = text.find("asked: ").expect("the code") + "asked: ".len();
    text[at..at + 7].replace(' ', "")
}

async fn objects(store: &dyn object_store::ObjectStore, prefix: &str) -> usize {
    let prefix = object_store::path::Path::from(prefix);
    let found: Vec<_> = store.list(Some(&prefix)).try_collect().await.expect("list");
    found.len()
}

/// Every text, uuid, JSON, address and array column of every table, as the owner sees them:
/// (table.column, rows holding `needle`).
async fn scan(app: &TestApp, needle: &str) -> Vec<(String, i64)> {
    let owner = app.t.owner_conn().await;
    let columns = owner
        .query(
            "select table_name::text, column_name::text from information_schema.columns
             where table_schema = 'public'
               and data_type in ('text', 'uuid', 'jsonb', 'json', 'inet', 'character varying', 'ARRAY', 'bytea')
             order by 1, 2",
            &[],
        )
        .await
        .expect("columns");
    assert!(columns.len() > 50, "the scan reads the catalog");
    let mut found = Vec::new();
    for column in columns {
        let (table, name): (String, String) = (column.get(0), column.get(1));
        let count: i64 = owner
            .query_one(
                &format!("select count(*) from \"{table}\" where strpos(\"{name}\"::text, $1) > 0"),
                &[&needle],
            )
            .await
            .unwrap_or_else(|e| panic!("{table}.{name}: {e}"))
            .get(0);
        if count > 0 {
            found.push((format!("{table}.{name}"), count));
        }
    }
    found
}

#[tokio::test]
async fn a_deleted_account_leaves_nothing_behind_and_can_be_cancelled_in_its_grace() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;

    // A Pro user with a published page, an export, and activity; and a bystander with a page.
    let (token, _, sub, events) = paid(&app, &stub, EMAIL).await;
    for event in &events {
        assert_eq!(deliver(&app, event).await.status, StatusCode::OK);
    }
    let me = app.send(Req::get("/auth/me").bearer(&token)).await.json();
    assert_eq!(me["tier"], "pro");
    let user = me["id"].as_str().expect("id").to_string();
    let customer = stub.customers()[0]["id"]
        .as_str()
        .expect("customer")
        .to_string();
    let aide = app.create_aide(&token, "Leaving soon").await;
    app.put_file(&token, &aide, "index.html", "<h1>Goodbye</h1>")
        .await;
    let slug = app.publish(&token, &aide).await;
    let started = app
        .send(Req::post("/api/account/export").bearer(&token))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED);
    let export = started.json()["id"].as_str().expect("id").to_string();
    for _ in 0..200 {
        let e = app
            .send(Req::get(&format!("/api/account/exports/{export}")).bearer(&token))
            .await
            .json();
        if e["status"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let bystander = app.sign_in("staying@example.com").await;
    let theirs = app.create_aide(&bystander, "Staying").await;
    app.put_file(&bystander, &theirs, "index.html", "<h1>Still here</h1>")
        .await;
    let their_slug = app.publish(&bystander, &theirs).await;
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );

    // Asking needs the address typed; then a code goes to it. A session alone deletes nothing.
    let wrong = app
        .send(
            Req::post("/api/account/deletion")
                .bearer(&token)
                .json(json!({"email": "someone@else.com"})),
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(wrong.json()["fields"][0]["field"], "email");
    let asked = app
        .send(
            Req::post("/api/account/deletion")
                .bearer(&token)
                .json(json!({"email": " Leaving@Example.com "})),
        )
        .await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.body);
    let code = deletion_code(&app, EMAIL).await;
    let other_code = if code == "000000" { "111111" } else { "000000" };
    let refused = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&token)
                .json(json!({ "code": other_code })),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.json()["detail"], "code: is not the code we sent");
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK,
        "nothing happened without the code"
    );

    let confirmed = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&token)
                .json(json!({ "code": code })),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    assert!(
        confirmed
            .header("set-cookie")
            .is_some_and(|c| c.contains("Max-Age=0"))
    );
    let purge_after = chrono::DateTime::parse_from_rfc3339(
        confirmed.json()["purge_after"]
            .as_str()
            .expect("purge_after"),
    )
    .expect("a time");
    let days = (purge_after.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((14 * 24 - 1..=14 * 24).contains(&days), "{days} hours");
    // Every session is over, the page is gone at once, the subscription is cancelled.
    assert_eq!(
        app.send(Req::get("/auth/me").bearer(&token)).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.send(Req::get(&format!("/s/{their_slug}/")))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(stub.subscription(&sub).expect("sub").status, "canceled");

    // Signing in during the grace shows the deletion; cancelling brings the page back.
    let again = app.sign_in(EMAIL).await;
    let me = app.send(Req::get("/auth/me").bearer(&again)).await.json();
    assert!(me["deletion"]["purge_after"].is_string(), "{me}");
    let cancelled = app
        .send(Req::post("/api/account/deletion/cancel").bearer(&again))
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert!(app.send(Req::get("/auth/me").bearer(&again)).await.json()["deletion"].is_null());
    assert_eq!(
        app.send(Req::get(&format!("/s/{slug}/"))).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.send(Req::post("/api/account/deletion/cancel").bearer(&again))
            .await
            .json()["code"],
        "NO_DELETION"
    );

    // Deleted again, and this time the grace runs out.
    app.send(
        Req::post("/api/account/deletion")
            .bearer(&again)
            .json(json!({ "email": EMAIL })),
    )
    .await;
    let code = deletion_code(&app, EMAIL).await;
    let confirmed = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&again)
                .json(json!({ "code": code })),
        )
        .await;
    assert_eq!(confirmed.status, StatusCode::OK, "{}", confirmed.body);
    let owner = app.t.owner_conn().await;
    let user_id = uuid::Uuid::parse_str(&user).expect("uuid");
    owner
        .execute(
            "update users set purge_after = now() - interval '1 second' where id = $1",
            &[&user_id],
        )
        .await
        .expect("end the grace");

    // The account's audit rows, and the addresses they hold, before the purge.
    let rows: Vec<i64> = owner
        .query(
            "select id from audit_log where user_id = $1 and ip_address is not null",
            &[&user_id],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        rows.len() >= 5,
        "sign-ins, the export, the deletion: {rows:?}"
    );

    // Stripe is down: the purge stops after storage, and nothing of the database is gone.
    stub.set_down(true);
    let stopped = aide::account::deletion::purge_due(&app.state).await;
    assert!(stopped.is_err());
    assert_eq!(
        objects(
            app.state.storage.workspace.as_ref(),
            &format!("aides/{aide}/")
        )
        .await,
        0
    );
    assert_eq!(
        app.count_rows(&format!("users where id = '{user}'")).await,
        1
    );
    // Run again: it finishes.
    stub.set_down(false);
    let purged = aide::account::deletion::purge_due(&app.state)
        .await
        .expect("purge");
    assert_eq!(purged, 1);
    assert_eq!(
        aide::account::deletion::purge_due(&app.state)
            .await
            .expect("again"),
        0
    );

    // Nothing left: no column of any table holds the id or the address.
    assert_eq!(scan(&app, &user).await, vec![]);
    assert_eq!(scan(&app, EMAIL).await, vec![]);
    for prefix in [format!("aides/{aide}/"), format!("exports/{user}/")] {
        assert_eq!(
            objects(app.state.storage.workspace.as_ref(), &prefix).await,
            0
        );
        assert_eq!(
            objects(app.state.storage.published.as_ref(), &prefix).await,
            0
        );
    }
    assert!(
        stub.customers()
            .iter()
            .all(|c| c["id"] != customer.as_str()),
        "the Stripe customer is deleted"
    );
    assert!(stub.problems().is_empty(), "{:?}", stub.problems());
    // The bystander is untouched; the account's surviving audit rows say what, not who.
    assert_eq!(
        app.send(Req::get(&format!("/s/{their_slug}/")))
            .await
            .status,
        StatusCode::OK
    );
    let actions = app.audit_actions().await;
    assert!(
        actions
            .iter()
            .any(|(action, who, _)| action == "account.purged" && who.is_none())
    );
    let surviving: Vec<(Option<uuid::Uuid>, Option<String>)> = owner
        .query(
            "select user_id, host(ip_address) from audit_log where id = any($1)",
            &[&rows],
        )
        .await
        .expect("rows")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(surviving.len(), rows.len(), "the rows stay, anonymised");
    assert!(
        surviving
            .iter()
            .all(|(who, ip)| who.is_none() && ip.is_none()),
        "{surviving:?}"
    );
    // The address can sign up afresh: a new, empty account.
    let fresh = app.sign_in(EMAIL).await;
    let me = app.send(Req::get("/auth/me").bearer(&fresh)).await.json();
    assert_ne!(me["id"], user.as_str());
    assert_eq!(
        app.send(Req::get("/api/aides").bearer(&fresh)).await.json()["items"],
        json!([])
    );
}

#[tokio::test]
async fn a_deletion_code_expires_and_dies_after_five_wrong_tries() {
    let app = TestApp::new().await;
    let token = app.sign_in("careful@example.com").await;
    app.send(
        Req::post("/api/account/deletion")
            .bearer(&token)
            .json(json!({"email": "careful@example.com"})),
    )
    .await;
    let code = deletion_code(&app, "careful@example.com").await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..5 {
        let answer = app
            .send(
                Req::post("/api/account/deletion/confirm")
                    .bearer(&token)
                    .json(json!({ "code": wrong })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let dead = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&token)
                .json(json!({ "code": code })),
        )
        .await;
    assert_eq!(dead.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        dead.json()["detail"]
            .as_str()
            .is_some_and(|d| d.contains("ask for a new one"))
    );
    // A new code, expired: refused too.
    app.send(
        Req::post("/api/account/deletion")
            .bearer(&token)
            .json(json!({"email": "careful@example.com"})),
    )
    .await;
    let code = deletion_code(&app, "careful@example.com").await;
    app.t
        .owner_conn()
        .await
        .execute(
            "update account_deletion_codes set expires_at = now() - interval '1 second', created_at = now() - interval '1 hour'",
            &[],
        )
        .await
        .expect("expire");
    let expired = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&token)
                .json(json!({ "code": code })),
        )
        .await;
    assert_eq!(expired.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.send(Req::get("/auth/me").bearer(&token)).await.json()["deletion"],
        serde_json::Value::Null
    );
    // Malformed codes and bodies: 422 in our shape; signed out: 401.
    let malformed = app
        .send(
            Req::post("/api/account/deletion/confirm")
                .bearer(&token)
                .json(json!({ "code": "12ab" })),
        )
        .await;
    assert_eq!(malformed.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(malformed.json()["code"], "VALIDATION_FAILED");
    assert_eq!(
        app.send(Req::post("/api/account/deletion").json(json!({"email": "x@y.z"})))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
}
