//! The public page cache (finding 8): concurrent misses for one file read it once, large files
//! are streamed whole and never kept, and every HTML file of a free page carries the footer,
//! with 304 answers for all of them.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use sha2::{Digest, Sha256};

use crate::app::{Req, TestApp, join_all};
use crate::public::start_listening;
use crate::stores::{Reads, WatchedStore};

fn sha_hex(content: &str) -> String {
    Sha256::digest(content.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Publishes `files` (path, content) as one free page; returns the slug.
async fn published(app: &TestApp, email: &str, files: &[(&str, &str)]) -> String {
    let token = app.sign_in(email).await;
    let id = app.create_aide(&token, "Cached").await;
    for (path, content) in files {
        app.put_file(&token, &id, path, content).await;
    }
    app.publish(&token, &id).await
}

#[tokio::test]
async fn concurrent_misses_for_one_file_read_it_once() {
    let reads = Reads::default();
    let app = TestApp::build(&[], 4, |state| {
        state.storage.published = Arc::new(WatchedStore {
            inner: state.storage.published.clone(),
            reads: reads.clone(),
            put_gate: None,
        });
    })
    .await;
    let _stop = start_listening(&app.state).await;
    let css = "p{margin:0}\n".repeat(20_000);
    let slug = published(
        &app,
        "once@example.com",
        &[("index.html", "<p>hi</p>"), ("site.css", &css)],
    )
    .await;
    // Whether the page is live is then answered from memory, so the requests below go straight
    // to the file cache together.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert_eq!(
            app.send(Req::get(&format!("/s/{slug}/"))).await.status,
            StatusCode::OK
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if matches!(app.state.live_pages.lookup(&slug, None), Some(Some(_))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never kept");
    }
    let reads_of_css = || -> usize {
        let sha = sha_hex(&css);
        let reads = reads.lock().expect("lock");
        reads
            .iter()
            .filter(|(key, _)| key.ends_with(&sha))
            .map(|(_, n)| n)
            .sum()
    };
    assert_eq!(reads_of_css(), 0);

    for _ in 0..2 {
        let answers =
            join_all((0..32).map(|_| app.send(Req::get(&format!("/s/{slug}/site.css"))))).await;
        for answer in &answers {
            assert_eq!(answer.status, StatusCode::OK);
            assert_eq!(answer.body.len(), css.len());
        }
        assert!(answers.iter().all(|a| a.body == css));
        assert_eq!(reads_of_css(), 1, "read once, then served from memory");
    }
    assert!(app.state.page_cache.weight() > css.len());
}

#[tokio::test]
async fn large_files_are_streamed_and_every_free_html_file_gets_the_footer() {
    const MIB: usize = 1024 * 1024;
    let app = TestApp::with(&[("FREE_MAX_FILE_BYTES", "4194304")]).await;
    let big: String = (0..3 * MIB)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let big_html = format!("<p>{}</p>", "h".repeat(MIB + MIB / 2));
    let slug = published(
        &app,
        "large@example.com",
        &[
            ("index.html", "<p>home</p>"),
            ("other.html", "<html><body><p>other page</p></body></html>"),
            ("big.txt", &big),
            ("big.html", &big_html),
        ],
    )
    .await;

    // 3 MiB, served whole, and never kept in memory.
    for _ in 0..2 {
        let answer = app.send(Req::get(&format!("/s/{slug}/big.txt"))).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.header("content-length"), Some("3145728"));
        assert!(answer.body == big, "the same bytes");
        assert_eq!(app.state.page_cache.weight(), 0);
    }
    let etag = app
        .send(Req::get(&format!("/s/{slug}/big.txt")))
        .await
        .header("etag")
        .expect("ETag")
        .to_string();
    let unchanged = app
        .send(Req::get(&format!("/s/{slug}/big.txt")).header("if-none-match", &etag))
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());

    // Every HTML file of a free page has the footer, not only index.html.
    for path in ["other.html", "big.html"] {
        let page = app.send(Req::get(&format!("/s/{slug}/{path}"))).await;
        assert_eq!(page.status, StatusCode::OK, "{path}");
        assert!(page.body.contains("Made with"), "{path}");
        assert_eq!(
            page.header("content-length"),
            Some(page.body.len().to_string().as_str()),
            "{path}"
        );
        let etag = page.header("etag").expect("ETag");
        let unchanged = app
            .send(Req::get(&format!("/s/{slug}/{path}")).header("if-none-match", etag))
            .await;
        assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED, "{path}");
        assert!(unchanged.body.is_empty());
    }
    let other = app.send(Req::get(&format!("/s/{slug}/other.html"))).await;
    assert!(other.body.contains("<p>other page</p>"));
    let weight = app.state.page_cache.weight();
    assert!(
        weight > 0 && weight < MIB,
        "the small page is kept, the large one is not: {weight}"
    );
}
