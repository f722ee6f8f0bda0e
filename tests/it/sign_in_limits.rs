//! The limits that stand between an attacker and someone's account or inbox: one code per
//! address (the newest email's), a daily budget of wrong codes per mailbox, one answer for every
//! refused code, IPv6 clients counted per /64, and send budgets per mailbox (aliases included),
//! per domain and in all.

use aide::auth::EmailAddress;
use axum::http::StatusCode;
use serde_json::json;

use crate::app::{Answer, Req, TestApp};
use crate::support::scalar;

const CODE_INVALID_DETAIL: &str = "That code is not right, or it is no longer valid. Use the newest email, or ask for a new link.";

/// Asks for a link for `email` from `ip`, expecting success; returns (link token, code).
async fn request_link(app: &TestApp, email: &str, ip: &str) -> (String, String) {
    let sent = app
        .send(
            Req::post("/auth/send")
                .ip(ip)
                .json(json!({ "email": email })),
        )
        .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let stored = EmailAddress::parse(email).expect("valid address");
    let (token, code, _) = app.last_email(stored.as_str()).await;
    (token, code)
}

/// A code that is not `code`.
fn wrong(code: &str) -> &'static str {
    if code == "000000" { "111111" } else { "000000" }
}

async fn try_code(app: &TestApp, email: &str, code: &str, ip: &str) -> Answer {
    app.send(
        Req::post("/auth/verify-code")
            .ip(ip)
            .json(json!({ "email": email, "code": code })),
    )
    .await
}

fn assert_code_invalid(answer: &Answer, context: &str) {
    assert_eq!(
        answer.status,
        StatusCode::BAD_REQUEST,
        "{context}: {}",
        answer.body
    );
    let body = answer.json();
    assert_eq!(body["code"], "CODE_INVALID", "{context}");
    assert_eq!(body["detail"], CODE_INVALID_DETAIL, "{context}");
}

/// The reasons recorded for refused codes, oldest first.
async fn code_failures(app: &TestApp) -> Vec<String> {
    app.audit_actions()
        .await
        .into_iter()
        .filter(|(a, _, d)| a == "auth.sign_in_failed" && d["method"] == "code")
        .map(|(_, _, d)| d["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[tokio::test]
async fn only_the_newest_emails_code_signs_in() {
    let app = TestApp::new().await;
    let (old_token, old_code) = request_link(&app, "nu@example.com", "192.0.2.1").await;
    let (_, new_code) = request_link(&app, "nu@example.com", "192.0.2.2").await;
    if old_code == new_code {
        // One chance in a million: the test would prove nothing.
        return;
    }
    let old = try_code(&app, "nu@example.com", &old_code, "192.0.2.3").await;
    assert_code_invalid(&old, "the older email's code");

    let new = try_code(&app, "nu@example.com", &new_code, "192.0.2.4").await;
    assert_eq!(new.status, StatusCode::OK, "{}", new.body);
    // The older link itself still signs in by its token.
    let link = app
        .send(
            Req::post("/auth/verify")
                .ip("192.0.2.5")
                .json(json!({ "token": old_token })),
        )
        .await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);
    assert_eq!(code_failures(&app).await, ["wrong_code"]);
}

#[tokio::test]
async fn wrong_codes_share_one_daily_budget_across_links() {
    // The default budget: 10 wrong codes a day per address.
    let app = TestApp::new().await;
    let email = "grind@example.com";
    let mut attempt = 0;
    for round in 0..2 {
        let (_, code) = request_link(&app, email, &format!("192.0.2.{}", 10 + round)).await;
        for _ in 0..5 {
            attempt += 1;
            let answer =
                try_code(&app, email, wrong(&code), &format!("198.51.100.{attempt}")).await;
            assert_code_invalid(&answer, &format!("wrong guess {attempt}"));
        }
    }
    // A fresh link, whose code has never been guessed at: the address's budget is spent, so even
    // its right code is refused, and only the emailed link signs in.
    let (token, code) = request_link(&app, email, "192.0.2.20").await;
    let right = try_code(&app, email, &code, "198.51.100.50").await;
    assert_code_invalid(&right, "the right code after the budget is spent");
    let link = app
        .send(
            Req::post("/auth/verify")
                .ip("198.51.100.51")
                .json(json!({ "token": token })),
        )
        .await;
    assert_eq!(link.status, StatusCode::OK, "{}", link.body);

    let reasons = code_failures(&app).await;
    assert_eq!(reasons.len(), 11, "{reasons:?}");
    assert!(
        reasons[..10].iter().all(|r| r == "wrong_code"),
        "{reasons:?}"
    );
    assert_eq!(reasons[10], "budget_spent");
}

#[tokio::test]
async fn the_failure_budget_spans_aliases_of_one_mailbox() {
    let app = TestApp::with(&[("CODE_FAILURES_PER_EMAIL_PER_DAY", "2")]).await;
    let (_, code) = request_link(&app, "fa@gmail.com", "192.0.2.30").await;
    let (_, alias_code) = request_link(&app, "f.a+x@gmail.com", "192.0.2.31").await;
    let first = try_code(&app, "fa@gmail.com", wrong(&code), "198.51.100.1").await;
    assert_code_invalid(&first, "a wrong code");
    let second = try_code(&app, "f.a+x@gmail.com", wrong(&alias_code), "198.51.100.2").await;
    assert_code_invalid(&second, "a wrong code for an alias");
    // Both wrong codes were charged to one mailbox: the right code of either is refused.
    let right = try_code(&app, "fa@gmail.com", &code, "198.51.100.3").await;
    assert_code_invalid(&right, "the right code, budget spent by the alias");
    assert_eq!(
        code_failures(&app).await,
        ["wrong_code", "wrong_code", "budget_spent"]
    );
    // A right code is not a failure: its charge is taken back, and the budget keeps no trace.
    let (_, other) = request_link(&app, "other@gmail.com", "192.0.2.32").await;
    let ok = try_code(&app, "other@gmail.com", &other, "198.51.100.4").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let tx = app.t.db.system().await.expect("system");
    let key = format!(
        "code:email:{}",
        EmailAddress::parse("other@gmail.com")
            .expect("valid")
            .mailbox_digest()
    );
    let charged: i64 = scalar(
        &tx,
        "select count(*) from rate_limits where key = $1",
        &[&key],
    )
    .await
    .expect("count");
    assert_eq!(charged, 0, "right codes are not failures");
}

#[tokio::test]
async fn every_refused_code_answers_alike() {
    let app = TestApp::with(&[("CODE_FAILURES_PER_EMAIL_PER_DAY", "6")]).await;
    let mut answers = Vec::new();

    // No live code: nothing was ever sent to this address.
    answers.push(try_code(&app, "nobody@example.com", "123456", "198.51.100.1").await);

    // Wrong code, then too many attempts: five wrong guesses kill the code, the right one is then
    // refused like any other.
    let (_, code) = request_link(&app, "al@example.com", "192.0.2.40").await;
    for i in 0..5 {
        answers.push(
            try_code(
                &app,
                "al@example.com",
                wrong(&code),
                &format!("198.51.100.{}", 10 + i),
            )
            .await,
        );
    }
    answers.push(try_code(&app, "al@example.com", &code, "198.51.100.20").await);

    // Budget spent: a sixth wrong code on a new link spends it, and the right code is refused.
    let (_, code) = request_link(&app, "al@example.com", "192.0.2.41").await;
    answers.push(try_code(&app, "al@example.com", wrong(&code), "198.51.100.21").await);
    answers.push(try_code(&app, "al@example.com", &code, "198.51.100.22").await);

    for (i, answer) in answers.iter().enumerate() {
        assert_code_invalid(answer, &format!("answer {i}"));
        assert!(
            !answer.json()["detail"]
                .as_str()
                .expect("detail")
                .chars()
                .any(|c| c.is_ascii_digit()),
            "no attempts-left count: {}",
            answer.body
        );
        assert!(answer.header("retry-after").is_none());
    }
    // The audit keeps the real reasons, all four of them.
    assert_eq!(
        code_failures(&app).await,
        [
            "no_live_code",
            "wrong_code",
            "wrong_code",
            "wrong_code",
            "wrong_code",
            "wrong_code",
            "too_many_attempts",
            "wrong_code",
            "budget_spent",
        ]
    );
}

#[tokio::test]
async fn ip_limits_count_an_ipv6_64_as_one_client() {
    let app = TestApp::new().await;
    let bad_token = json!({ "token": "A".repeat(43) });
    for i in 1..=10 {
        let answer = app
            .send(
                Req::post("/auth/verify")
                    .ip(&format!("[2001:db8:1:2::{i:x}]"))
                    .json(bad_token.clone()),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "attempt {i}");
    }
    let same_64 = app
        .send(
            Req::post("/auth/verify")
                .ip("[2001:db8:1:2:ffff:eeee:dddd:cccc]")
                .json(bad_token.clone()),
        )
        .await;
    assert_eq!(same_64.status, StatusCode::TOO_MANY_REQUESTS);
    let code_attempt = app
        .send(
            Req::post("/auth/verify-code")
                .ip("[2001:db8:1:2::abcd]")
                .json(json!({ "email": "a@example.com", "code": "123456" })),
        )
        .await;
    assert_eq!(code_attempt.status, StatusCode::TOO_MANY_REQUESTS);
    let next_64 = app
        .send(
            Req::post("/auth/verify")
                .ip("[2001:db8:1:3::1]")
                .json(bad_token),
        )
        .await;
    assert_eq!(next_64.status, StatusCode::BAD_REQUEST);

    // Sending: 20 an hour per network, whatever the addresses within the /64.
    for i in 1..=20 {
        let ok = app
            .send(
                Req::post("/auth/send")
                    .ip(&format!("[2001:db8:9:9::{i:x}]"))
                    .json(json!({ "email": format!("six{i}@example.com") })),
            )
            .await;
        assert_eq!(ok.status, StatusCode::OK, "send {i}");
    }
    let limited = app
        .send(
            Req::post("/auth/send")
                .ip("[2001:db8:9:9:1234::1]")
                .json(json!({ "email": "six21@example.com" })),
        )
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.header("retry-after").is_some());
}

/// How many emails are queued to `to`.
async fn emails_to(app: &TestApp, to: &str) -> i64 {
    let tx = app.t.db.system().await.expect("system");
    scalar(
        &tx,
        "select count(*) from email_outbox where to_address = $1",
        &[&to],
    )
    .await
    .expect("count")
}

#[tokio::test]
async fn aliases_share_the_send_limit_and_look_alikes_are_refused() {
    let app = TestApp::new().await;
    for i in 0..5 {
        request_link(&app, "victim@gmail.com", &format!("192.0.2.{}", 60 + i)).await;
    }
    for (i, alias) in [
        "victim+1@gmail.com",
        "v.ictim@gmail.com",
        "V.I.C.T.I.M+2@googlemail.com",
        "victim@ｇｍａｉｌ.com",
    ]
    .into_iter()
    .enumerate()
    {
        let answer = app
            .send(
                Req::post("/auth/send")
                    .ip(&format!("192.0.2.{}", 70 + i))
                    .json(json!({ "email": alias })),
            )
            .await;
        assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{alias}");
        assert!(answer.header("retry-after").is_some(), "{alias}");
        assert!(
            answer.json()["detail"]
                .as_str()
                .expect("detail")
                .contains("for this address"),
            "{}",
            answer.body
        );
    }
    for (i, (look_alike, says)) in [
        ("ｖictim@gmail.com", "before the @"),
        ("victim@gmаil.com", "mixes alphabets"),
    ]
    .into_iter()
    .enumerate()
    {
        let answer = app
            .send(
                Req::post("/auth/send")
                    .ip(&format!("192.0.2.{}", 80 + i))
                    .json(json!({ "email": look_alike })),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{look_alike}"
        );
        let body = answer.json();
        assert_eq!(body["fields"][0]["field"], "email");
        assert!(
            body["fields"][0]["message"]
                .as_str()
                .expect("message")
                .contains(says),
            "{look_alike}: {}",
            answer.body
        );
    }
    let tx = app.t.db.system().await.expect("system");
    let queued: Vec<String> = tx
        .unregistered("select distinct to_address from email_outbox", &[])
        .await
        .expect("addresses")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(queued, ["victim@gmail.com"], "nothing went to an alias");
    assert_eq!(emails_to(&app, "victim@gmail.com").await, 5);

    // A domain in Unicode is stored in its ASCII form.
    request_link(&app, "ivan@пример.рф", "192.0.2.90").await;
    assert_eq!(emails_to(&app, "ivan@xn--e1afmkfd.xn--p1ai").await, 1);
}

#[tokio::test]
async fn domain_and_global_budgets_refuse_without_spending_the_others() {
    let app = TestApp::with(&[
        ("MAGIC_LINKS_PER_DOMAIN_PER_HOUR", "3"),
        ("MAGIC_LINKS_PER_HOUR", "5"),
    ])
    .await;
    for (i, email) in ["a@one.example", "b@one.example", "c@one.example"]
        .into_iter()
        .enumerate()
    {
        request_link(&app, email, &format!("192.0.2.{}", 100 + i)).await;
    }
    let by_domain = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.110")
                .json(json!({ "email": "d@one.example" })),
        )
        .await;
    assert_eq!(by_domain.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(by_domain.json()["code"], "RATE_LIMITED");
    assert!(by_domain.header("retry-after").is_some());
    assert!(
        by_domain.json()["detail"]
            .as_str()
            .expect("detail")
            .contains("at this email domain"),
        "{}",
        by_domain.body
    );
    // Refused, it changed nothing: no link, no email, and none of the other budgets spent.
    assert_eq!(emails_to(&app, "d@one.example").await, 0);
    let tx = app.t.db.system().await.expect("system");
    let links: i64 = scalar(
        &tx,
        "select count(*) from magic_links where email = $1",
        &[&"d@one.example"],
    )
    .await
    .expect("count");
    assert_eq!(links, 0);
    let key = format!(
        "send:email:{}",
        EmailAddress::parse("d@one.example")
            .expect("valid")
            .mailbox_digest()
    );
    let mailbox_rows: i64 = scalar(
        &tx,
        "select count(*) from rate_limits where key = $1",
        &[&key],
    )
    .await
    .expect("count");
    assert_eq!(mailbox_rows, 0, "the address's own budget is untouched");
    drop(tx);

    // The global budget still has exactly two sends left (the refused one took none of it).
    request_link(&app, "x@two.example", "192.0.2.111").await;
    request_link(&app, "y@two.example", "192.0.2.112").await;
    let form = app
        .send(
            Req::post("/auth/send")
                .ip("192.0.2.113")
                .form(&[("email", "z@two.example")]),
        )
        .await;
    assert_eq!(form.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(form.header("retry-after").is_some());
    assert!(
        form.body.contains("too many sign-in emails right now"),
        "{}",
        form.body
    );
    assert_eq!(emails_to(&app, "z@two.example").await, 0);
}
