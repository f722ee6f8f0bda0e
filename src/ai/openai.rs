//! OpenAI-compatible Chat Completions, streaming: OpenAI itself and local servers (Ollama,
//! llama.cpp's server, vLLM).
//!
//! Each event's data is a `chat.completion.chunk`; the stream ends with `data: [DONE]`. Tool
//! calls arrive as fragments keyed by `index`, which some servers omit (then a new `id` starts a
//! new call), and some send a call's arguments before its name. With `include_usage` a last chunk
//! carries the usage and no choices.

use serde_json::{Value, json};

use super::model::{
    Block, Decoder, ErrorKind, Message, ModelEvent, ModelRequest, ProviderError, Role, StopReason,
    Usage,
};
use super::sse::Event;

/// The request body for `POST {base}/chat/completions`.
pub fn body(model: &str, request: &ModelRequest) -> Value {
    let mut messages = vec![json!({"role": "system", "content": request.system})];
    for message in &request.messages {
        messages.extend(message_json(message));
    }
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema,
                },
            })
        })
        .collect();
    json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": tools,
        "messages": messages,
    })
}

/// One of our messages as Chat Completions messages: tool results become `tool` messages of
/// their own, placed first.
fn message_json(message: &Message) -> Vec<Value> {
    let text: String = message
        .content
        .iter()
        .filter_map(|block| match block {
            Block::Text(text) => Some(text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n\n");
    match message.role {
        Role::User => {
            let mut out: Vec<Value> = message
                .content
                .iter()
                .filter_map(|block| match block {
                    Block::ToolResult {
                        id,
                        content,
                        is_error,
                    } => Some(json!({
                        "role": "tool",
                        "tool_call_id": id,
                        "content": if *is_error { format!("Error: {content}") } else { content.clone() },
                    })),
                    _ => None,
                })
                .collect();
            if !text.is_empty() {
                out.push(json!({"role": "user", "content": text}));
            }
            out
        }
        Role::Assistant => {
            let calls: Vec<Value> = message
                .content
                .iter()
                .filter_map(|block| match block {
                    Block::ToolUse { id, name, input } => Some(json!({
                        "id": id,
                        "type": "function",
                        "function": {"name": name, "arguments": input.to_string()},
                    })),
                    _ => None,
                })
                .collect();
            let mut out = json!({"role": "assistant", "content": text});
            if !calls.is_empty() {
                out["tool_calls"] = Value::Array(calls);
            }
            vec![out]
        }
    }
}

/// An error body (`{"error": {"message", "type"}}`), as an error.
pub fn error_from_body(status_kind: ErrorKind, body: &str) -> ProviderError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| "the provider refused the request".to_string());
    ProviderError::new(status_kind, message)
}

#[derive(Debug)]
struct Call {
    index: Option<u64>,
    id: String,
    name: String,
    arguments: String,
    /// ToolStart sent (the name is known).
    started: bool,
}

/// Decodes one response's chunks.
#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    calls: Vec<Call>,
    stop: Option<StopReason>,
    done: bool,
}

impl OpenAiDecoder {
    fn call_for(&mut self, fragment: &Value) -> usize {
        let index = fragment["index"].as_u64();
        let id = fragment["id"].as_str().filter(|id| !id.is_empty());
        let found = match (index, id) {
            (Some(index), _) => self.calls.iter().position(|c| c.index == Some(index)),
            (None, Some(id)) => self.calls.iter().position(|c| c.id == id),
            (None, None) => self.calls.len().checked_sub(1),
        };
        match found {
            Some(position) => position,
            None => {
                let n = self.calls.len();
                self.calls.push(Call {
                    index,
                    id: id.map_or_else(|| format!("call_{n}"), str::to_string),
                    name: String::new(),
                    arguments: String::new(),
                    started: false,
                });
                n
            }
        }
    }

    fn end_calls(&mut self, out: &mut Vec<ModelEvent>) {
        for call in self.calls.drain(..) {
            if !call.started {
                out.push(ModelEvent::ToolStart {
                    id: call.id.clone(),
                    name: call.name.clone(),
                });
            }
            out.push(ModelEvent::ToolEnd {
                id: call.id,
                input: super::anthropic::parse_input(&call.arguments),
            });
        }
    }
}

impl Decoder for OpenAiDecoder {
    fn event(&mut self, event: Event) -> Result<Vec<ModelEvent>, ProviderError> {
        let mut out = Vec::new();
        if event.data.trim() == "[DONE]" {
            self.done = true;
            self.end_calls(&mut out);
            return Ok(out);
        }
        let chunk: Value = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::protocol(format!("a chunk was not JSON: {e}")))?;
        if let Some(error) = chunk.get("error") {
            let message = error["message"]
                .as_str()
                .unwrap_or("the provider reported an error");
            let kind = match error["code"].as_u64().or_else(|| error["status"].as_u64()) {
                Some(status) => ProviderError::kind_of_status(status as u16),
                None => ErrorKind::Server,
            };
            return Err(ProviderError::new(kind, message));
        }
        if let Some(choice) = chunk["choices"].get(0) {
            let delta = &choice["delta"];
            if let Some(text) = delta["content"].as_str().filter(|t| !t.is_empty()) {
                out.push(ModelEvent::TextDelta(text.to_string()));
            }
            for fragment in delta["tool_calls"].as_array().into_iter().flatten() {
                let position = self.call_for(fragment);
                let call = &mut self.calls[position];
                let function = &fragment["function"];
                if let Some(name) = function["name"].as_str().filter(|n| !n.is_empty()) {
                    call.name = name.to_string();
                }
                let arguments = function["arguments"].as_str().unwrap_or_default();
                call.arguments.push_str(arguments);
                if !call.started && !call.name.is_empty() {
                    call.started = true;
                    out.push(ModelEvent::ToolStart {
                        id: call.id.clone(),
                        name: call.name.clone(),
                    });
                    // Arguments that came before the name.
                    if !call.arguments.is_empty() {
                        out.push(ModelEvent::ToolDelta {
                            id: call.id.clone(),
                            json: call.arguments.clone(),
                        });
                    }
                } else if call.started && !arguments.is_empty() {
                    out.push(ModelEvent::ToolDelta {
                        id: call.id.clone(),
                        json: arguments.to_string(),
                    });
                }
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.end_calls(&mut out);
                let stop = match reason {
                    "stop" => StopReason::EndTurn,
                    "tool_calls" | "function_call" => StopReason::ToolUse,
                    "length" => StopReason::MaxTokens,
                    other => StopReason::Other(other.to_string()),
                };
                self.stop = Some(stop.clone());
                out.push(ModelEvent::Stop(stop));
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            let prompt = usage["prompt_tokens"].as_u64().unwrap_or(0);
            let cached = usage["prompt_tokens_details"]["cached_tokens"]
                .as_u64()
                .unwrap_or(0);
            out.push(ModelEvent::Usage(Usage {
                input: prompt.saturating_sub(cached),
                output: usage["completion_tokens"].as_u64().unwrap_or(0),
                cache_read: cached,
                cache_write: 0,
            }));
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelEvent>, ProviderError> {
        // Some servers close without `[DONE]` after the finish reason; none close earlier.
        if self.done || self.stop.is_some() {
            let mut out = Vec::new();
            self.end_calls(&mut out);
            Ok(out)
        } else {
            Err(ProviderError::new(
                ErrorKind::Connection,
                "the response ended before the message did",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::sse::Parser;

    fn decode(stream: &str, size: usize) -> Result<Vec<ModelEvent>, ProviderError> {
        let mut parser = Parser::new();
        let mut decoder = OpenAiDecoder::default();
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(size) {
            for event in parser.feed(piece).expect("sse") {
                out.extend(decoder.event(event)?);
            }
        }
        out.extend(decoder.finish()?);
        Ok(out)
    }

    fn ends(events: &[ModelEvent]) -> Vec<(String, Result<Value, String>)> {
        events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolEnd { id, input } => Some((id.clone(), input.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_two_calls_usage_and_done() {
        let stream = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Sure\"}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\",\"function\":{\"name\":\"delete_file\",\"arguments\":\"\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"path\\\":\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"function\":{\"name\":\"delete_file\",\"arguments\":\"{\\\"path\\\":\\\"b.css\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"a.css\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":120,\"completion_tokens\":30,\"prompt_tokens_details\":{\"cached_tokens\":100}}}\n\n\
data: [DONE]\n\n";
        let events = decode(stream, 5).expect("decodes");
        assert_eq!(decode(stream, 1000).expect("decodes"), events);
        assert_eq!(events[0], ModelEvent::TextDelta("Sure".into()));
        assert_eq!(
            ends(&events),
            vec![
                ("call_a".to_string(), Ok(json!({"path": "a.css"}))),
                ("call_b".to_string(), Ok(json!({"path": "b.css"}))),
            ]
        );
        assert!(events.contains(&ModelEvent::Stop(StopReason::ToolUse)));
        assert!(events.contains(&ModelEvent::Usage(Usage {
            input: 20,
            output: 30,
            cache_read: 100,
            cache_write: 0
        })));
    }

    #[test]
    fn servers_that_omit_the_index_or_send_arguments_before_the_name() {
        // Ollama: no index, the whole call in one chunk.
        let ollama = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c1\",\"function\":{\"name\":\"delete_file\",\"arguments\":\"{\\\"path\\\":\\\"x.js\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"id\":\"c2\",\"function\":{\"name\":\"delete_file\",\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n";
        let events = decode(ollama, 3).expect("decodes without [DONE] after a finish reason");
        assert_eq!(
            ends(&events),
            vec![
                ("c1".to_string(), Ok(json!({"path": "x.js"}))),
                ("c2".to_string(), Ok(json!({}))),
            ]
        );
        // Arguments first, then the name.
        let late = "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"arguments\":\"{\\\"path\\\":\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"delete_file\",\"arguments\":\"\\\"y\\\"}\"}}]}}]}\n\n\
data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\ndata: [DONE]\n\n";
        let events = decode(late, 4).expect("decodes");
        let starts = events
            .iter()
            .filter(|e| matches!(e, ModelEvent::ToolStart { name, .. } if name == "delete_file"))
            .count();
        assert_eq!(starts, 1);
        let json: String = events
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolDelta { json, .. } => Some(json.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(json, "{\"path\":\"y\"}");
        assert!(events.contains(&ModelEvent::Stop(StopReason::MaxTokens)));
    }

    #[test]
    fn an_error_chunk_and_an_early_end_are_errors() {
        let error = "data: {\"error\":{\"message\":\"model overloaded\",\"code\":503}}\n\n";
        assert_eq!(decode(error, 8).expect_err("error").kind, ErrorKind::Server);
        let cut = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        assert_eq!(decode(cut, 8).expect_err("cut").kind, ErrorKind::Connection);
    }

    #[test]
    fn tool_results_come_back_as_tool_messages_first() {
        let request = ModelRequest {
            system: "s".into(),
            messages: vec![
                Message {
                    role: Role::Assistant,
                    content: vec![
                        Block::Text("Deleting.".into()),
                        Block::ToolUse {
                            id: "c1".into(),
                            name: "delete_file".into(),
                            input: json!({"path": "a"}),
                        },
                    ],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        id: "c1".into(),
                        content: "no such file".into(),
                        is_error: true,
                    }],
                },
            ],
            tools: vec![],
            max_tokens: 10,
            cache_through: None,
        };
        let body = body("m", &request);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(
            body["messages"][1]["tool_calls"][0]["function"]["arguments"],
            "{\"path\":\"a\"}"
        );
        assert_eq!(body["messages"][2]["role"], "tool");
        assert_eq!(body["messages"][2]["content"], "Error: no such file");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }
}
