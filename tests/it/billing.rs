//! Billing through the router on real PostgreSQL, against the Stripe stand-in: checkout, the
//! webhook (signatures, duplicates, order), the plan's effects, grace, reconcile, failures.

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::app::{Answer, Req, TestApp, join_all};
use crate::stripe_stub::{StripeStub, WEBHOOK_SECRET};

pub(crate) async fn app_with(stub: &StripeStub, extra: &[(&str, &str)]) -> TestApp {
    let vars = stub.vars();
    let mut all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    all.extend_from_slice(extra);
    TestApp::with(&all).await
}

pub(crate) async fn deliver(app: &TestApp, event: &Value) -> Answer {
    let (body, header) = StripeStub::signed(event);
    deliver_raw(app, &body, Some(&header)).await
}

async fn deliver_raw(app: &TestApp, body: &str, header: Option<&str>) -> Answer {
    let mut req = Req::post("/stripe/webhook")
        .header("content-type", "application/json")
        .raw_body(body);
    if let Some(header) = header {
        req = req.header("stripe-signature", header);
    }
    app.send(req).await
}

async fn checkout(app: &TestApp, token: &str) -> Answer {
    app.send(Req::post("/api/billing/checkout").bearer(token))
        .await
}

/// Signs in, checks out and pays; returns (token, the checkout session's id, the subscription's
/// id, the events Stripe sent).
pub(crate) async fn paid(
    app: &TestApp,
    stub: &StripeStub,
    email: &str,
) -> (String, String, String, Vec<Value>) {
    let token = app.sign_in(email).await;
    let started = checkout(app, &token).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let url = started.json()["url"].as_str().expect("url").to_string();
    let session = url.rsplit('/').next().expect("session id").to_string();
    let (sub, events) = stub.complete_checkout(&session);
    (token, session, sub, events)
}

async fn me(app: &TestApp, token: &str) -> Value {
    let answer = app.send(Req::get("/auth/me").bearer(token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.json()
}

async fn billing(app: &TestApp, token: &str) -> Value {
    let answer = app.send(Req::get("/api/billing").bearer(token)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(
        !answer.body.contains("cus_") && !answer.body.contains("sub_"),
        "no Stripe id: {}",
        answer.body
    );
    answer.json()
}

fn plan_changes(actions: &[(String, Option<uuid::Uuid>, Value)]) -> Vec<(String, String, String)> {
    actions
        .iter()
        .filter(|(a, _, _)| a == "billing.plan_changed")
        .map(|(_, _, d)| {
            (
                d["from"].as_str().unwrap_or_default().to_string(),
                d["to"].as_str().unwrap_or_default().to_string(),
                d["cause"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn checkout_and_its_webhooks_make_the_user_pro_once() {
    let stub = StripeStub::start().await;
    let app = app_with(
        &stub,
        &[("METRICS_TOKEN", "metrics-token-0123456789abcdef")],
    )
    .await;
    let token = app.sign_in("payer@example.com").await;
    let before = billing(&app, &token).await;
    assert_eq!(before["plan"], "free");
    assert_eq!(before["status"], Value::Null);
    assert_eq!(before["available"], true);
    assert_eq!(me(&app, &token).await["turns"]["limit"], 50);

    let started = checkout(&app, &token).await;
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let url = started.json()["url"].as_str().expect("url").to_string();
    assert!(url.starts_with("https://checkout.stripe.com/"), "{url}");
    assert!(!started.body.contains("cus_"), "{}", started.body);
    let customers = stub.customers();
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0]["email"], "payer@example.com");
    let session = url.rsplit('/').next().expect("id").to_string();
    let (_, events) = stub.complete_checkout(&session);

    let mut outcomes = Vec::new();
    for event in &events {
        let answer = deliver(&app, event).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        outcomes.push(
            answer.json()["outcome"]
                .as_str()
                .expect("outcome")
                .to_string(),
        );
    }
    assert_eq!(outcomes, vec!["applied", "applied", "applied"]);
    let me_now = me(&app, &token).await;
    assert_eq!(me_now["tier"], "pro");
    assert_eq!(
        me_now["turns"]["limit"],
        Value::Null,
        "no weekly limit on Pro: {me_now}"
    );
    let now = billing(&app, &token).await;
    assert_eq!(now["plan"], "pro");
    assert_eq!(now["status"], "active");
    assert_eq!(now["cancel_at_period_end"], false);
    let period_end = chrono::DateTime::parse_from_rfc3339(
        now["current_period_end"].as_str().expect("period end"),
    )
    .expect("a time");
    let days = (period_end.timestamp() - chrono::Utc::now().timestamp()) / 86_400;
    assert!((29..=30).contains(&days), "{days}");

    // The same event again: answered, no second effect.
    let again = deliver(&app, &events[1]).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["outcome"], "duplicate");
    assert_eq!(app.count_rows("stripe_events").await, 3);
    let metrics = app
        .send(Req::get("/metrics").bearer("metrics-token-0123456789abcdef"))
        .await
        .body;
    assert!(
        metrics.contains(
            "aide_stripe_webhook_events_total{type=\"customer.subscription.created\",outcome=\"duplicate\"} 1"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "aide_stripe_webhook_events_total{type=\"invoice.paid\",outcome=\"applied\"} 1"
        )
    );
    assert_eq!(
        plan_changes(&app.audit_actions().await),
        vec![("free".into(), "pro".into(), "webhook".into())]
    );

    let twice = checkout(&app, &token).await;
    assert_eq!(twice.status, StatusCode::CONFLICT);
    assert_eq!(twice.json()["code"], "ALREADY_PRO");
    let portal = app
        .send(Req::post("/api/billing/portal").bearer(&token))
        .await;
    assert_eq!(portal.status, StatusCode::OK, "{}", portal.body);
    assert!(
        portal.json()["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://billing.stripe.com/")),
        "{}",
        portal.body
    );
    // A browser's form is sent on with 303.
    let form = app
        .send(Req::post("/api/billing/portal").bearer(&token).form(&[]))
        .await;
    assert_eq!(form.status, StatusCode::SEE_OTHER);
    assert!(
        form.header("location")
            .is_some_and(|l| l.starts_with("https://billing.stripe.com/"))
    );
    assert_eq!(stub.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn the_checkout_return_reads_stripe_before_it_answers() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, session, _, _) = paid(&app, &stub, "return@example.com").await;
    // No webhook has arrived: the return alone must show Pro.
    assert_eq!(me(&app, &token).await["tier"], "free");
    let back = app
        .send(Req::get(&format!("/billing/success?session_id={session}")))
        .await;
    assert_eq!(back.status, StatusCode::SEE_OTHER);
    assert!(
        back.header("location")
            .is_some_and(|l| l.ends_with("?billing=success")),
        "{:?}",
        back.header("location")
    );
    assert_eq!(me(&app, &token).await["tier"], "pro");
    assert_eq!(
        plan_changes(&app.audit_actions().await),
        vec![("free".into(), "pro".into(), "checkout_return".into())]
    );
    // A made-up session changes nothing and still lands in the app.
    let made_up = app
        .send(Req::get("/billing/success?session_id=cs_test_nothing"))
        .await;
    assert_eq!(made_up.status, StatusCode::SEE_OTHER);
    assert_eq!(stub.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn cancelling_keeps_pro_to_the_period_end_and_the_footer_comes_back_after() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, _, sub, events) = paid(&app, &stub, "leaver@example.com").await;
    for event in &events {
        deliver(&app, event).await;
    }
    let aide = app.create_aide(&token, "Page").await;
    app.put_file(&token, &aide, "index.html", "<body><p>hi</p></body>")
        .await;
    let slug = app.publish(&token, &aide).await;
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert!(!page.body.contains("Made with"), "Pro pages have no footer");
    // Pro: more aides than the free plan keeps, one with a chosen slug.
    let mut aides = vec![aide.clone()];
    for n in 0..5 {
        aides.push(app.create_aide(&token, &format!("Extra {n}")).await);
    }
    let renamed = app
        .send(
            Req::new(
                axum::http::Method::PATCH,
                &format!("/api/aides/{}", aides[1]),
            )
            .bearer(&token)
            .json(json!({"slug": "my-own-page"})),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.body);

    let cancel = stub.update(&sub, |s| s.cancel_at_period_end = true);
    assert_eq!(deliver(&app, &cancel).await.status, StatusCode::OK);
    let now = billing(&app, &token).await;
    assert_eq!(now["plan"], "pro", "Pro until the period ends");
    assert_eq!(now["cancel_at_period_end"], true);

    let ended = stub.update(&sub, |s| s.status = "canceled".into());
    assert_eq!(deliver(&app, &ended).await.json()["outcome"], "applied");
    let now = billing(&app, &token).await;
    assert_eq!(now["plan"], "free");
    assert_eq!(now["status"], "canceled");
    // The page served from memory a moment ago gets its footer back at once; nothing is deleted.
    let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Made with"), "{}", page.body);
    assert_eq!(me(&app, &token).await["turns"]["limit"], 50);
    assert_eq!(
        plan_changes(&app.audit_actions().await),
        vec![
            ("free".into(), "pro".into(), "webhook".into()),
            ("pro".into(), "free".into(), "webhook".into())
        ]
    );
    // Nothing is taken away: all six aides are there and the chosen slug stays; no new aide
    // past the free limit, but archiving still works.
    let listed = app.send(Req::get("/api/aides").bearer(&token)).await;
    assert_eq!(
        listed.json()["items"].as_array().map(Vec::len),
        Some(6),
        "{}",
        listed.body
    );
    let one = app
        .send(Req::get(&format!("/api/aides/{}", aides[1])).bearer(&token))
        .await;
    assert_eq!(one.json()["slug"], "my-own-page", "{}", one.body);
    let more = app
        .send(
            Req::post("/api/aides")
                .bearer(&token)
                .json(json!({"title": "Seventh"})),
        )
        .await;
    assert_eq!(more.status, StatusCode::FORBIDDEN);
    assert_eq!(more.json()["code"], "AIDE_LIMIT_REACHED");
    let archived = app
        .send(Req::post(&format!("/api/aides/{}/archive", aides[2])).bearer(&token))
        .await;
    assert_eq!(archived.status, StatusCode::OK, "{}", archived.body);
}

#[tokio::test]
async fn a_failed_payment_keeps_pro_through_the_grace_then_the_account_is_free() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, _, sub, events) = paid(&app, &stub, "late@example.com").await;
    for event in &events {
        deliver(&app, event).await;
    }
    let failed = stub.fail_payment(&sub);
    assert_eq!(deliver(&app, &failed).await.json()["outcome"], "applied");
    let now = billing(&app, &token).await;
    assert_eq!(now["plan"], "pro");
    assert_eq!(now["status"], "past_due");
    let grace_ends =
        chrono::DateTime::parse_from_rfc3339(now["grace_ends_at"].as_str().expect("a grace end"))
            .expect("time");
    let days = (grace_ends.timestamp() - chrono::Utc::now().timestamp() + 3600) / 86_400;
    assert_eq!(days, 7);
    // One email, through the outbox, with no secret and no Stripe id.
    let owner = app.t.owner_conn().await;
    let emails = owner
        .query(
            "select subject, text_body from email_outbox where kind = 'payment_failed' and to_address = $1",
            &[&"late@example.com"],
        )
        .await
        .expect("outbox");
    assert_eq!(emails.len(), 1);
    let text: String = emails[0].get(1);
    assert!(text.contains("stays on until"), "{text}");
    assert!(!text.contains("cus_") && !text.contains("token="), "{text}");
    // A second delivery sends no second email.
    assert_eq!(deliver(&app, &failed).await.json()["outcome"], "duplicate");
    assert_eq!(
        owner
            .query(
                "select 1 from email_outbox where kind = 'payment_failed'",
                &[]
            )
            .await
            .expect("outbox")
            .len(),
        1
    );

    // Stripe tries again and fails again; this event's re-sync is overtaken by a newer one (its
    // ticket is older than the one stored): the email still goes, once.
    owner
        .execute(
            "update users set billing_sync_ticket = billing_sync_ticket + 1000000 where email = 'late@example.com'",
            &[],
        )
        .await
        .expect("a newer re-sync wrote");
    let again = stub.fail_payment(&sub);
    assert_eq!(deliver(&app, &again).await.json()["outcome"], "stale");
    assert_eq!(
        owner
            .query(
                "select 1 from email_outbox where kind = 'payment_failed'",
                &[]
            )
            .await
            .expect("outbox")
            .len(),
        2
    );
    owner
        .execute(
            "update users set billing_sync_ticket = 0 where email = 'late@example.com'",
            &[],
        )
        .await
        .expect("back to the sequence's tickets");

    // Still past due when the grace runs out: the account is free, its data kept.
    assert_eq!(
        aide::billing::sync::expire_grace(&app.state)
            .await
            .expect("grace"),
        0
    );
    owner
        .execute(
            "update users set billing_past_due_since = now() - interval '7 days 1 minute' where email = 'late@example.com'",
            &[],
        )
        .await
        .expect("time passes");
    assert_eq!(
        aide::billing::sync::expire_grace(&app.state)
            .await
            .expect("grace"),
        1
    );
    let now = billing(&app, &token).await;
    assert_eq!(now["plan"], "free");
    assert_eq!(now["status"], "past_due");
    assert_eq!(
        plan_changes(&app.audit_actions().await).last().cloned(),
        Some(("pro".into(), "free".into(), "grace_ended".into()))
    );
    // Paying late brings Pro back.
    let paid_now = stub.update(&sub, |s| s.status = "active".into());
    deliver(&app, &paid_now).await;
    assert_eq!(billing(&app, &token).await["plan"], "pro");
}

#[tokio::test]
async fn events_in_reverse_order_or_at_once_end_in_stripes_state() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, _, sub, events) = paid(&app, &stub, "order@example.com").await;
    // The subscription is cancelled before any of its events arrive; they then come in reverse.
    let cancel = stub.update(&sub, |s| s.cancel_at_period_end = true);
    let ended = stub.update(&sub, |s| s.status = "canceled".into());
    for event in [&ended, &cancel].into_iter().chain(events.iter().rev()) {
        let answer = deliver(&app, event).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let now = billing(&app, &token).await;
    assert_eq!(
        now["plan"], "free",
        "Stripe says canceled, whatever the order"
    );
    assert_eq!(
        now["status"].as_str(),
        stub.subscription(&sub).map(|s| s.status).as_deref()
    );

    // Another customer, every event at once.
    let (token, _, sub, events) = paid(&app, &stub, "burst@example.com").await;
    let failed = stub.fail_payment(&sub);
    let mut all = events.clone();
    all.push(failed);
    all.push(stub.update(&sub, |s| s.status = "active".into()));
    let answers = join_all(all.iter().map(|e| deliver(&app, e))).await;
    assert!(answers.iter().all(|a| a.status == StatusCode::OK));
    let now = billing(&app, &token).await;
    assert_eq!(
        (now["plan"].clone(), now["status"].clone()),
        (json!("pro"), json!("active"))
    );
    assert_eq!(
        app.count_rows("stripe_events").await as usize,
        5 + all.len()
    );
    assert_eq!(stub.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn bad_signatures_are_refused_before_anything_is_written() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, _, _, events) = paid(&app, &stub, "forged@example.com").await;
    let event = &events[1];
    let (body, good) = StripeStub::signed(event);
    let now = chrono::Utc::now().timestamp();
    let (_, stale) = StripeStub::signed_with(event, WEBHOOK_SECRET, now - 400);
    let (_, wrong) = StripeStub::signed_with(event, "whsec_notours", now);
    let tampered = body.replacen("active", "activf", 1);
    for (what, body, header) in [
        ("missing header", body.as_str(), None),
        ("stale timestamp", body.as_str(), Some(stale.as_str())),
        ("wrong secret", body.as_str(), Some(wrong.as_str())),
        ("tampered byte", tampered.as_str(), Some(good.as_str())),
        ("garbage", body.as_str(), Some("t=abc,v1=zz")),
    ] {
        let answer = deliver_raw(&app, body, header).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{what}");
        assert_eq!(answer.json()["code"], "SIGNATURE_INVALID", "{what}");
    }
    assert_eq!(app.state.webhook_refusals.total(), 5);
    assert_eq!(app.count_rows("stripe_events").await, 0);
    assert_eq!(me(&app, &token).await["tier"], "free");
    // While a secret rolls, Stripe signs twice: a header with a foreign v1 first and ours second
    // is accepted.
    let (_, ours) = StripeStub::signed(event);
    let our_v1 = ours.split_once(",v1=").map(|(_, v)| v).expect("v1");
    let both = format!("{wrong},v1={our_v1}");
    let answer = deliver_raw(&app, &body, Some(&both)).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(me(&app, &token).await["tier"], "pro");
}

#[tokio::test]
async fn an_unknown_customer_or_an_unrelated_event_is_answered_and_changes_nothing() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let stranger = stub.other_event(
        "customer.subscription.updated",
        json!({"id": "sub_elsewhere", "object": "subscription", "customer": "cus_elsewhere", "status": "active"}),
    );
    let answer = deliver(&app, &stranger).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.json()["outcome"], "unknown_customer");
    assert_eq!(
        deliver(&app, &stranger).await.json()["outcome"],
        "duplicate"
    );
    let unrelated = stub.other_event(
        "customer.created",
        json!({"id": "cus_x", "object": "customer"}),
    );
    assert_eq!(deliver(&app, &unrelated).await.json()["outcome"], "ignored");
    let not_an_event = deliver_raw(
        &app,
        "[1,2]",
        Some(&aide::billing::signature::sign(
            b"[1,2]",
            WEBHOOK_SECRET,
            chrono::Utc::now().timestamp(),
        )),
    )
    .await;
    assert_eq!(not_an_event.status, StatusCode::BAD_REQUEST);
    assert_eq!(not_an_event.json()["code"], "NOT_AN_EVENT");
    // Nothing asked Stripe about a customer nobody has.
    assert!(stub.requests().is_empty(), "{:?}", stub.requests());
}

#[tokio::test]
async fn stripe_failing_during_checkout_is_a_clear_error_and_leaves_nothing_half_done() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("unlucky@example.com").await;

    stub.set_down(true);
    let down = checkout(&app, &token).await;
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert_eq!(down.json()["code"], "PAYMENTS_UNAVAILABLE");
    assert_eq!(stub.requests().len(), 3, "three tries, then the answer");
    assert!(stub.customers().is_empty());
    let owner = app.t.owner_conn().await;
    let customer: Option<String> = owner
        .query_one(
            "select stripe_customer_id from users where email = 'unlucky@example.com'",
            &[],
        )
        .await
        .expect("user")
        .get(0);
    assert_eq!(customer, None);
    assert!(
        !app.audit_actions()
            .await
            .iter()
            .any(|(a, _, _)| a == "billing.checkout_started")
    );
    stub.set_down(false);

    // 429 with Retry-After, then fine: retried. The answer to creating the customer is lost on
    // the way: the retry with the same idempotency key gets Stripe's stored answer.
    stub.script(&[(429, Some(0), None)]);
    stub.lose_next_answer();
    let ok = checkout(&app, &token).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(
        stub.customers().len(),
        1,
        "one customer despite the retries"
    );

    // The same key still running elsewhere (409 idempotency_key_in_use): tried again.
    stub.key_in_use_next();
    let again = checkout(&app, &token).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);

    // A refusal (4xx) is not retried; `Stripe-Should-Retry: false` on a 500 neither.
    let before = stub.requests().len();
    stub.script(&[(400, None, None)]);
    let refused = checkout(&app, &token).await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(stub.requests().len(), before + 1);
    stub.script(&[(500, None, Some(false))]);
    let no_retry = checkout(&app, &token).await;
    assert_eq!(
        no_retry.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        no_retry.body
    );
    assert_eq!(stub.requests().len(), before + 2);
    assert_eq!(stub.customers().len(), 1);
    assert_eq!(stub.problems(), Vec::<String>::new());
}

#[tokio::test]
async fn twenty_concurrent_upgrades_make_one_customer() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("eager@example.com").await;
    let answers = join_all((0..20).map(|_| checkout(&app, &token))).await;
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    assert_eq!(stub.customers().len(), 1);
    assert_eq!(stub.sessions().len(), 20);
    assert!(
        stub.sessions()
            .iter()
            .all(|s| s["customer"] == stub.customers()[0]["id"])
    );
    // The budget is spent: the 21st waits.
    let limited = checkout(&app, &token).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        limited.body
    );
    assert!(limited.header("retry-after").is_some());
}

#[tokio::test]
async fn the_reconcile_job_corrects_a_lost_webhook() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let (token, _, sub, events) = paid(&app, &stub, "lost@example.com").await;
    for event in &events {
        deliver(&app, event).await;
    }
    // Cancelled in Stripe; the webhook never arrives.
    stub.update(&sub, |s| s.status = "canceled".into());
    let hour = std::time::Duration::from_secs(3600);
    let none = aide::billing::sync::reconcile(&app.state, 100, hour)
        .await
        .expect("reconcile");
    assert_eq!(none.checked, 0, "read a moment ago: not due yet");
    let owner = app.t.owner_conn().await;
    owner
        .execute(
            "update users set billing_synced_at = now() - interval '2 hours'",
            &[],
        )
        .await
        .expect("time passes");
    let done = aide::billing::sync::reconcile(&app.state, 100, hour)
        .await
        .expect("reconcile");
    assert_eq!((done.checked, done.corrected, done.failed), (1, 1, 0));
    assert_eq!(billing(&app, &token).await["plan"], "free");
    assert_eq!(
        plan_changes(&app.audit_actions().await).last().cloned(),
        Some(("pro".into(), "free".into(), "reconcile".into()))
    );
    // Canceled is final: the next pass leaves it alone.
    owner
        .execute(
            "update users set billing_synced_at = now() - interval '2 hours'",
            &[],
        )
        .await
        .expect("time passes");
    let after = aide::billing::sync::reconcile(&app.state, 100, hour)
        .await
        .expect("reconcile");
    assert_eq!(after.checked, 0);
}

#[tokio::test]
async fn without_stripe_billing_answers_503_and_the_rest_works() {
    let app = TestApp::new().await;
    let token = app.sign_in("nobilling@example.com").await;
    let plan = app.send(Req::get("/api/billing").bearer(&token)).await;
    assert_eq!(plan.status, StatusCode::OK);
    assert_eq!(plan.json()["available"], false);
    assert_eq!(plan.json()["plan"], "free");
    for path in ["/api/billing/checkout", "/api/billing/portal"] {
        let answer = app.send(Req::post(path).bearer(&token)).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(answer.json()["code"], "BILLING_NOT_CONFIGURED");
        let anonymous = app.send(Req::post(path)).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let hook = deliver_raw(&app, "{}", Some("t=1,v1=00")).await;
    assert_eq!(hook.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(hook.json()["code"], "BILLING_NOT_CONFIGURED");
    assert_eq!(
        app.send(Req::get("/api/billing")).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_portal_not_set_up_in_stripe_is_a_clear_503() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    let token = app.sign_in("portal@example.com").await;
    let none = app
        .send(Req::post("/api/billing/portal").bearer(&token))
        .await;
    assert_eq!(none.status, StatusCode::CONFLICT);
    assert_eq!(none.json()["code"], "NO_BILLING_ACCOUNT");
    assert_eq!(checkout(&app, &token).await.status, StatusCode::OK);
    stub.set_portal_configured(false);
    let answer = app
        .send(Req::post("/api/billing/portal").bearer(&token))
        .await;
    assert_eq!(
        answer.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        answer.body
    );
    assert_eq!(answer.json()["code"], "BILLING_PORTAL_NOT_CONFIGURED");
    assert!(
        !answer.body.contains("dashboard.stripe.com"),
        "operator detail stays in the log"
    );
}

/// Collects what the service logs, for reading back.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_stripe_id_or_address_reaches_the_logs_at_info() {
    let stub = StripeStub::start().await;
    let app = app_with(&stub, &[]).await;
    // Signed in before capturing: the development outbox logs the sign-in email itself.
    let token = app.sign_in("quiet@example.com").await;
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let started = checkout(&app, &token).await;
    let session = started.json()["url"]
        .as_str()
        .and_then(|u| u.rsplit('/').next())
        .expect("session")
        .to_string();
    let (sub, events) = stub.complete_checkout(&session);
    for event in &events {
        deliver(&app, event).await;
    }
    app.send(Req::get(&format!("/billing/success?session_id={session}")))
        .await;
    app.send(Req::post("/api/billing/portal").bearer(&token))
        .await;
    deliver(&app, &stub.fail_payment(&sub)).await;
    deliver(&app, &stub.update(&sub, |s| s.status = "canceled".into())).await;
    deliver_raw(&app, "{}", Some("t=1,v1=00")).await;

    let logs = String::from_utf8(captured.0.lock().expect("lock").clone()).expect("text");
    assert!(logs.contains("plan changed"), "the capture works: {logs}");
    assert!(logs.contains("webhook refused"), "{logs}");
    for secret in [
        "cus_",
        "sub_",
        "cs_test",
        "evt_",
        "quiet@example.com",
        "bps_",
    ] {
        assert!(!logs.contains(secret), "{secret} in the logs:\n{logs}");
    }
}

#[tokio::test]
async fn a_stripe_that_does_not_answer_times_out_and_is_tried_again() {
    let stub = StripeStub::start().await;
    let vars = stub.vars();
    let all: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // The production client, with attempts of a second instead of 30.
    let app = TestApp::build(&all, 4, |shared| {
        let config = shared.config.billing.clone().expect("billing");
        shared.stripe = Some(std::sync::Arc::new(
            aide::billing::stripe::StripeClient::with_timeout(
                &config,
                std::time::Duration::from_secs(1),
            ),
        ));
    })
    .await;
    let token = app.sign_in("patient@example.com").await;
    // The first attempt hangs: the second, with the same idempotency key, goes through.
    stub.stall_next(1, std::time::Duration::from_secs(3));
    let ok = checkout(&app, &token).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(stub.customers().len(), 1);
    // Every attempt hangs: a clear 503 after three, and nothing more is stored.
    stub.stall_next(3, std::time::Duration::from_secs(3));
    let portal = app
        .send(Req::post("/api/billing/portal").bearer(&token))
        .await;
    assert_eq!(
        portal.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        portal.body
    );
    assert_eq!(portal.json()["code"], "PAYMENTS_UNAVAILABLE");
    assert_eq!(stub.problems(), Vec::<String>::new());
}
