//! One account, or anonymous clients, trying to wear the service down: uploads that never finish
//! must hold no database connection and are capped per user, a stalled upload is cut off, the
//! live-page cache stays bounded whatever is asked for, and public requests that memory cannot
//! answer are rate-limited per client network.

use std::sync::Arc;
use std::time::Duration;

use aide::db::UserId;
use aide::public::LiveCache;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::app::{Answer, Req, TestApp, join_all};
use crate::public::start_listening;

/// Long enough for anything that must happen; never a measure of speed.
const WITHIN: Duration = Duration::from_secs(10);

/// A body that sends a byte at once and then every 200 ms, so it never stalls, and ends when
/// `stop` changes (or its sender goes): an upload that lasts as long as the test wants.
fn trickle(stop: watch::Receiver<bool>) -> Body {
    use futures_util::StreamExt;
    let byte = || Ok::<_, std::io::Error>(Bytes::from_static(b"x"));
    let rest = futures_util::stream::unfold(stop, move |mut stop| async move {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => Some((byte(), stop)),
            _ = stop.changed() => None,
        }
    });
    Body::from_stream(futures_util::stream::iter([byte()]).chain(rest))
}

fn put(aide: &str, path: &str, token: &str) -> Req {
    Req::new(Method::PUT, &format!("/api/aides/{aide}/files/{path}")).bearer(token)
}

async fn user_id(app: &TestApp, token: &str) -> UserId {
    let me = app.send(Req::get("/auth/me").bearer(token)).await.json();
    UserId(me["id"].as_str().expect("id").parse().expect("uuid"))
}

async fn within(what: &str, answer: impl std::future::Future<Output = Answer>) -> Answer {
    timeout(WITHIN, answer)
        .await
        .unwrap_or_else(|_| panic!("{what} got no answer"))
}

/// Finding 1: four uploads whose bodies keep trickling in, on a pool of two connections, while
/// everything else that needs the database still answers; a fifth upload of the same user is
/// refused at once.
#[tokio::test]
async fn uploads_that_never_finish_hold_no_connection_and_are_capped_per_user() {
    let app = Arc::new(TestApp::build(&[], 2, |_| {}).await);
    let slow = app.sign_in("slow@example.com").await;
    let other = app.sign_in("other@example.com").await;
    let aide = app.create_aide(&slow, "Slow").await;
    let other_aide = app.create_aide(&other, "Other").await;
    let slow_user = user_id(&app, &slow).await;
    assert_eq!(app.state.config.limits.uploads_in_flight_per_user, 4);

    let (stop, stopped) = watch::channel(false);
    let uploads: Vec<_> = (0..4)
        .map(|i| {
            let req = put(&aide, &format!("part{i}.txt"), &slow).body(trickle(stopped.clone()));
            let app = app.clone();
            tokio::spawn(async move { app.send(req).await })
        })
        .collect();
    let deadline = tokio::time::Instant::now() + WITHIN;
    while app.state.in_flight.taken(slow_user) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the four uploads never got under way"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let ready = within("/ready", app.send(Req::get("/ready"))).await;
    assert_eq!(ready.status, StatusCode::OK, "{}", ready.body);
    let sent = within(
        "/auth/send",
        app.send(Req::post("/auth/send").json(serde_json::json!({"email": "new@example.com"}))),
    )
    .await;
    assert_eq!(sent.status, StatusCode::OK, "{}", sent.body);
    let listed = within(
        "another user's list",
        app.send(Req::get("/api/aides").bearer(&other)),
    )
    .await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    let stored = within(
        "another user's upload",
        app.send(put(&other_aide, "index.html", &other).raw_body("<p>other</p>")),
    )
    .await;
    assert_eq!(stored.status, StatusCode::OK, "{}", stored.body);

    let fifth = within(
        "a fifth upload",
        app.send(put(&aide, "fifth.txt", &slow).raw_body("x")),
    )
    .await;
    assert_eq!(
        fifth.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        fifth.body
    );
    assert_eq!(fifth.json()["code"], "UPLOADS_IN_FLIGHT");
    let retry: u64 = fifth
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!(retry >= 1);

    assert!(
        uploads.iter().all(|u| !u.is_finished()),
        "the slow uploads were still under way all along"
    );
    stop.send(true).expect("stop the bodies");
    for upload in uploads {
        let answer = timeout(WITHIN, upload)
            .await
            .expect("a finished upload is answered")
            .expect("task");
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        assert!(answer.json()["size_bytes"].as_i64().expect("size") >= 1);
    }
    assert_eq!(
        app.state.in_flight.taken(slow_user),
        0,
        "every slot came back"
    );
    let again = app.send(put(&aide, "fifth.txt", &slow).raw_body("x")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

/// An upload whose client stops sending is answered 408 after the stall timeout, well before the
/// 30-second deadline of other requests, and leaves no file, no guard row and no slot behind.
#[tokio::test]
async fn a_stalled_upload_is_cut_off_and_leaves_nothing_behind() {
    let app = TestApp::new().await;
    let token = app.sign_in("stall@example.com").await;
    let aide = app.create_aide(&token, "Stalled").await;
    let user = user_id(&app, &token).await;

    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(1);
    sender
        .send(Ok(Bytes::from_static(b"the first part, then nothing")))
        .await
        .expect("send");
    let body = Body::from_stream(futures_util::stream::unfold(
        receiver,
        |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
    ));
    // The stall timeout is 10 s; 25 s stays below the 30 s that would end the request anyway.
    let answer = timeout(
        Duration::from_secs(25),
        app.send(put(&aide, "index.html", &token).body(body)),
    )
    .await
    .expect("the stalled upload is cut off");
    drop(sender);
    assert_eq!(
        answer.status,
        StatusCode::REQUEST_TIMEOUT,
        "{}",
        answer.body
    );
    assert_eq!(answer.json()["code"], "UPLOAD_STALLED");

    let files = app
        .send(Req::get(&format!("/api/aides/{aide}/files")).bearer(&token))
        .await
        .json();
    assert_eq!(files["files"], serde_json::json!([]));
    assert_eq!(app.count_rows("pending_blobs").await, 0);
    assert_eq!(app.state.in_flight.taken(user), 0);
}

/// Publishes a page with an index and a stylesheet; returns its slug.
async fn published(app: &TestApp, email: &str) -> String {
    let token = app.sign_in(email).await;
    let id = app.create_aide(&token, "Page").await;
    app.put_file(&token, &id, "index.html", "<p>real</p>").await;
    app.put_file(&token, &id, "site.css", "p{}").await;
    app.publish(&token, &id).await
}

/// Sends `paths` from one client, `together` at a time; returns how many got each status.
async fn get_all(
    app: &TestApp,
    paths: Vec<String>,
    together: usize,
) -> std::collections::BTreeMap<u16, usize> {
    let mut statuses = std::collections::BTreeMap::new();
    for group in paths.chunks(together) {
        for answer in join_all(group.iter().map(|p| app.send(Req::get(p)))).await {
            *statuses.entry(answer.status.as_u16()).or_insert(0) += 1;
        }
    }
    statuses
}

/// Finding 2: 5,000 made-up paths under a live page, and 5,000 under a slug that does not exist,
/// are answered from memory and add nothing per path.
#[tokio::test]
async fn made_up_paths_add_nothing_to_the_live_page_cache() {
    let app = TestApp::with(&[("PUBLIC_MISSES_PER_IP_PER_MINUTE", "10")]).await;
    let _stop = start_listening(&app.state).await;
    let slug = published(&app, "paths@example.com").await;
    // The publish's own notification evicts once, a moment later; then the answer stays.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let page = app.send(Req::get(&format!("/s/{slug}/"))).await;
        assert_eq!(page.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if matches!(app.state.live_pages.lookup(&slug, None), Some(Some(_))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never kept");
    }
    let page_weight = app.state.live_pages.weight();
    assert_eq!(
        page_weight, 3,
        "one for the page and one for each of its files"
    );

    let statuses = get_all(
        &app,
        (0..5000)
            .map(|i| format!("/s/{slug}/made-up/{i}.html"))
            .collect(),
        1,
    )
    .await;
    // One at a time, so that a late eviction would cost one miss, not many. A miss costs the
    // client's budget of 10: every one of these was answered from memory.
    assert_eq!(statuses, [(404, 5000)].into(), "{statuses:?}");
    assert!(app.state.live_pages.weight() <= page_weight);

    let statuses = get_all(
        &app,
        (0..5000)
            .map(|i| format!("/s/no-such-page/{i}.html"))
            .collect(),
        1,
    )
    .await;
    assert_eq!(statuses, [(404, 5000)].into(), "{statuses:?}");
    assert!(
        app.state.live_pages.weight() <= page_weight + 1,
        "one answer for the made-up slug, not one per path: {}",
        app.state.live_pages.weight()
    );
}

/// Finding 2: answers for 5,000 made-up slugs stay within the cache's bound, and the real page is
/// still served after they pushed it out.
#[tokio::test]
async fn made_up_slugs_stay_within_the_live_page_cache_bound() {
    const BOUND: usize = 100;
    let app = TestApp::build(
        &[("PUBLIC_MISSES_PER_IP_PER_MINUTE", "1000000")],
        4,
        |state| state.live_pages = Arc::new(LiveCache::new(BOUND)),
    )
    .await;
    let _stop = start_listening(&app.state).await;
    let slug = published(&app, "slugs@example.com").await;
    for round in 0..10 {
        let statuses = get_all(
            &app,
            (0..500)
                .map(|i| format!("/s/made-up-{round}-{i}/"))
                .collect(),
            25,
        )
        .await;
        assert_eq!(statuses, [(404, 500)].into(), "{statuses:?}");
        let weight = app.state.live_pages.weight();
        assert!(weight <= BOUND, "{weight} entries after round {round}");
        assert!(weight >= BOUND / 2, "the cache is in use: {weight}");
    }
    let page = app.send(Req::get(&format!("/s/{slug}/site.css"))).await;
    assert_eq!(page.status, StatusCode::OK);
    assert_eq!(page.body, "p{}");
}

/// Finding 2: with nothing answered from memory (no listener), each client network gets
/// PUBLIC_MISSES_PER_IP_PER_MINUTE requests; IPv6 clients are counted per /64.
#[tokio::test]
async fn public_misses_are_limited_per_client_network() {
    let app = TestApp::with(&[("PUBLIC_MISSES_PER_IP_PER_MINUTE", "5")]).await;
    let slug = published(&app, "misses@example.com").await;
    let page = format!("/s/{slug}/");
    let get = |ip: &str| app.send(Req::get(&page).ip(ip));

    for _ in 0..5 {
        assert_eq!(get("192.0.2.10").await.status, StatusCode::OK);
    }
    let refused = get("192.0.2.10").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    let made_up = app
        .send(Req::get("/s/no-such-page/").ip("192.0.2.10"))
        .await;
    assert_eq!(made_up.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        get("192.0.2.11").await.status,
        StatusCode::OK,
        "another client"
    );

    for i in 0..5 {
        let answer = get(&format!("[2001:db8:1:2::{:x}]", i + 1)).await;
        assert_eq!(answer.status, StatusCode::OK);
    }
    let same_network = get("[2001:db8:1:2:ffff:eeee:dddd:cccc]").await;
    assert_eq!(same_network.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        get("[2001:db8:1:3::1]").await.status,
        StatusCode::OK,
        "the next /64"
    );
}
