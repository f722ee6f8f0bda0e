//! The per-user API rate limit is exact: a burst under it is never refused, a burst over it is
//! refused exactly past it.

use axum::http::StatusCode;

use crate::app::{Req, TestApp, join_all};

/// Sends `n` list requests of one user at once; returns how many were answered 200 and 429.
async fn burst(app: &TestApp, token: &str, n: usize) -> (usize, usize) {
    let answers = join_all((0..n).map(|_| app.send(Req::get("/api/aides").bearer(token)))).await;
    let mut counts = (0, 0);
    for answer in answers {
        match answer.status {
            StatusCode::OK => counts.0 += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert!(answer.header("retry-after").is_some());
                counts.1 += 1;
            }
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    counts
}

/// Many requests of one user at once, all missing the local tokens together, used to take a
/// lease each and keep only the last: some were refused well under the limit.
#[tokio::test]
async fn a_burst_under_the_limit_is_never_refused() {
    let app = TestApp::new().await;
    let token = app.sign_in("burst@example.com").await;
    // The default limit is 100 a minute; sign-in spent nothing of it.
    for _ in 0..3 {
        let (ok, refused) = burst(&app, &token, 30).await;
        assert_eq!((ok, refused), (30, 0));
    }
}

#[tokio::test]
async fn a_burst_over_the_limit_is_refused_exactly_past_it() {
    let app = TestApp::new().await;
    let token = app.sign_in("over@example.com").await;
    let (ok, refused) = burst(&app, &token, 150).await;
    assert_eq!((ok, refused), (100, 50));
}

/// Two sessions of one user share the budget exactly.
#[tokio::test]
async fn two_sessions_of_one_user_share_the_budget_exactly() {
    let app = TestApp::new().await;
    let first = app.sign_in("two@example.com").await;
    let second = app.sign_in("two@example.com").await;
    let answers = join_all((0..120).map(|i| {
        let token = if i % 2 == 0 { &first } else { &second };
        app.send(Req::get("/api/aides").bearer(token))
    }))
    .await;
    let ok = answers
        .iter()
        .filter(|a| a.status == StatusCode::OK)
        .count();
    assert_eq!(ok, 100);
}
