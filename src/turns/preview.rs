//! Reading a tool call's input while it streams, for the live preview: the text of `file_text`
//! or `new_str` as it arrives (decoded, in pieces), and `command` and `path` once complete. The
//! input is a JSON object sent in fragments that may split anything, an escape included; each
//! fragment is read once.

/// What a fragment revealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    /// A short field, complete: `command` or `path`.
    Field { name: String, value: String },
    /// More of the text being written (`file_text` or `new_str`).
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Before the object's `{`.
    Start,
    /// Expecting a key (or the end).
    Key,
    InKey,
    Colon,
    Value,
    /// In a string value; `kind` says what to do with it.
    InString(Kind),
    /// In a nested object or array, `depth` deep.
    Nested {
        depth: u32,
        in_string: bool,
    },
    /// In a number or literal.
    Scalar,
    AfterValue,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Streamed as it arrives.
    Text,
    /// Kept whole (`command`, `path`), up to a bound.
    Field,
    Skip,
}

/// Reads one call's input.
#[derive(Debug)]
pub struct Preview {
    state: State,
    key: String,
    value: String,
    /// An escape under way: the bytes after the backslash.
    escape: Option<String>,
    /// A high surrogate waiting for its low half.
    surrogate: Option<u16>,
    /// Inside a nested string, the last character was a backslash.
    nested_escape: bool,
}

const FIELD_MAX: usize = 1024;

impl Default for Preview {
    fn default() -> Self {
        Preview {
            state: State::Start,
            key: String::new(),
            value: String::new(),
            escape: None,
            surrogate: None,
            nested_escape: false,
        }
    }
}

impl Preview {
    pub fn feed(&mut self, fragment: &str) -> Vec<Reveal> {
        let mut out = Vec::new();
        let mut text = String::new();
        for c in fragment.chars() {
            self.step(c, &mut text, &mut out);
        }
        if !text.is_empty() {
            out.push(Reveal::Text(text));
        }
        out
    }

    fn step(&mut self, c: char, text: &mut String, out: &mut Vec<Reveal>) {
        match self.state.clone() {
            State::Start => {
                if c == '{' {
                    self.state = State::Key;
                }
            }
            State::Key => match c {
                '"' => {
                    self.key.clear();
                    self.state = State::InKey;
                }
                '}' => self.state = State::Done,
                _ => {}
            },
            State::InKey => match (self.escape.is_some(), c) {
                (false, '\\') => self.escape = Some(String::new()),
                (false, '"') => self.state = State::Colon,
                (true, _) => {
                    // Keys we care about have no escapes; keep the character as is.
                    self.escape = None;
                    self.key.push(c);
                }
                (false, _) => self.key.push(c),
            },
            State::Colon => {
                if c == ':' {
                    self.state = State::Value;
                }
            }
            State::Value => match c {
                '"' => {
                    let kind = match self.key.as_str() {
                        "file_text" | "new_str" => Kind::Text,
                        "command" | "path" => Kind::Field,
                        _ => Kind::Skip,
                    };
                    self.value.clear();
                    self.state = State::InString(kind);
                }
                '{' | '[' => {
                    self.state = State::Nested {
                        depth: 1,
                        in_string: false,
                    }
                }
                c if c.is_whitespace() => {}
                _ => self.state = State::Scalar,
            },
            State::InString(kind) => self.string_char(kind, c, text, out),
            State::Nested { depth, in_string } => {
                let (depth, in_string) = match (in_string, c) {
                    (true, _) if self.nested_escape => {
                        self.nested_escape = false;
                        (depth, true)
                    }
                    (true, '\\') => {
                        self.nested_escape = true;
                        (depth, true)
                    }
                    (true, '"') => (depth, false),
                    (true, _) => (depth, true),
                    (false, '"') => (depth, true),
                    (false, '{' | '[') => (depth + 1, false),
                    (false, '}' | ']') => (depth - 1, false),
                    (false, _) => (depth, false),
                };
                self.state = if depth == 0 {
                    State::AfterValue
                } else {
                    State::Nested { depth, in_string }
                };
            }
            State::Scalar => match c {
                ',' => self.state = State::Key,
                '}' => self.state = State::Done,
                _ => {}
            },
            State::AfterValue => match c {
                ',' => self.state = State::Key,
                '}' => self.state = State::Done,
                _ => {}
            },
            State::Done => {}
        }
    }

    fn string_char(&mut self, kind: Kind, c: char, text: &mut String, out: &mut Vec<Reveal>) {
        let decoded = match self.escape.as_mut() {
            None if c == '\\' => {
                self.escape = Some(String::new());
                return;
            }
            None if c == '"' => {
                if kind == Kind::Field {
                    out.push(Reveal::Field {
                        name: self.key.clone(),
                        value: std::mem::take(&mut self.value),
                    });
                }
                self.state = State::AfterValue;
                return;
            }
            None => Some(c),
            Some(escape) => {
                escape.push(c);
                let complete = match escape.as_bytes()[0] {
                    b'u' => escape.len() == 5,
                    _ => true,
                };
                if !complete {
                    return;
                }
                let escape = self.escape.take().unwrap_or_default();
                self.unescape(&escape)
            }
        };
        if let Some(c) = decoded {
            match kind {
                Kind::Text => text.push(c),
                Kind::Field if self.value.len() < FIELD_MAX => self.value.push(c),
                _ => {}
            }
        }
    }

    fn unescape(&mut self, escape: &str) -> Option<char> {
        let simple = match escape {
            "\"" => Some('"'),
            "\\" => Some('\\'),
            "/" => Some('/'),
            "b" => Some('\u{8}'),
            "f" => Some('\u{c}'),
            "n" => Some('\n'),
            "r" => Some('\r'),
            "t" => Some('\t'),
            _ => None,
        };
        if simple.is_some() {
            return simple;
        }
        let unit = u16::from_str_radix(escape.get(1..)?, 16).ok()?;
        match (self.surrogate.take(), unit) {
            (None, 0xD800..=0xDBFF) => {
                self.surrogate = Some(unit);
                None
            }
            (Some(high), 0xDC00..=0xDFFF) => {
                let code =
                    0x10000 + ((u32::from(high) - 0xD800) << 10) + (u32::from(unit) - 0xDC00);
                char::from_u32(code)
            }
            (_, unit) => char::from_u32(u32::from(unit)).or(Some('\u{FFFD}')),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str, size: usize) -> (Vec<(String, String)>, String) {
        let mut preview = Preview::default();
        let mut fields = Vec::new();
        let mut text = String::new();
        let chars: Vec<char> = input.chars().collect();
        for piece in chars.chunks(size) {
            let piece: String = piece.iter().collect();
            for reveal in preview.feed(&piece) {
                match reveal {
                    Reveal::Field { name, value } => fields.push((name, value)),
                    Reveal::Text(t) => text.push_str(&t),
                }
            }
        }
        (fields, text)
    }

    #[test]
    fn text_and_fields_arrive_however_the_input_is_split() {
        let input = serde_json::json!({
            "command": "create",
            "view_range": [1, {"a": "}]\""}],
            "insert_line": 3,
            "path": "css/\"site\".css",
            "file_text": "<h1>Caf\u{e9} \u{1F600}</h1>\n\t\"quoted\" \\ back",
        })
        .to_string();
        // serde_json writes non-ASCII as is; force escapes too.
        let escaped = input
            .replace('\u{e9}', "\\u00e9")
            .replace('\u{1F600}', "\\ud83d\\ude00");
        for source in [&input, &escaped] {
            for size in [1, 2, 3, 7, 1000] {
                let (fields, text) = run(source, size);
                assert_eq!(
                    fields,
                    vec![
                        ("command".to_string(), "create".to_string()),
                        ("path".to_string(), "css/\"site\".css".to_string()),
                    ],
                    "{size}"
                );
                assert_eq!(
                    text, "<h1>Caf\u{e9} \u{1F600}</h1>\n\t\"quoted\" \\ back",
                    "{size}"
                );
            }
        }
    }

    #[test]
    fn new_str_streams_and_other_strings_do_not() {
        let (fields, text) = run(
            r#"{"command":"str_replace","path":"index.html","old_str":"<li>a</li>","new_str":"<li>a</li><li>b</li>"}"#,
            4,
        );
        assert_eq!(fields.len(), 2);
        assert_eq!(text, "<li>a</li><li>b</li>");
    }
}
