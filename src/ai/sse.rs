//! A parser for server-sent events (the `text/event-stream` format both model providers stream),
//! fed with the response body's chunks as they arrive.
//!
//! It follows the WHATWG rules that matter here: lines end in LF, CRLF or a lone CR; a line
//! starting with `:` is a comment (a keep-alive); `data:` lines of one event are joined with LF;
//! one optional space after the colon is dropped; an empty line ends the event; an event with no
//! data is not dispatched. A chunk may end anywhere, inside a line or inside a UTF-8 character.

/// One event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field; empty when none was sent (the format's default type is "message").
    pub name: String,
    pub data: String,
    /// The `id:` field, when one was sent.
    pub id: Option<String>,
}

/// Turns chunks of a stream into events.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line not yet ended.
    line: Vec<u8>,
    /// The last chunk ended in CR: an LF starting the next one belongs to that line end.
    after_cr: bool,
    event: Event,
    has_data: bool,
    /// Bytes received in the current line, for the line-length bound.
    limit: usize,
}

/// Longest line accepted (a whole file's text can arrive in one `data:` line).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// The stream broke the format's bounds.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("an event-stream line was longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

impl Parser {
    pub fn new() -> Self {
        Parser {
            limit: MAX_LINE_BYTES,
            ..Parser::default()
        }
    }

    /// Feeds one chunk; returns the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<Event>, SseError> {
        let mut events = Vec::new();
        let mut rest = chunk;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..end]);
            if self.line.len() > self.limit {
                return Err(SseError::LineTooLong);
            }
            let line = std::mem::take(&mut self.line);
            if let Some(event) = self.line_ended(&line) {
                events.push(event);
            }
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        self.line.extend_from_slice(rest);
        if self.line.len() > self.limit {
            return Err(SseError::LineTooLong);
        }
        Ok(events)
    }

    fn line_ended(&mut self, line: &[u8]) -> Option<Event> {
        if line.is_empty() {
            let event = std::mem::take(&mut self.event);
            let dispatch = std::mem::take(&mut self.has_data);
            return dispatch.then_some(event);
        }
        let line = String::from_utf8_lossy(line);
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line.as_ref(), ""),
        };
        match field {
            "event" => self.event.name = value.to_string(),
            "data" => {
                if self.has_data {
                    self.event.data.push('\n');
                }
                self.event.data.push_str(value);
                self.has_data = true;
            }
            "id" if !value.contains('\0') => self.event.id = Some(value.to_string()),
            _ => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(stream: &[u8], sizes: &[usize]) -> Vec<Event> {
        let mut parser = Parser::new();
        let mut events = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = sizes[i % sizes.len()].min(rest.len()).max(1);
            events.extend(parser.feed(&rest[..n]).expect("parses"));
            rest = &rest[n..];
            i += 1;
        }
        events
    }

    #[test]
    fn events_survive_any_chunking_and_any_line_end() {
        let text = "event: message_start\ndata: {\"a\":1}\n\n: ping\n\nevent: x\r\ndata: one\r\ndata:two\r\n\r\ndata: é☃\rdata:  lead\r\r";
        let expected = vec![
            Event {
                name: "message_start".into(),
                data: "{\"a\":1}".into(),
                id: None,
            },
            Event {
                name: "x".into(),
                data: "one\ntwo".into(),
                id: None,
            },
            Event {
                name: String::new(),
                data: "é☃\n lead".into(),
                id: None,
            },
        ];
        for sizes in [&[1][..], &[2], &[3, 1], &[7], &[1000]] {
            assert_eq!(
                parse_in_pieces(text.as_bytes(), sizes),
                expected,
                "{sizes:?}"
            );
        }
    }

    #[test]
    fn comments_and_unknown_fields_dispatch_nothing_and_ids_are_kept() {
        let mut parser = Parser::new();
        let events = parser
            .feed(b": keep-alive\n\nretry: 10\nfoo: bar\n\nid: 7\ndata\n\n")
            .expect("parses");
        assert_eq!(
            events,
            vec![Event {
                name: String::new(),
                data: String::new(),
                id: Some("7".into())
            }]
        );
        // A stream that ends without the blank line dispatches nothing.
        assert!(parser.feed(b"data: cut").expect("parses").is_empty());
    }

    #[test]
    fn a_line_past_the_bound_is_an_error() {
        let mut parser = Parser {
            limit: 8,
            ..Parser::default()
        };
        assert_eq!(parser.feed(b"data: 1234567"), Err(SseError::LineTooLong));
    }
}
