//! One turn's conversation with the model: rounds of request and streamed response, every tool
//! call applied to the working copy as soon as its input is complete and answered, and events for
//! the person as they happen. Nothing here touches the database or storage; the caller commits
//! the outcome, or not.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use super::preview::{Preview, Reveal};
use super::workspace::{Content, PAGE, Workspace};
use crate::ai::model::{
    Block, ErrorKind, Message, ModelEvent, ModelRequest, ProviderError, Role, StopReason, Usage,
};
use crate::ai::provider::ModelProvider;

/// What the person sees while a turn runs (besides its start and end, which the caller sends).
/// Serialized as the event's data alone; [`Progress::name`] is the event's name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Progress {
    /// More of the reply.
    Text {
        text: String,
    },
    /// A round after the first begins (a call failed, or the model read a file).
    Round {
        round: u32,
    },
    ToolStarted {
        call_id: String,
        name: String,
    },
    /// More of a call's input: the text being written, or its command or path once known.
    ToolDelta {
        call_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        command: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    ToolApplied {
        call_id: String,
        result: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    ToolFailed {
        call_id: String,
        error: String,
    },
    /// A file of the working copy after a call changed it (preview only: nothing is saved until
    /// the turn completes). `content` is null for a deleted file, and for one too large to send.
    FileUpdated {
        path: String,
        content: Option<String>,
        deleted: bool,
    },
}

impl Progress {
    /// The event's name on the stream.
    pub fn name(&self) -> &'static str {
        match self {
            Progress::Text { .. } => "text.delta",
            Progress::Round { .. } => "round.started",
            Progress::ToolStarted { .. } => "tool.started",
            Progress::ToolDelta { .. } => "tool.delta",
            Progress::ToolApplied { .. } => "tool.applied",
            Progress::ToolFailed { .. } => "tool.failed",
            Progress::FileUpdated { .. } => "file.updated",
        }
    }
}

/// How the turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    Completed,
    /// The person stopped it.
    Interrupted,
    Failed {
        code: &'static str,
        error: String,
        retry_after: Option<Duration>,
    },
}

/// Everything the caller needs to record the turn.
#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    /// The reply, as streamed (every round's text).
    pub reply: String,
    pub workspace: Workspace,
    /// Paths the turn changed (written or deleted).
    pub changed: BTreeSet<String>,
    /// The calls that changed files, in order (tool name and input): what is replayed when the
    /// page changed while the turn ran.
    pub edits: Vec<(String, Value)>,
    pub usage: Usage,
    /// The usage the current round has reported so far (added to `usage` when it ends, however
    /// it ends).
    round_usage: Usage,
    pub rounds: u32,
    pub applied: u32,
    pub failed: u32,
    pub request_ids: Vec<String>,
    /// From the start of the turn (its request) to the provider's first event.
    pub first_byte: Option<Duration>,
    /// From the start to the first thing the person saw (text or a tool call).
    pub first_visible: Option<Duration>,
}

impl Outcome {
    /// Whether the model produced anything (an interrupted turn counts only then).
    pub fn produced_output(&self) -> bool {
        self.first_visible.is_some()
    }
}

/// A file larger than this is announced without its content.
const PREVIEW_MAX_BYTES: usize = 1024 * 1024;

/// The fixed parts of a turn.
pub struct Turn<'a> {
    pub provider: &'a dyn ModelProvider,
    pub system: String,
    /// The conversation so far, oldest first; the new user message last.
    pub messages: Vec<Message>,
    pub max_rounds: u32,
    pub max_tokens: u32,
    /// When the turn began (its timings count from here).
    pub started: Instant,
    /// When the turn must be over.
    pub deadline: Instant,
}

/// Runs the turn on `workspace`, sending progress to `progress`, until it ends or `cancel`
/// turns true.
pub async fn run(
    mut turn: Turn<'_>,
    workspace: Workspace,
    progress: &mut (dyn FnMut(Progress) + Send),
    mut cancel: watch::Receiver<bool>,
) -> Outcome {
    let started = turn.started;
    let history = turn.messages.len();
    let mut outcome = Outcome {
        end: End::Completed,
        reply: String::new(),
        workspace,
        changed: BTreeSet::new(),
        edits: Vec::new(),
        usage: Usage::default(),
        round_usage: Usage::default(),
        rounds: 0,
        applied: 0,
        failed: 0,
        request_ids: Vec::new(),
        first_byte: None,
        first_visible: None,
    };
    let mut messages = std::mem::take(&mut turn.messages);
    loop {
        outcome.rounds += 1;
        if outcome.rounds > 1 {
            progress(Progress::Round {
                round: outcome.rounds,
            });
        }
        let request = ModelRequest {
            system: turn.system.clone(),
            messages: messages.clone(),
            tools: super::workspace::tools(),
            max_tokens: turn.max_tokens,
            cache_through: history.checked_sub(2),
        };
        let round = tokio::select! {
            biased;
            _ = cancelled(&mut cancel) => Err(RoundEnd::Interrupted),
            () = tokio::time::sleep_until(turn.deadline.into()) => Err(RoundEnd::TimedOut),
            round = one_round(&turn, &request, &mut outcome, progress, started) => round,
        };
        // The round's tokens count however it ended (a stopped round was paid for too).
        let spent = std::mem::take(&mut outcome.round_usage);
        outcome.usage.add(spent);
        let round = match round {
            Ok(round) => round,
            Err(RoundEnd::Interrupted) => {
                outcome.end = End::Interrupted;
                return outcome;
            }
            Err(RoundEnd::TimedOut) => {
                outcome.end = End::Failed {
                    code: "TURN_TIMED_OUT",
                    error: "The turn took too long and was stopped.".into(),
                    retry_after: None,
                };
                return outcome;
            }
            Err(RoundEnd::Provider(error)) => {
                outcome.end = End::Failed {
                    code: provider_code(&error),
                    error: error.message,
                    retry_after: error.retry_after,
                };
                return outcome;
            }
        };
        let more = round.results.iter().any(|(_, _, is_error)| *is_error) || round.viewed;
        let mut assistant = Vec::new();
        if !round.text.is_empty() {
            assistant.push(Block::Text(round.text));
        }
        assistant.extend(round.calls);
        if assistant.is_empty() {
            break;
        }
        messages.push(Message {
            role: Role::Assistant,
            content: assistant,
        });
        if !more || outcome.rounds >= turn.max_rounds || round.results.is_empty() {
            break;
        }
        messages.push(Message {
            role: Role::User,
            content: round
                .results
                .into_iter()
                .map(|(id, content, is_error)| Block::ToolResult {
                    id,
                    content,
                    is_error,
                })
                .collect(),
        });
    }
    if !outcome.changed.is_empty()
        && !matches!(outcome.workspace.files().get(PAGE), Some(Content::Text(t)) if !t.trim().is_empty())
    {
        outcome.end = End::Failed {
            code: "NO_PAGE",
            error: format!("The changes left no {PAGE}, so nothing was saved."),
            retry_after: None,
        };
    }
    outcome
}

enum RoundEnd {
    Interrupted,
    TimedOut,
    Provider(ProviderError),
}

struct Round {
    text: String,
    /// The calls, as the model made them (for the next request).
    calls: Vec<Block>,
    /// Each call's answer: id, content, whether it failed.
    results: Vec<(String, String, bool)>,
    viewed: bool,
}

struct OpenCall {
    id: String,
    name: String,
    preview: Preview,
}

async fn one_round(
    turn: &Turn<'_>,
    request: &ModelRequest,
    outcome: &mut Outcome,
    progress: &mut (dyn FnMut(Progress) + Send),
    started: Instant,
) -> Result<Round, RoundEnd> {
    let mut stream = turn
        .provider
        .start(request)
        .await
        .map_err(RoundEnd::Provider)?;
    if let Some(id) = stream.request_id() {
        outcome.request_ids.push(id.to_string());
    }
    let mut round = Round {
        text: String::new(),
        calls: Vec::new(),
        results: Vec::new(),
        viewed: false,
    };
    let mut open: Vec<OpenCall> = Vec::new();
    let mut stop = None;
    let mut unparsed = Vec::new();
    while let Some(event) = stream.next().await {
        outcome.first_byte.get_or_insert_with(|| started.elapsed());
        let event = match event {
            Ok(event) => event,
            Err(error) => return Err(RoundEnd::Provider(error)),
        };
        match event {
            ModelEvent::TextDelta(text) => {
                outcome
                    .first_visible
                    .get_or_insert_with(|| started.elapsed());
                round.text.push_str(&text);
                outcome.reply.push_str(&text);
                progress(Progress::Text { text });
            }
            ModelEvent::ToolStart { id, name } => {
                outcome
                    .first_visible
                    .get_or_insert_with(|| started.elapsed());
                progress(Progress::ToolStarted {
                    call_id: id.clone(),
                    name: name.clone(),
                });
                open.push(OpenCall {
                    id,
                    name,
                    preview: Preview::default(),
                });
            }
            ModelEvent::ToolDelta { id, json } => {
                if let Some(call) = open.iter_mut().find(|c| c.id == id) {
                    for reveal in call.preview.feed(&json) {
                        progress(match reveal {
                            Reveal::Text(text) => Progress::ToolDelta {
                                call_id: id.clone(),
                                text: Some(text),
                                command: None,
                                path: None,
                            },
                            Reveal::Field { name, value } => Progress::ToolDelta {
                                call_id: id.clone(),
                                text: None,
                                command: (name == "command").then(|| value.clone()),
                                path: (name == "path").then_some(value),
                            },
                        });
                    }
                }
            }
            ModelEvent::ToolEnd { id, input } => {
                let name = open
                    .iter()
                    .position(|c| c.id == id)
                    .map(|i| open.remove(i).name)
                    .unwrap_or_default();
                match input {
                    Ok(input) => {
                        apply(&mut round, outcome, progress, id, name, input);
                    }
                    Err(why) => unparsed.push((id, name, why)),
                }
            }
            ModelEvent::Usage(u) => outcome.round_usage = u,
            ModelEvent::Stop(reason) => stop = Some(reason),
        }
    }
    for (id, name, why) in unparsed {
        let error = if stop == Some(StopReason::MaxTokens) {
            "Your output reached its length limit in the middle of this call, so nothing of it was applied. Make smaller edits: several str_replace calls rather than one large create.".to_string()
        } else {
            format!("The call's input could not be read, so nothing was applied: {why}")
        };
        outcome.failed += 1;
        progress(Progress::ToolFailed {
            call_id: id.clone(),
            error: error.clone(),
        });
        round.calls.push(Block::ToolUse {
            id: id.clone(),
            name,
            input: Value::Object(Default::default()),
        });
        round.results.push((id, error, true));
    }
    Ok(round)
}

fn apply(
    round: &mut Round,
    outcome: &mut Outcome,
    progress: &mut (dyn FnMut(Progress) + Send),
    id: String,
    name: String,
    input: Value,
) {
    let result = outcome.workspace.apply(&name, &input);
    if matches!(&result, Ok(applied) if applied.changed.is_some()) {
        outcome.edits.push((name.clone(), input.clone()));
    }
    round.calls.push(Block::ToolUse {
        id: id.clone(),
        name,
        input,
    });
    match result {
        Ok(applied) => {
            outcome.applied += 1;
            round.viewed |= applied.viewed;
            progress(Progress::ToolApplied {
                call_id: id.clone(),
                result: applied.result.clone(),
                path: applied.changed.clone(),
            });
            if let Some(path) = applied.changed {
                let content = outcome.workspace.text(&path).map(str::to_string);
                let deleted = !outcome.workspace.files().contains_key(&path);
                progress(Progress::FileUpdated {
                    content: content.filter(|c| c.len() <= PREVIEW_MAX_BYTES),
                    deleted,
                    path: path.clone(),
                });
                outcome.changed.insert(path);
            }
            round.results.push((id, applied.result, false));
        }
        Err(error) => {
            outcome.failed += 1;
            progress(Progress::ToolFailed {
                call_id: id.clone(),
                error: error.clone(),
            });
            round.results.push((id, error, true));
        }
    }
}

async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    while !*cancel.borrow_and_update() {
        if cancel.changed().await.is_err() {
            // Nobody can cancel any more.
            std::future::pending::<()>().await;
        }
    }
}

/// The code a provider failure is reported with.
fn provider_code(error: &ProviderError) -> &'static str {
    match error.kind {
        ErrorKind::RateLimited | ErrorKind::Overloaded => "AI_BUSY",
        ErrorKind::Timeout => "AI_TIMEOUT",
        ErrorKind::Auth | ErrorKind::Request => "AI_REFUSED",
        ErrorKind::Connection | ErrorKind::Server | ErrorKind::Protocol => "AI_UNAVAILABLE",
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::ai::provider::{BoxFuture, ModelStream};
    use crate::turns::workspace::{Bounds, EDITOR};

    type Events = Vec<Result<ModelEvent, ProviderError>>;

    /// A provider that answers each request with the next scripted response.
    struct Scripted {
        responses: Mutex<VecDeque<Result<Events, ProviderError>>>,
        requests: Mutex<Vec<ModelRequest>>,
    }

    struct Replay(VecDeque<Result<ModelEvent, ProviderError>>);

    impl ModelStream for Replay {
        fn next(&mut self) -> BoxFuture<'_, Option<Result<ModelEvent, ProviderError>>> {
            let next = self.0.pop_front();
            Box::pin(async move {
                match next {
                    // A gap the test fills with a cancel.
                    Some(Err(e)) if e.message == "hang" => std::future::pending().await,
                    other => other,
                }
            })
        }

        fn request_id(&self) -> Option<&str> {
            Some("req_1")
        }
    }

    impl ModelProvider for Scripted {
        fn name(&self) -> &'static str {
            "scripted"
        }

        fn model(&self) -> &str {
            "m"
        }

        fn start<'a>(
            &'a self,
            request: &'a ModelRequest,
        ) -> BoxFuture<'a, Result<Box<dyn ModelStream>, ProviderError>> {
            self.requests.lock().expect("lock").push(request.clone());
            let next = self
                .responses
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or_else(|| Err(ProviderError::protocol("no more responses")));
            Box::pin(async move {
                next.map(|events| Box::new(Replay(events.into())) as Box<dyn ModelStream>)
            })
        }
    }

    fn call(id: &str, input: Value) -> Vec<Result<ModelEvent, ProviderError>> {
        vec![
            Ok(ModelEvent::ToolStart {
                id: id.into(),
                name: EDITOR.into(),
            }),
            Ok(ModelEvent::ToolDelta {
                id: id.into(),
                json: input.to_string(),
            }),
            Ok(ModelEvent::ToolEnd {
                id: id.into(),
                input: Ok(input),
            }),
        ]
    }

    fn response(
        parts: Vec<Vec<Result<ModelEvent, ProviderError>>>,
        stop: StopReason,
    ) -> Vec<Result<ModelEvent, ProviderError>> {
        let mut events: Vec<_> = parts.into_iter().flatten().collect();
        events.push(Ok(ModelEvent::Usage(Usage {
            input: 10,
            output: 5,
            cache_read: 100,
            cache_write: 0,
        })));
        events.push(Ok(ModelEvent::Stop(stop)));
        events
    }

    fn text(t: &str) -> Vec<Result<ModelEvent, ProviderError>> {
        vec![Ok(ModelEvent::TextDelta(t.into()))]
    }

    fn workspace() -> Workspace {
        Workspace::new(
            [(
                "index.html".to_string(),
                Content::Text("<ul>\n<li>eggs</li>\n</ul>\n".into()),
            )]
            .into_iter()
            .collect(),
            Bounds {
                max_file_bytes: 10_000,
                max_total_bytes: 10_000,
                max_files: 10,
            },
        )
    }

    async fn go(provider: &Scripted, cancel: watch::Receiver<bool>) -> (Outcome, Vec<Progress>) {
        let mut seen = Vec::new();
        let turn = Turn {
            provider,
            system: "sys".into(),
            messages: vec![
                Message::user_text("make a list"),
                Message::assistant_text("Made it."),
                Message::user_text("add milk"),
            ],
            max_rounds: 3,
            max_tokens: 1000,
            started: Instant::now(),
            deadline: Instant::now() + Duration::from_secs(60),
        };
        let outcome = run(turn, workspace(), &mut |p| seen.push(p), cancel).await;
        (outcome, seen)
    }

    fn scripted(responses: Vec<Result<Events, ProviderError>>) -> Scripted {
        Scripted {
            responses: Mutex::new(responses.into()),
            requests: Mutex::new(Vec::new()),
        }
    }

    #[tokio::test]
    async fn a_failed_match_is_answered_and_the_next_round_fixes_it() {
        let provider = scripted(vec![
            Ok(response(
                vec![
                    text("Adding milk."),
                    call(
                        "a",
                        json!({"command": "str_replace", "path": "index.html", "old_str": "<li>Eggs</li>", "new_str": "x"}),
                    ),
                ],
                StopReason::ToolUse,
            )),
            Ok(response(
                vec![call(
                    "b",
                    json!({"command": "str_replace", "path": "index.html", "old_str": "<li>eggs</li>", "new_str": "<li>eggs</li>\n<li>milk</li>"}),
                )],
                StopReason::ToolUse,
            )),
        ]);
        let (_keep, cancel) = watch::channel(false);
        let (outcome, seen) = go(&provider, cancel).await;
        assert_eq!(outcome.end, End::Completed);
        assert_eq!(outcome.rounds, 2);
        assert_eq!((outcome.applied, outcome.failed), (1, 1));
        assert_eq!(outcome.reply, "Adding milk.");
        assert!(outcome.changed.contains("index.html"));
        assert_eq!(
            outcome.workspace.text("index.html"),
            Some("<ul>\n<li>eggs</li>\n<li>milk</li>\n</ul>\n")
        );
        assert_eq!(
            outcome.usage,
            Usage {
                input: 20,
                output: 10,
                cache_read: 200,
                cache_write: 0
            }
        );
        assert_eq!(outcome.request_ids, vec!["req_1", "req_1"]);
        assert!(
            seen.iter()
                .any(|p| matches!(p, Progress::ToolFailed { call_id, .. } if call_id == "a"))
        );
        assert!(seen.contains(&Progress::Round { round: 2 }));
        assert!(seen.iter().any(|p| matches!(p, Progress::FileUpdated { path, content: Some(c), .. } if path == "index.html" && c.contains("milk"))));
        assert!(
            seen.iter().any(
                |p| matches!(p, Progress::ToolDelta { path: Some(p), .. } if p == "index.html")
            )
        );
        // The second request answers the first call, in the next message, first.
        let requests = provider.requests.lock().expect("lock");
        let second = &requests[1].messages;
        assert_eq!(second.len(), 5);
        assert!(
            matches!(&second[3].content[..], [Block::Text(t), Block::ToolUse { id, .. }] if t == "Adding milk." && id == "a")
        );
        assert!(
            matches!(&second[4].content[..], [Block::ToolResult { id, is_error: true, content }] if id == "a" && content.contains("not found"))
        );
        assert_eq!(requests[0].cache_through, Some(1));
    }

    #[tokio::test]
    async fn a_cut_call_is_rejected_with_a_hint_and_nothing_applied() {
        let provider = scripted(vec![
            Ok(vec![
                Ok(ModelEvent::ToolStart {
                    id: "c".into(),
                    name: EDITOR.into(),
                }),
                Ok(ModelEvent::ToolDelta {
                    id: "c".into(),
                    json: "{\"command\":\"create\",\"path\":\"index.html\",\"file_text\":\"<h1>"
                        .into(),
                }),
                Ok(ModelEvent::ToolEnd {
                    id: "c".into(),
                    input: Err("eof".into()),
                }),
                Ok(ModelEvent::Stop(StopReason::MaxTokens)),
            ]),
            Ok(response(
                vec![text("Done in smaller steps.")],
                StopReason::EndTurn,
            )),
        ]);
        let (_keep, cancel) = watch::channel(false);
        let (outcome, seen) = go(&provider, cancel).await;
        assert_eq!(outcome.end, End::Completed);
        assert_eq!(outcome.failed, 1);
        assert!(outcome.changed.is_empty());
        assert!(seen.iter().any(
            |p| matches!(p, Progress::ToolFailed { error, .. } if error.contains("length limit"))
        ));
        assert_eq!(outcome.rounds, 2);
    }

    #[tokio::test]
    async fn provider_errors_and_a_deleted_page_fail_the_turn() {
        let busy = ProviderError {
            kind: ErrorKind::Overloaded,
            message: "Overloaded".into(),
            retry_after: Some(Duration::from_secs(3)),
        };
        let provider = scripted(vec![Err(busy)]);
        let (_keep, cancel) = watch::channel(false);
        let (outcome, _) = go(&provider, cancel).await;
        assert_eq!(
            outcome.end,
            End::Failed {
                code: "AI_BUSY",
                error: "Overloaded".into(),
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert!(!outcome.produced_output());

        let provider = scripted(vec![Ok(response(
            vec![call(
                "d",
                json!({"command": "create", "path": "index.html", "file_text": "   "}),
            )],
            StopReason::EndTurn,
        ))]);
        let (_keep, cancel) = watch::channel(false);
        let (outcome, _) = go(&provider, cancel).await;
        assert!(matches!(
            outcome.end,
            End::Failed {
                code: "NO_PAGE",
                ..
            }
        ));

        let provider = scripted(vec![Ok(vec![
            Ok(ModelEvent::TextDelta("Half".into())),
            Err(ProviderError::new(
                ErrorKind::Connection,
                "the response broke off",
            )),
        ])]);
        let (_keep, cancel) = watch::channel(false);
        let (outcome, _) = go(&provider, cancel).await;
        assert!(matches!(
            outcome.end,
            End::Failed {
                code: "AI_UNAVAILABLE",
                ..
            }
        ));
        assert!(outcome.produced_output());
    }

    #[tokio::test]
    async fn a_cancel_interrupts_at_once() {
        let provider = scripted(vec![Ok(vec![
            Ok(ModelEvent::Usage(Usage {
                input: 7,
                output: 1,
                cache_read: 0,
                cache_write: 0,
            })),
            Ok(ModelEvent::TextDelta("Working".into())),
            Err(ProviderError::protocol("hang")),
        ])]);
        let (stop, cancel) = watch::channel(false);
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let _ = stop.send(true);
            stop
        });
        let (outcome, _) = go(&provider, cancel).await;
        let _ = stopper.await;
        assert_eq!(outcome.end, End::Interrupted);
        assert!(outcome.produced_output());
        assert_eq!(
            outcome.usage.input, 7,
            "a stopped round's tokens still count"
        );
        assert_eq!(outcome.reply, "Working");
    }
}
