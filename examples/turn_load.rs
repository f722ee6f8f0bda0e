//! The turn benchmark's driver: a stand-in model provider (OpenAI-compatible) that streams a fixed
//! script at a fixed pace, each text delta carrying the moment it was sent, and clients that run
//! one streaming turn each, all at once, and measure what the server adds.
//!
//! Usage:
//! `turn_load BASE_URL PROVIDER_PORT TARGETS_FILE [TURNS] [DELTAS] [PACE_MS] [aligned|spread]`,
//! where each line of TARGETS_FILE is `token aide_id`. `aligned` (the default) puts every stream's
//! deltas on the same tick; `spread` starts them out of phase. The server under test must have
//! `AI_PROVIDER=openai` and `AI_BASE_URL=http://127.0.0.1:PROVIDER_PORT/v1`. Prints one line of
//! `key=value` figures.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::serve::ListenerExt;

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

#[derive(Clone, Copy)]
struct Script {
    deltas: usize,
    pace: Duration,
    /// Streams out of phase: the n-th stream of `streams` starts n/streams of a pace late, so
    /// deltas arrive spread over the pace instead of all on the same tick.
    spread: Option<usize>,
}

/// Streams begun, for spreading them.
static BEGUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

async fn completions(script: Script) -> axum::response::Response {
    let offset = script.spread.map_or(Duration::ZERO, |streams| {
        let n = BEGUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % streams.max(1);
        script.pace * n as u32 / streams.max(1) as u32
    });
    let stream = futures_util::stream::unfold(0usize, move |i| async move {
        if i > script.deltas + 1 {
            return None;
        }
        let chunk = if i < script.deltas {
            let wait = if i == 0 {
                script.pace + offset
            } else {
                script.pace
            };
            tokio::time::sleep(wait).await;
            // The moment this delta leaves, in microseconds since the process began.
            let text = format!("{} ", now_us());
            format!(
                "data: {}\n\n",
                serde_json::json!({"choices": [{"index": 0, "delta": {"content": text}}]})
            )
        } else if i == script.deltas {
            format!(
                "data: {}\n\ndata: {}\n\n",
                serde_json::json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
                serde_json::json!({"choices": [], "usage": {"prompt_tokens": 500, "completion_tokens": script.deltas}})
            )
        } else {
            "data: [DONE]\n\n".to_string()
        };
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(chunk)), i + 1))
    });
    let mut response = Body::from_stream(stream).into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[derive(Default)]
struct Result {
    started_us: Option<u64>,
    /// When the turn's `turn.started` arrived.
    started_at: u64,
    /// When its `turn.completed` arrived.
    completed_at: u64,
    /// (when it arrived, what the server added), per delta.
    added_us: Vec<(u64, u64)>,
    deltas: usize,
    out_of_order: usize,
    completed: bool,
    error: Option<String>,
}

async fn one_turn(
    client: reqwest::Client,
    base: String,
    token: String,
    aide: String,
    n: usize,
) -> Result {
    let mut result = Result::default();
    let asked = now_us();
    let response = client
        .post(format!("{base}/api/aides/{aide}/turns"))
        .bearer_auth(&token)
        .json(
            &serde_json::json!({"content": "hello", "client_turn_id": format!("load-{n}-{asked}")}),
        )
        .send()
        .await;
    let mut response = match response {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            result.error = Some(format!("status {}", r.status()));
            return result;
        }
        Err(e) => {
            result.error = Some(e.to_string());
            return result;
        }
    };
    let mut parser = aide::ai::sse::Parser::new();
    let mut last_id = 0u64;
    let mut last_sent = 0u64;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => {
                result.error = Some(e.to_string());
                break;
            }
        };
        let arrived = now_us();
        let Ok(events) = parser.feed(&chunk) else {
            result.error = Some("bad stream".into());
            break;
        };
        for event in events {
            let id: u64 = event
                .id
                .as_deref()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            if id != last_id + 1 {
                result.out_of_order += 1;
            }
            last_id = id;
            match event.name.as_str() {
                "turn.started" => {
                    result.started_us = Some(arrived - asked);
                    result.started_at = arrived;
                }
                "text.delta" => {
                    let data: serde_json::Value =
                        serde_json::from_str(&event.data).unwrap_or_default();
                    if let Some(sent) = data["text"]
                        .as_str()
                        .and_then(|t| t.trim().parse::<u64>().ok())
                    {
                        if sent < last_sent {
                            result.out_of_order += 1;
                        }
                        last_sent = sent;
                        result
                            .added_us
                            .push((arrived, arrived.saturating_sub(sent)));
                        result.deltas += 1;
                    }
                }
                "turn.completed" => {
                    result.completed = true;
                    result.completed_at = arrived;
                }
                "turn.failed" | "turn.interrupted" => {
                    result.error = Some(event.data.clone());
                }
                _ => {}
            }
        }
    }
    result
}

/// The same stream read straight from the stand-in, with the same reading code: the baseline of
/// what the machine itself adds (both processes share the cores with everything else).
async fn one_direct(client: reqwest::Client, port: u16) -> Vec<u64> {
    let mut added = Vec::new();
    let Ok(mut response) = client
        .post(format!("http://127.0.0.1:{port}/v1/chat/completions"))
        .json(&serde_json::json!({"stream": true}))
        .send()
        .await
    else {
        return added;
    };
    let mut parser = aide::ai::sse::Parser::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let arrived = now_us();
        for event in parser.feed(&chunk).unwrap_or_default() {
            let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
            if let Some(sent) = data["choices"][0]["delta"]["content"]
                .as_str()
                .and_then(|t| t.trim().parse::<u64>().ok())
            {
                added.push(arrived.saturating_sub(sent));
            }
        }
    }
    added
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    EPOCH.get_or_init(Instant::now);
    let args: Vec<String> = std::env::args().collect();
    let base = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "http://127.0.0.1:8000".into());
    let port: u16 = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(18083);
    let targets = std::fs::read_to_string(args.get(3).map_or("targets.txt", String::as_str))?;
    let turns: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(200);
    let deltas: usize = args.get(5).and_then(|n| n.parse().ok()).unwrap_or(50);
    let pace = Duration::from_millis(args.get(6).and_then(|n| n.parse().ok()).unwrap_or(20));
    // `aligned` (every stream on the same tick: the worst case) or `spread`.
    let spread = match args.get(7).map(String::as_str) {
        Some("spread") => Some(turns),
        _ => None,
    };
    let script = Script {
        deltas,
        pace,
        spread,
    };
    let app = axum::Router::new().route("/v1/chat/completions", post(move || completions(script)));
    // Each delta leaves at once, as a provider's would: without TCP_NODELAY a small write waits
    // for the previous one's ACK, which the reader may delay, and that wait would be counted
    // against the server.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await?
        .tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .map_err(std::io::Error::other)?;
    // The baseline first: as many streams at once, straight from the stand-in.
    BEGUN.store(0, std::sync::atomic::Ordering::Relaxed);
    let direct: Vec<_> = (0..turns)
        .map(|_| tokio::spawn(one_direct(client.clone(), port)))
        .collect();
    let mut baseline = Vec::new();
    for task in direct {
        baseline.extend(task.await.unwrap_or_default());
    }
    baseline.sort_unstable();
    BEGUN.store(0, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    let tasks: Vec<_> = targets
        .lines()
        .filter_map(|line| line.split_once(' '))
        .take(turns)
        .enumerate()
        .map(|(n, (token, aide))| {
            tokio::spawn(one_turn(
                client.clone(),
                base.clone(),
                token.to_string(),
                aide.trim().to_string(),
                n,
            ))
        })
        .collect();
    let mut all: Vec<(u64, u64)> = Vec::new();
    let mut last_start = 0;
    let mut first_end = u64::MAX;
    let mut to_started = Vec::new();
    let (mut completed, mut errors, mut out_of_order, mut delivered) = (0, 0, 0, 0);
    let mut first_error = None;
    for task in tasks {
        let Ok(result) = task.await else {
            errors += 1;
            continue;
        };
        last_start = last_start.max(result.started_at);
        if result.completed {
            // Its last delta left the stand-in before this: the commit began around then.
            let ended = result
                .added_us
                .last()
                .map_or(result.completed_at, |(at, _)| *at);
            first_end = first_end.min(ended);
        }
        all.extend(result.added_us);
        to_started.extend(result.started_us);
        completed += usize::from(result.completed);
        out_of_order += result.out_of_order;
        delivered += result.deltas;
        if let Some(e) = result.error {
            errors += 1;
            first_error.get_or_insert(e);
        }
    }
    let mut added: Vec<u64> = all.iter().map(|(_, a)| *a).collect();
    added.sort_unstable();
    // Once every turn has started: streaming alone, without the starts' work beside it.
    let mut steady: Vec<u64> = all
        .iter()
        .filter(|(at, _)| *at > last_start)
        .map(|(_, a)| *a)
        .collect();
    steady.sort_unstable();
    // And before the first turn ended: streaming alone, without any turn's commit beside it.
    let mut quiet: Vec<u64> = all
        .iter()
        .filter(|(at, _)| *at > last_start && *at < first_end)
        .map(|(_, a)| *a)
        .collect();
    quiet.sort_unstable();
    to_started.sort_unstable();
    println!(
        "turns={turns} completed={completed} errors={errors} deltas_expected={} deltas_delivered={delivered} out_of_order={out_of_order} direct_p50_ms={:.2} direct_p99_ms={:.2} added_p50_ms={:.2} added_p99_ms={:.2} added_max_ms={:.2} steady_p50_ms={:.2} steady_p99_ms={:.2} quiet_deltas={} quiet_p50_ms={:.2} quiet_p99_ms={:.2} started_p50_ms={:.1} started_p99_ms={:.1} wall_s={:.1}{}",
        turns * deltas,
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        percentile(&added, 0.5),
        percentile(&added, 0.99),
        percentile(&added, 1.0),
        percentile(&steady, 0.5),
        percentile(&steady, 0.99),
        quiet.len(),
        percentile(&quiet, 0.5),
        percentile(&quiet, 0.99),
        percentile(&to_started, 0.5),
        percentile(&to_started, 0.99),
        started.elapsed().as_secs_f64(),
        first_error
            .map(|e| format!(" first_error={e:?}"))
            .unwrap_or_default(),
    );
    Ok(())
}
