//! Staff access: only operators, only with a grant (reason, category, at most an hour, never
//! renewed, never on oneself or another operator), every read audited in the person's trail, the
//! person emailed (unless a legal hold is recorded) and shown what was viewed, Slack told when a
//! grant opens and ends, and the support role able to read nothing directly.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::alerts::SlackStub;
use crate::app::{Req, TestApp};

const OPERATOR: &str = "operator@example.com";
const PERSON: &str = "person@example.com";

fn grant_request(email: &str, reason: &str, category: &str) -> Value {
    json!({"email": email, "reason": reason, "category": category, "minutes": 30})
}

const REASON: &str = "Ticket 1042: the person cannot publish their page";

async fn staff_emails(app: &TestApp) -> Vec<String> {
    app.t
        .owner_conn()
        .await
        .query(
            "select text_body from email_outbox where kind = 'staff_access' and to_address = $1 order by created_at",
            &[&PERSON],
        )
        .await
        .expect("emails")
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Waits for the Slack stand-in to have received `n` messages.
async fn slack_messages(stub: &SlackStub, n: usize) -> Vec<String> {
    for _ in 0..100 {
        let texts = stub.texts();
        if texts.len() >= n {
            return texts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stub.texts()
}

#[tokio::test]
async fn an_operator_reads_only_with_a_live_grant_and_every_read_is_audited_and_shown() {
    let (url, slack) = SlackStub::start().await;
    let app = TestApp::with(&[("SLACK_WEBHOOK", url.as_str())]).await;
    let operator = app.sign_in(OPERATOR).await;
    let person = app.sign_in(PERSON).await;
    let other_operator = app.sign_in("second-op@example.com").await;
    let bystander = app.sign_in("bystander@example.com").await;
    let admin = app.t.admin_conn().await;
    assert!(
        aide::db::operators::add(&admin, OPERATOR)
            .await
            .expect("add")
    );
    assert!(
        aide::db::operators::add(&admin, "Second-Op@example.com")
            .await
            .expect("add")
    );
    let listed = aide::db::operators::list(&admin).await.expect("list");
    assert_eq!(listed.len(), 2);

    let aide = app.create_aide(&person, "Wedding plans").await;
    app.put_file(&person, &aide, "index.html", "<h1>Save the date</h1>")
        .await;
    let theirs = app.create_aide(&bystander, "Not yours").await;

    let open = |token: &str, body: Value| {
        app.send(Req::post("/api/support/grants").bearer(token).json(body))
    };
    // Not an operator: refused, whoever asks.
    let refused = open(
        &person,
        grant_request("bystander@example.com", REASON, "support"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.json()["code"], "STAFF_ACCESS_REFUSED");
    // The rules of a grant.
    for (body, status) in [
        (
            grant_request(PERSON, "too short", "support"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            grant_request(PERSON, REASON, "curiosity"),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": PERSON, "reason": REASON, "category": "support", "minutes": 61}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            json!({"email": PERSON, "reason": REASON, "category": "support", "legal_hold": true}),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            grant_request("nobody@example.com", REASON, "support"),
            StatusCode::NOT_FOUND,
        ),
        (
            grant_request(OPERATOR, REASON, "support"),
            StatusCode::FORBIDDEN,
        ),
        (
            grant_request("second-op@example.com", REASON, "support"),
            StatusCode::FORBIDDEN,
        ),
    ] {
        let answer = open(&operator, body.clone()).await;
        assert_eq!(answer.status, status, "{body}: {}", answer.body);
    }
    assert!(staff_emails(&app).await.is_empty());

    // A grant: the person is emailed, Slack is told (without the person's address).
    let opened = open(&operator, grant_request(PERSON, REASON, "support")).await;
    assert_eq!(opened.status, StatusCode::CREATED, "{}", opened.body);
    let grant = opened.json()["id"].as_str().expect("id").to_string();
    let emails = staff_emails(&app).await;
    assert_eq!(emails.len(), 1);
    assert!(emails[0].contains("Category: support") && emails[0].contains(REASON));
    let posted = slack_messages(&slack, 1).await;
    assert!(posted[0].contains("*Staff access opened*") && posted[0].contains(&grant));
    assert!(!posted[0].contains(PERSON));
    // Never renewed: no second grant on the same account while one is open.
    let again = open(&operator, grant_request(PERSON, REASON, "support")).await;
    assert_eq!(again.status, StatusCode::FORBIDDEN);
    // Another operator cannot use it.
    let borrowed = app
        .send(Req::get(&format!("/api/support/grants/{grant}/account")).bearer(&other_operator))
        .await;
    assert_eq!(borrowed.status, StatusCode::FORBIDDEN);

    // Reads under the grant.
    let account = app
        .send(Req::get(&format!("/api/support/grants/{grant}/account")).bearer(&operator))
        .await;
    assert_eq!(account.status, StatusCode::OK, "{}", account.body);
    assert_eq!(account.json()["email"], PERSON);
    assert_eq!(account.json()["aides"], 1);
    let aides = app
        .send(Req::get(&format!("/api/support/grants/{grant}/aides")).bearer(&operator))
        .await
        .json();
    assert_eq!(aides[0]["title"], "Wedding plans");
    let files = app
        .send(
            Req::get(&format!("/api/support/grants/{grant}/aides/{aide}/files")).bearer(&operator),
        )
        .await
        .json();
    assert_eq!(files[0]["path"], "index.html");
    let conversation = app
        .send(
            Req::get(&format!(
                "/api/support/grants/{grant}/aides/{aide}/conversation"
            ))
            .bearer(&operator),
        )
        .await;
    assert_eq!(conversation.status, StatusCode::OK);
    // Another account's aide, through this grant: not there.
    let elsewhere = app
        .send(
            Req::get(&format!("/api/support/grants/{grant}/aides/{theirs}/files"))
                .bearer(&operator),
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::NOT_FOUND);

    // Every read is in the person's own trail: operator, grant, what.
    let trail = app
        .send(Req::get("/api/audit?limit=50").bearer(&person))
        .await
        .json();
    let reads: Vec<&Value> = trail["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["action"] == "support.read")
        .collect();
    assert_eq!(reads.len(), 4, "{trail}");
    for read in &reads {
        assert_eq!(read["resource_id"], grant.as_str());
        assert_eq!(read["details"]["operator"], OPERATOR);
        assert_eq!(read["details"]["category"], "support");
    }
    let whats: Vec<&str> = reads
        .iter()
        .filter_map(|r| r["details"]["what"].as_str())
        .collect();
    assert_eq!(whats, ["conversation", "files", "aides", "account"]);
    // And on the account page, in words.
    let page = app.send(Req::get("/account").bearer(&person)).await.body;
    assert!(page.contains("Access by staff"));
    assert!(
        page.contains("Viewed the conversation of “Wedding plans”"),
        "{page}"
    );
    assert!(page.contains("Opened read-only access for up to 30 minutes"));
    // The bystander's trail has nothing of it.
    let theirs_trail = app
        .send(Req::get("/api/audit?limit=50").bearer(&bystander))
        .await
        .body;
    assert!(!theirs_trail.contains("support."));

    // Closed early: reads stop; Slack is told.
    let closed = app
        .send(Req::post(&format!("/api/support/grants/{grant}/close")).bearer(&operator))
        .await;
    assert_eq!(closed.status, StatusCode::OK);
    let after = app
        .send(Req::get(&format!("/api/support/grants/{grant}/account")).bearer(&operator))
        .await;
    assert_eq!(after.status, StatusCode::FORBIDDEN);
    let posted = slack_messages(&slack, 2).await;
    assert!(posted[1].contains("*Staff access closed*"), "{posted:?}");

    // A legal hold: a new grant, and no email.
    let held = open(
        &operator,
        json!({"email": PERSON, "reason": "Court order 2026-77 for account records", "category": "legal",
               "minutes": 5, "legal_hold": true}),
    )
    .await;
    assert_eq!(held.status, StatusCode::CREATED, "{}", held.body);
    assert_eq!(staff_emails(&app).await.len(), 1);
    let held = held.json()["id"].as_str().expect("id").to_string();

    // Past its time: refused, and the alert loop posts its end once.
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "update support_grants set opened_at = now() - interval '10 minutes',
                    expires_at = now() - interval '1 second' where id = $1",
            &[&uuid::Uuid::parse_str(&held).expect("uuid")],
        )
        .await
        .expect("expire");
    let expired = app
        .send(Req::get(&format!("/api/support/grants/{held}/aides")).bearer(&operator))
        .await;
    assert_eq!(expired.status, StatusCode::FORBIDDEN);
    let slack_sender = app.state.slack.clone().expect("slack");
    let early = chrono::Utc::now()
        .date_naive()
        .and_hms_opt(0, 30, 0)
        .expect("time")
        .and_utc();
    let posted = aide::alerts::evaluate(&app.t.db, &app.state.config.ops, &slack_sender, early)
        .await
        .expect("evaluate");
    assert_eq!(posted.len(), 1, "{posted:?}");
    assert!(posted[0].0.contains("*Staff access ended*") && posted[0].0.contains(&held));

    // An operator removed: their grants close, and they can open none.
    assert!(
        aide::db::operators::remove(&admin, OPERATOR)
            .await
            .expect("remove")
    );
    let gone = open(
        &operator,
        grant_request("bystander@example.com", REASON, "abuse"),
    )
    .await;
    assert_eq!(gone.status, StatusCode::FORBIDDEN);
    // Signed out: 401; a malformed id: 422.
    assert_eq!(
        app.send(Req::post("/api/support/grants").json(grant_request(PERSON, REASON, "support")))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.send(Req::get("/api/support/grants/nope/account").bearer(&other_operator))
            .await
            .status,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn the_support_role_can_read_and_write_nothing_directly() {
    let app = TestApp::new().await;
    app.sign_in(PERSON).await;
    // From the catalog: no privilege on any table, column or sequence, and of the functions that
    // run with their owner's rights only the six staff-access ones to call (the others it may call
    // run with its own rights, which reach nothing).
    let admin = app.t.admin_conn().await;
    let held: Vec<String> = admin
        .query(
            "select c.relname::text from pg_class c join pg_namespace n on n.oid = c.relnamespace
             where n.nspname in ('public', 'aide_meta') and c.relkind in ('r', 'p', 'v', 'm', 'S')
               and (has_table_privilege('aide_support', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                    or (c.relkind = 'S' and has_sequence_privilege('aide_support', c.oid, 'USAGE, SELECT, UPDATE'))
                    or exists (select 1 from pg_attribute a where a.attrelid = c.oid and a.attnum > 0
                                 and not a.attisdropped
                                 and has_column_privilege('aide_support', c.oid, a.attnum, 'SELECT, INSERT, UPDATE, REFERENCES')))",
            &[],
        )
        .await
        .expect("privileges")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(held, Vec::<String>::new());
    let callable: Vec<String> = admin
        .query(
            "select p.proname::text from pg_proc p join pg_namespace n on n.oid = p.pronamespace
             where n.nspname = 'public' and p.prosecdef
               and has_function_privilege('aide_support', p.oid, 'EXECUTE')
             order by 1",
            &[],
        )
        .await
        .expect("functions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        callable,
        [
            "support_account",
            "support_aides",
            "support_close_grant",
            "support_conversation",
            "support_files",
            "support_open_grant"
        ]
    );
    let conn = app.t.admin_conn().await;
    conn.batch_execute("set role aide_support")
        .await
        .expect("become aide_support");
    for sql in [
        "select * from users",
        "select * from aides",
        "select * from audit_log",
        "select * from support_grants",
        "select * from operators",
        "update users set name = 'x'",
        "insert into audit_log (action, resource_type) values ('x.y', 'x')",
        "insert into operators (email) values ('me@example.com')",
        "delete from support_grants",
    ] {
        let refused = conn.batch_execute(sql).await.expect_err(sql);
        assert_eq!(
            refused.code().map(|c| c.code()),
            Some("42501"),
            "{sql}: {refused}"
        );
    }
    // Its functions refuse anyone who is not an operator.
    let refused = conn
        .query("select * from support_aides(gen_random_uuid())", &[])
        .await
        .expect_err("no grant");
    assert_eq!(refused.code().map(|c| c.code()), Some("42501"));
}
