//! Anthropic's Messages API, streaming: the request body and the event decoder.
//!
//! The stream is `message_start`, then per content block `content_block_start`, deltas and
//! `content_block_stop`, then `message_delta` (the stop reason and the output tokens) and
//! `message_stop`. `ping` may come anywhere, an `error` event may come after HTTP 200, and event
//! types we do not know are ignored (Anthropic's versioning policy allows new ones).

use std::collections::HashMap;

use serde_json::{Value, json};

use super::model::{
    Block, Decoder, ErrorKind, Message, ModelEvent, ModelRequest, ProviderError, Role, StopReason,
    Usage,
};
use super::sse::Event;

/// The API version sent in `anthropic-version`.
pub const VERSION: &str = "2023-06-01";

/// The request body for `POST /v1/messages`. Cache breakpoints go on the system prompt (which
/// caches the tools too: they come first), on the message the next turn starts from unchanged,
/// and on the last message (so the next round of this turn reads this one from the cache).
pub fn body(model: &str, request: &ModelRequest) -> Value {
    let last = request.messages.len().checked_sub(1);
    let messages: Vec<Value> = request
        .messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let cached = Some(i) == request.cache_through || Some(i) == last;
            message_json(message, cached)
        })
        .collect();
    let tools: Vec<Value> = request
        .tools
        .iter()
        .map(|tool| {
            json!({
                "name": tool.name,
                "description": tool.description,
                "input_schema": tool.input_schema,
            })
        })
        .collect();
    json!({
        "model": model,
        "max_tokens": request.max_tokens,
        "stream": true,
        "system": [{
            "type": "text",
            "text": request.system,
            "cache_control": {"type": "ephemeral"},
        }],
        "tools": tools,
        "messages": messages,
    })
}

fn message_json(message: &Message, cached: bool) -> Value {
    let mut content: Vec<Value> = message
        .content
        .iter()
        .filter_map(|block| match block {
            // The API refuses empty text blocks.
            Block::Text(text) if text.is_empty() => None,
            Block::Text(text) => Some(json!({"type": "text", "text": text})),
            Block::ToolUse { id, name, input } => {
                Some(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
            }
            Block::ToolResult {
                id,
                content,
                is_error,
            } => Some(json!({
                "type": "tool_result",
                "tool_use_id": id,
                "content": content,
                "is_error": is_error,
            })),
        })
        .collect();
    if content.is_empty() {
        content.push(json!({"type": "text", "text": "(no text)"}));
    }
    if cached && let Some(Value::Object(last)) = content.last_mut() {
        last.insert("cache_control".into(), json!({"type": "ephemeral"}));
    }
    json!({
        "role": match message.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        },
        "content": content,
    })
}

/// The kind of an error by its `error.type`.
pub fn error_kind(kind: &str) -> ErrorKind {
    match kind {
        "overloaded_error" => ErrorKind::Overloaded,
        "rate_limit_error" => ErrorKind::RateLimited,
        "authentication_error" | "permission_error" => ErrorKind::Auth,
        "invalid_request_error" | "not_found_error" | "request_too_large" => ErrorKind::Request,
        _ => ErrorKind::Server,
    }
}

/// An error body (`{"type":"error","error":{"type","message"}}`), as an error.
pub fn error_from_body(status_kind: ErrorKind, body: &str) -> ProviderError {
    match serde_json::from_str::<Value>(body) {
        Ok(value) => {
            let kind = value["error"]["type"]
                .as_str()
                .map_or(status_kind, error_kind);
            let message = value["error"]["message"]
                .as_str()
                .unwrap_or("the provider refused the request");
            ProviderError::new(kind, message)
        }
        Err(_) => ProviderError::new(status_kind, "the provider refused the request"),
    }
}

#[derive(Debug)]
enum Open {
    Text,
    Tool { id: String, json: String },
}

/// Decodes one response's events.
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    blocks: HashMap<u64, Open>,
    usage: Usage,
    stopped: bool,
}

impl AnthropicDecoder {
    fn usage_from(&mut self, usage: &Value) -> Option<ModelEvent> {
        let mut seen = false;
        let mut read = |field: &str, slot: &mut u64| {
            if let Some(n) = usage[field].as_u64() {
                *slot = n;
                seen = true;
            }
        };
        let mut next = self.usage;
        read("input_tokens", &mut next.input);
        read("output_tokens", &mut next.output);
        read("cache_read_input_tokens", &mut next.cache_read);
        read("cache_creation_input_tokens", &mut next.cache_write);
        self.usage = next;
        seen.then_some(ModelEvent::Usage(next))
    }
}

impl Decoder for AnthropicDecoder {
    fn event(&mut self, event: Event) -> Result<Vec<ModelEvent>, ProviderError> {
        if event.name == "ping" {
            return Ok(Vec::new());
        }
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| ProviderError::protocol(format!("an event was not JSON: {e}")))?;
        let kind = data["type"].as_str().unwrap_or(event.name.as_str());
        let index = data["index"].as_u64();
        let mut out = Vec::new();
        match kind {
            "message_start" => out.extend(self.usage_from(&data["message"]["usage"])),
            "content_block_start" => {
                let index =
                    index.ok_or_else(|| ProviderError::protocol("a block without index"))?;
                let block = &data["content_block"];
                match block["type"].as_str() {
                    Some("text") => {
                        self.blocks.insert(index, Open::Text);
                        if let Some(text) = block["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(ModelEvent::TextDelta(text.to_string()));
                        }
                    }
                    Some("tool_use") => {
                        let id = block["id"].as_str().unwrap_or_default().to_string();
                        let name = block["name"].as_str().unwrap_or_default().to_string();
                        out.push(ModelEvent::ToolStart {
                            id: id.clone(),
                            name,
                        });
                        self.blocks.insert(
                            index,
                            Open::Tool {
                                id,
                                json: String::new(),
                            },
                        );
                    }
                    // Thinking and other block types carry nothing a turn uses.
                    _ => {}
                }
            }
            "content_block_delta" => {
                let delta = &data["delta"];
                match (
                    index.and_then(|i| self.blocks.get_mut(&i)),
                    delta["type"].as_str(),
                ) {
                    (Some(Open::Text), Some("text_delta")) => {
                        if let Some(text) = delta["text"].as_str() {
                            out.push(ModelEvent::TextDelta(text.to_string()));
                        }
                    }
                    (Some(Open::Tool { id, json }), Some("input_json_delta")) => {
                        if let Some(part) = delta["partial_json"].as_str()
                            && !part.is_empty()
                        {
                            json.push_str(part);
                            out.push(ModelEvent::ToolDelta {
                                id: id.clone(),
                                json: part.to_string(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_stop" => {
                if let Some(Open::Tool { id, json }) = index.and_then(|i| self.blocks.remove(&i)) {
                    out.push(ModelEvent::ToolEnd {
                        id,
                        input: parse_input(&json),
                    });
                }
            }
            "message_delta" => {
                out.extend(self.usage_from(&data["usage"]));
                if let Some(reason) = data["delta"]["stop_reason"].as_str() {
                    out.push(ModelEvent::Stop(match reason {
                        "end_turn" | "stop_sequence" => StopReason::EndTurn,
                        "tool_use" => StopReason::ToolUse,
                        "max_tokens" => StopReason::MaxTokens,
                        other => StopReason::Other(other.to_string()),
                    }));
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let error = &data["error"];
                return Err(ProviderError::new(
                    error_kind(error["type"].as_str().unwrap_or_default()),
                    error["message"]
                        .as_str()
                        .unwrap_or("the provider reported an error"),
                ));
            }
            _ => {}
        }
        Ok(out)
    }

    fn finish(&mut self) -> Result<Vec<ModelEvent>, ProviderError> {
        if self.stopped {
            Ok(Vec::new())
        } else {
            Err(ProviderError::new(
                ErrorKind::Connection,
                "the response ended before the message did",
            ))
        }
    }
}

/// A tool call's input from its JSON text (no fragments at all means `{}`).
pub fn parse_input(json: &str) -> Result<Value, String> {
    if json.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(json).map_err(|e| format!("the call's input was not complete JSON ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::model::Tool;
    use crate::ai::sse::Parser;

    /// Runs a recorded stream through the parser and decoder, fed in pieces of `size` bytes.
    pub(crate) fn decode(stream: &str, size: usize) -> Result<Vec<ModelEvent>, ProviderError> {
        let mut parser = Parser::new();
        let mut decoder = AnthropicDecoder::default();
        let mut out = Vec::new();
        for piece in stream.as_bytes().chunks(size) {
            for event in parser.feed(piece).expect("sse") {
                out.extend(decoder.event(event)?);
            }
        }
        out.extend(decoder.finish()?);
        Ok(out)
    }

    const EDIT: &str = "event: message_start\r\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":1000,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\r\n\r\n\
event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Adding milk.\"}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":0}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"str_replace_based_edit_tool\",\"input\":{}}}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\": \\\"str_replace\\\", \\\"path\\\": \\\"index.html\\\", \\\"old_str\\\": \\\"<li>eggs</li>\\\", \\\"new_str\\\": \\\"<li>eggs</li><li>milk \\\\u\"}}\r\n\r\n\
event: some_future_event\r\ndata: {\"type\":\"some_future_event\"}\r\n\r\n\
event: content_block_delta\r\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"00e9</li>\\\"}\"}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":1}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"delete_file\",\"input\":{}}}\r\n\r\n\
event: content_block_stop\r\ndata: {\"type\":\"content_block_stop\",\"index\":2}\r\n\r\n\
event: message_delta\r\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\r\n\r\n\
event: message_stop\r\ndata: {\"type\":\"message_stop\"}\r\n\r\n";

    #[test]
    fn a_recorded_edit_decodes_the_same_in_any_pieces() {
        let expected_input = json!({
            "command": "str_replace",
            "path": "index.html",
            "old_str": "<li>eggs</li>",
            "new_str": "<li>eggs</li><li>milk é</li>",
        });
        let whole = decode(EDIT, EDIT.len()).expect("decodes");
        for size in [1, 2, 3, 5, 64] {
            assert_eq!(decode(EDIT, size).expect("decodes"), whole, "{size}");
        }
        let texts: String = whole
            .iter()
            .filter_map(|e| match e {
                ModelEvent::TextDelta(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(texts, "Adding milk.");
        let ends: Vec<_> = whole
            .iter()
            .filter_map(|e| match e {
                ModelEvent::ToolEnd { id, input } => Some((id.as_str(), input.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(
            ends,
            vec![("toolu_1", Ok(expected_input)), ("toolu_2", Ok(json!({})))]
        );
        assert!(whole.contains(&ModelEvent::Stop(StopReason::ToolUse)));
        assert_eq!(
            whole.iter().rev().find_map(|e| match e {
                ModelEvent::Usage(u) => Some(*u),
                _ => None,
            }),
            Some(Usage {
                input: 25,
                output: 89,
                cache_read: 0,
                cache_write: 1000
            })
        );
    }

    #[test]
    fn an_error_mid_stream_and_an_early_end_are_errors() {
        let overloaded = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n\
event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        let error = decode(overloaded, 7).expect_err("an error");
        assert_eq!(error.kind, ErrorKind::Overloaded);
        assert!(error.is_transient());
        let cut = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{}}}\n\n";
        assert_eq!(
            decode(cut, 100).expect_err("cut").kind,
            ErrorKind::Connection
        );
    }

    #[test]
    fn max_tokens_inside_a_call_ends_it_with_an_unparsable_input() {
        let stream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":1,\"output_tokens\":1}}}\n\n\
event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"id\":\"t\",\"name\":\"str_replace_based_edit_tool\",\"input\":{}}}\n\n\
event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"command\\\":\\\"create\\\",\\\"file_text\\\":\\\"<html>\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"max_tokens\"},\"usage\":{\"output_tokens\":4096}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let events = decode(stream, 9).expect("decodes");
        assert!(
            events
                .iter()
                .any(|e| matches!(e, ModelEvent::ToolEnd { input: Err(_), .. }))
        );
        assert!(events.contains(&ModelEvent::Stop(StopReason::MaxTokens)));
    }

    #[test]
    fn the_body_places_three_cache_breakpoints_and_drops_empty_text() {
        let request = ModelRequest {
            system: "You edit pages.".into(),
            messages: vec![
                Message::user_text("make a list"),
                Message {
                    role: Role::Assistant,
                    content: vec![Block::Text(String::new())],
                },
                Message::user_text("add milk"),
                Message {
                    role: Role::Assistant,
                    content: vec![Block::ToolUse {
                        id: "t1".into(),
                        name: "delete_file".into(),
                        input: json!({"path": "a.css"}),
                    }],
                },
                Message {
                    role: Role::User,
                    content: vec![Block::ToolResult {
                        id: "t1".into(),
                        content: "deleted".into(),
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "delete_file",
                description: "Deletes a file.",
                input_schema: json!({"type": "object"}),
            }],
            max_tokens: 1000,
            cache_through: Some(1),
        };
        let body = body("claude-x", &request);
        let text = body.to_string();
        assert_eq!(text.matches("cache_control").count(), 3, "{text}");
        assert_eq!(body["stream"], true);
        assert_eq!(body["messages"][1]["content"][0]["text"], "(no text)");
        assert_eq!(body["messages"][4]["content"][0]["tool_use_id"], "t1");
        assert!(body["messages"][4]["content"][0]["cache_control"].is_object());
    }
}
