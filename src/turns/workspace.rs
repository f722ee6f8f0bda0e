//! The turn's working copy of an aide's files, and the two tools that change it: the editor
//! (the input shape of Anthropic's text editor tool: `view`, `create`, `str_replace`, `insert`)
//! and `delete_file`. Every call is answered: with what changed, or with an error the model can
//! act on (a failed match names how many matched and shows the nearest lines).
//!
//! Nothing here touches storage or the database: the turn commits the working copy's changes at
//! the end, in one transaction, or not at all.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::files::{FilePath, content_type_for};

/// The editor tool's name: the same as Anthropic's built-in, so one decoder serves both.
pub const EDITOR: &str = "str_replace_based_edit_tool";
pub const DELETE: &str = "delete_file";
/// The page itself: it must exist when the turn ends, and cannot be deleted.
pub const PAGE: &str = "index.html";

/// The working copy's bounds, from the owner's plan.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub max_file_bytes: u64,
    pub max_total_bytes: u64,
    pub max_files: u32,
}

/// One file: text the model can read and edit, or bytes it can only see listed.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    Text(String),
    Binary { size: u64 },
}

impl Content {
    fn size(&self) -> u64 {
        match self {
            Content::Text(text) => text.len() as u64,
            Content::Binary { size } => *size,
        }
    }
}

/// What a call did.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The answer for the model.
    pub result: String,
    /// The file it changed (None for `view`).
    pub changed: Option<String>,
    /// `view` was used: the model asked to read, so it gets another round.
    pub viewed: bool,
}

#[derive(Debug, Clone)]
pub struct Workspace {
    files: BTreeMap<String, Content>,
    bounds: Bounds,
}

#[derive(Debug, Deserialize)]
struct EditorInput {
    command: String,
    path: Option<String>,
    file_text: Option<String>,
    old_str: Option<String>,
    new_str: Option<String>,
    insert_line: Option<i64>,
    view_range: Option<Vec<i64>>,
}

/// Whether files at `path` are text the model reads and writes.
pub fn is_text(path: &FilePath) -> bool {
    let content_type = content_type_for(path, None);
    content_type.starts_with("text/")
        || content_type.starts_with("application/json")
        || content_type.starts_with("image/svg+xml")
}

/// The tools' descriptions and input schemas, as given to the model.
pub fn tools() -> Vec<crate::ai::model::Tool> {
    vec![
        crate::ai::model::Tool {
            name: EDITOR,
            description: "View, create and edit the page's text files. `view` shows a file with line numbers (or, with an empty path, lists the files). `create` writes a whole file. `str_replace` replaces `old_str`, which must match exactly once, with `new_str`. `insert` inserts `new_str` after line `insert_line` (0 for the top). Always write complete text: never placeholders such as \"rest of the file unchanged\".",
            input_schema: json!({
                "type": "object",
                "properties": {
                    "command": {"type": "string", "enum": ["view", "create", "str_replace", "insert"]},
                    "path": {"type": "string", "description": "A relative path such as index.html or css/site.css"},
                    "file_text": {"type": "string"},
                    "old_str": {"type": "string"},
                    "new_str": {"type": "string"},
                    "insert_line": {"type": "integer", "minimum": 0},
                    "view_range": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                },
                "required": ["command", "path"],
            }),
        },
        crate::ai::model::Tool {
            name: DELETE,
            description: "Deletes a file of the page. index.html cannot be deleted.",
            input_schema: json!({
                "type": "object",
                "properties": {"path": {"type": "string"}},
                "required": ["path"],
            }),
        },
    ]
}

impl Workspace {
    pub fn new(files: BTreeMap<String, Content>, bounds: Bounds) -> Self {
        Workspace { files, bounds }
    }

    pub fn files(&self) -> &BTreeMap<String, Content> {
        &self.files
    }

    pub fn text(&self, path: &str) -> Option<&str> {
        match self.files.get(path) {
            Some(Content::Text(text)) => Some(text),
            _ => None,
        }
    }

    /// Applies one call of tool `name` with `input`.
    pub fn apply(&mut self, name: &str, input: &Value) -> Result<Applied, String> {
        match name {
            EDITOR => {
                let input: EditorInput = serde_json::from_value(input.clone())
                    .map_err(|e| format!("The input does not fit the tool: {e}."))?;
                self.edit(input)
            }
            DELETE => {
                let path = input["path"]
                    .as_str()
                    .ok_or("`path` is required: the file to delete.")?;
                self.delete(path)
            }
            other => Err(format!(
                "There is no tool named {other:?}; use {EDITOR} or {DELETE}."
            )),
        }
    }

    fn edit(&mut self, input: EditorInput) -> Result<Applied, String> {
        let raw_path = input.path.as_deref().unwrap_or_default();
        if input.command == "view" && matches!(raw_path.trim_start_matches('/'), "" | ".") {
            return Ok(Applied {
                result: self.listing(),
                changed: None,
                viewed: true,
            });
        }
        let path = parse_path(raw_path)?;
        match input.command.as_str() {
            "view" => {
                let text = self.existing_text(&path)?;
                Ok(Applied {
                    result: numbered(text, input.view_range.as_deref())?,
                    changed: None,
                    viewed: true,
                })
            }
            "create" => {
                let text = input
                    .file_text
                    .ok_or("`file_text` is required for create: the whole file.")?;
                if !is_text(&path) {
                    return Err(format!(
                        "{} is not a text file; only text files (.html, .css, .js, .json, .svg, .txt, .md, .csv) can be written.",
                        path.as_str()
                    ));
                }
                let before = self.text(path.as_str()).unwrap_or_default();
                refuse_placeholders(&text, before)?;
                let existed = self.files.contains_key(path.as_str());
                let size = text.len();
                self.put(&path, text)?;
                Ok(self.changed(
                    &path,
                    format!(
                        "{} {} ({size} bytes).",
                        if existed { "Rewrote" } else { "Created" },
                        path.as_str()
                    ),
                ))
            }
            "str_replace" => {
                let old = input
                    .old_str
                    .filter(|s| !s.is_empty())
                    .ok_or("`old_str` is required for str_replace: text that occurs exactly once in the file.")?;
                let new = input.new_str.unwrap_or_default();
                let text = self.existing_text(&path)?;
                let at = find_once(text, &old, path.as_str())?;
                refuse_placeholders(&new, &old)?;
                let mut next = String::with_capacity(text.len() - old.len() + new.len());
                next.push_str(&text[..at]);
                next.push_str(&new);
                next.push_str(&text[at + old.len()..]);
                let line = text[..at].matches('\n').count() + 1;
                self.put(&path, next)?;
                Ok(self.changed(
                    &path,
                    format!("Replaced the text at line {line} of {}.", path.as_str()),
                ))
            }
            "insert" => {
                let new = input
                    .new_str
                    .ok_or("`new_str` is required for insert: the text to insert.")?;
                let after = input
                    .insert_line
                    .ok_or("`insert_line` is required for insert: the line to insert after (0 for the top).")?;
                let text = self.existing_text(&path)?;
                refuse_placeholders(&new, text)?;
                let lines = text.lines().count() as i64;
                if !(0..=lines).contains(&after) {
                    return Err(format!(
                        "`insert_line` must be from 0 to {lines} (the file has {lines} lines)."
                    ));
                }
                let at = if after == 0 {
                    0
                } else {
                    text.match_indices('\n')
                        .nth(after as usize - 1)
                        .map_or(text.len(), |(i, _)| i + 1)
                };
                let mut next = String::with_capacity(text.len() + new.len() + 1);
                next.push_str(&text[..at]);
                if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
                    next.push('\n');
                }
                next.push_str(&new);
                if !new.ends_with('\n') && at < text.len() {
                    next.push('\n');
                }
                next.push_str(&text[at..]);
                self.put(&path, next)?;
                Ok(self.changed(
                    &path,
                    format!("Inserted the text after line {after} of {}.", path.as_str()),
                ))
            }
            other => Err(format!(
                "Unknown command {other:?}: use view, create, str_replace or insert."
            )),
        }
    }

    fn delete(&mut self, raw: &str) -> Result<Applied, String> {
        let path = parse_path(raw)?;
        if path.as_str() == PAGE {
            return Err(format!(
                "{PAGE} is the page itself and cannot be deleted; rewrite it with create instead."
            ));
        }
        if self.files.remove(path.as_str()).is_none() {
            return Err(format!(
                "There is no file {}. {}",
                path.as_str(),
                self.listing()
            ));
        }
        Ok(Applied {
            result: format!("Deleted {}.", path.as_str()),
            changed: Some(path.as_str().to_string()),
            viewed: false,
        })
    }

    fn changed(&self, path: &FilePath, result: String) -> Applied {
        Applied {
            result,
            changed: Some(path.as_str().to_string()),
            viewed: false,
        }
    }

    fn existing_text(&self, path: &FilePath) -> Result<&str, String> {
        match self.files.get(path.as_str()) {
            Some(Content::Text(text)) => Ok(text),
            Some(Content::Binary { .. }) => Err(format!(
                "{} is not a text file; it cannot be viewed or edited.",
                path.as_str()
            )),
            None => Err(format!(
                "There is no file {}; use create to make it. {}",
                path.as_str(),
                self.listing()
            )),
        }
    }

    /// Stores `text` at `path` within the bounds.
    fn put(&mut self, path: &FilePath, text: String) -> Result<(), String> {
        let size = text.len() as u64;
        if size > self.bounds.max_file_bytes {
            return Err(format!(
                "That would make {} {size} bytes; a file may hold at most {} bytes on this plan. Split it into smaller files.",
                path.as_str(),
                self.bounds.max_file_bytes
            ));
        }
        let others: u64 = self
            .files
            .iter()
            .filter(|(p, _)| p.as_str() != path.as_str())
            .map(|(_, c)| c.size())
            .sum();
        if others + size > self.bounds.max_total_bytes {
            return Err(format!(
                "That would take the page's files to {} bytes; they may hold at most {} bytes on this plan.",
                others + size,
                self.bounds.max_total_bytes
            ));
        }
        if !self.files.contains_key(path.as_str())
            && self.files.len() as u64 >= u64::from(self.bounds.max_files)
        {
            return Err(format!(
                "The page already has {} files, the most this plan allows; delete one first.",
                self.files.len()
            ));
        }
        self.files
            .insert(path.as_str().to_string(), Content::Text(text));
        Ok(())
    }

    /// Every file with its size, for the model.
    pub fn listing(&self) -> String {
        if self.files.is_empty() {
            return "The page has no files yet.".to_string();
        }
        let mut out = String::from("The page's files:");
        for (path, content) in &self.files {
            match content {
                Content::Text(text) => out.push_str(&format!("\n- {path} ({} bytes)", text.len())),
                Content::Binary { size } => {
                    out.push_str(&format!("\n- {path} ({size} bytes, not text)"))
                }
            }
        }
        out
    }
}

fn parse_path(raw: &str) -> Result<FilePath, String> {
    // Anthropic's own tool speaks of absolute paths; ours are relative to the page.
    let relative = raw.trim().trim_start_matches('/');
    FilePath::parse(relative).map_err(|why| format!("The path {raw:?} {why}."))
}

/// Where `needle` occurs in `text`, when it occurs exactly once.
fn find_once(text: &str, needle: &str, path: &str) -> Result<usize, String> {
    let matches: Vec<usize> = text.match_indices(needle).map(|(i, _)| i).collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(format!(
            "`old_str` was not found in {path}; it must match the file exactly, spaces and line breaks included.{}",
            nearest(text, needle)
        )),
        many => {
            let lines: Vec<String> = many
                .iter()
                .take(10)
                .map(|&i| (text[..i].matches('\n').count() + 1).to_string())
                .collect();
            Err(format!(
                "`old_str` occurs {} times in {path} (at lines {}); include more of the surrounding text so that it matches exactly once.",
                many.len(),
                lines.join(", ")
            ))
        }
    }
}

/// The lines of `text` most like `needle`'s first line, numbered, to show after a failed match.
fn nearest(text: &str, needle: &str) -> String {
    let first = needle
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(needle)
        .trim();
    if first.is_empty() {
        return String::new();
    }
    let words: Vec<&str> = first.split_whitespace().collect();
    let mut scored: Vec<(usize, usize)> = text
        .lines()
        .enumerate()
        .map(|(n, line)| (words.iter().filter(|w| line.contains(*w)).count(), n))
        .filter(|(score, _)| *score > 0)
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let Some(&(_, best)) = scored.first() else {
        return String::new();
    };
    let lines: Vec<&str> = text.lines().collect();
    let from = best.saturating_sub(2);
    let to = (best + 3).min(lines.len());
    let mut out = String::from(" The nearest lines are:");
    for (n, line) in lines.iter().enumerate().take(to).skip(from) {
        out.push_str(&format!("\n{}\t{line}", n + 1));
    }
    out
}

/// `text` with line numbers, all of it or the lines in `range` (1-based, inclusive; -1 for the
/// end).
fn numbered(text: &str, range: Option<&[i64]>) -> Result<String, String> {
    let lines: Vec<&str> = text.lines().collect();
    let total = lines.len() as i64;
    let (from, to) = match range {
        None => (1, total),
        Some([from, to]) => {
            let to = if *to == -1 { total } else { *to };
            if *from < 1 || to < *from || to > total.max(1) {
                return Err(format!(
                    "`view_range` must be [first, last] within 1 to {total} (or -1 for the end)."
                ));
            }
            (*from, to)
        }
        Some(_) => return Err("`view_range` must be two line numbers.".to_string()),
    };
    let mut out = String::new();
    for n in from..=to.min(total) {
        out.push_str(&format!("{n}\t{}\n", lines[(n - 1) as usize]));
    }
    if out.is_empty() {
        out.push_str("(the file is empty)");
    }
    Ok(out)
}

/// Refuses text that stands in for content with a placeholder ("rest of the file unchanged",
/// "... existing code ...") unless the text it replaces had the same line.
fn refuse_placeholders(new: &str, before: &str) -> Result<(), String> {
    for line in new.lines() {
        let trimmed = line.trim();
        if is_placeholder(trimmed) && !before.lines().any(|old| old.trim() == trimmed) {
            return Err(format!(
                "The new text has a placeholder line ({trimmed:?}) where content should be. Write the complete text: anything left out would be deleted from the page."
            ));
        }
    }
    Ok(())
}

fn is_placeholder(line: &str) -> bool {
    if matches!(
        line,
        "..." | "…" | "// ..." | "/* ... */" | "<!-- ... -->" | "# ..."
    ) {
        return true;
    }
    let comment = ["<!--", "/*", "//", "#", "{/*"]
        .iter()
        .any(|open| line.starts_with(open));
    if !comment {
        return false;
    }
    let lower = line.to_lowercase();
    let elided = lower.contains("...") || lower.contains('…');
    let phrases = [
        "rest of",
        "existing",
        "unchanged",
        "same as before",
        "remains the same",
        "as before",
        "previous content",
        "other items",
        "keep the",
    ];
    (elided && phrases.iter().any(|p| lower.contains(p)))
        || lower.contains("rest of the file")
        || lower.contains("rest of the code")
        || lower.contains("existing code")
        || lower.contains("unchanged")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace(files: &[(&str, &str)]) -> Workspace {
        Workspace::new(
            files
                .iter()
                .map(|(p, t)| (p.to_string(), Content::Text(t.to_string())))
                .collect(),
            Bounds {
                max_file_bytes: 1000,
                max_total_bytes: 1500,
                max_files: 3,
            },
        )
    }

    fn edit(ws: &mut Workspace, input: Value) -> Result<Applied, String> {
        ws.apply(EDITOR, &input)
    }

    const PAGE_HTML: &str = "<ul>\n<li>eggs</li>\n<li>bread</li>\n</ul>\n";

    #[test]
    fn str_replace_matches_exactly_once_or_says_why_not() {
        let mut ws = workspace(&[("index.html", PAGE_HTML)]);
        let done = edit(&mut ws, json!({"command": "str_replace", "path": "/index.html", "old_str": "<li>eggs</li>", "new_str": "<li>eggs</li>\n<li>milk</li>"}))
            .expect("applies");
        assert_eq!(done.changed.as_deref(), Some("index.html"));
        assert!(done.result.contains("line 2"), "{}", done.result);
        assert_eq!(
            ws.text("index.html"),
            Some("<ul>\n<li>eggs</li>\n<li>milk</li>\n<li>bread</li>\n</ul>\n")
        );
        let missing = edit(&mut ws, json!({"command": "str_replace", "path": "index.html", "old_str": "<li>Eggs </li>", "new_str": "x"}))
            .expect_err("no match");
        assert!(missing.contains("not found"), "{missing}");
        assert!(missing.contains("2\t<li>eggs</li>"), "{missing}");
        let twice = edit(&mut ws, json!({"command": "str_replace", "path": "index.html", "old_str": "<li>", "new_str": "<li class=x>"}))
            .expect_err("three matches");
        assert!(twice.contains("occurs 3 times"), "{twice}");
        assert!(twice.contains("lines 2, 3, 4"), "{twice}");
        // Nothing changed by the failures.
        assert!(
            ws.text("index.html")
                .is_some_and(|t| t.contains("milk") && !t.contains("class"))
        );
    }

    #[test]
    fn create_insert_view_and_delete() {
        let mut ws = workspace(&[("index.html", PAGE_HTML)]);
        edit(
            &mut ws,
            json!({"command": "create", "path": "css/site.css", "file_text": "ul { margin: 0 }\n"}),
        )
        .expect("creates");
        edit(&mut ws, json!({"command": "insert", "path": "index.html", "insert_line": 0, "new_str": "<h1>Groceries</h1>"}))
            .expect("inserts at the top");
        edit(&mut ws, json!({"command": "insert", "path": "index.html", "insert_line": 5, "new_str": "<p>end</p>\n"}))
            .expect("inserts at the end");
        assert_eq!(
            ws.text("index.html"),
            Some("<h1>Groceries</h1>\n<ul>\n<li>eggs</li>\n<li>bread</li>\n</ul>\n<p>end</p>\n")
        );
        assert!(
            edit(
                &mut ws,
                json!({"command": "insert", "path": "index.html", "insert_line": 9, "new_str": "x"})
            )
            .is_err()
        );
        let view = edit(
            &mut ws,
            json!({"command": "view", "path": "index.html", "view_range": [2, 3]}),
        )
        .expect("views");
        assert!(view.viewed && view.changed.is_none());
        assert_eq!(view.result, "2\t<ul>\n3\t<li>eggs</li>\n");
        let list = edit(&mut ws, json!({"command": "view", "path": ""})).expect("lists");
        assert!(list.result.contains("css/site.css"), "{}", list.result);
        assert!(ws.apply(DELETE, &json!({"path": "index.html"})).is_err());
        ws.apply(DELETE, &json!({"path": "css/site.css"}))
            .expect("deletes");
        assert!(ws.apply(DELETE, &json!({"path": "css/site.css"})).is_err());
        assert!(ws.apply("shell", &json!({})).is_err());
    }

    #[test]
    fn paths_types_and_bounds_follow_the_files_api() {
        let mut ws = workspace(&[("index.html", PAGE_HTML)]);
        for bad in ["../x.html", "a//b.css", "a\\b.css"] {
            assert!(
                edit(
                    &mut ws,
                    json!({"command": "create", "path": bad, "file_text": "x"})
                )
                .is_err(),
                "{bad}"
            );
        }
        assert!(
            edit(
                &mut ws,
                json!({"command": "create", "path": "logo.png", "file_text": "x"})
            )
            .is_err()
        );
        let big = "x".repeat(1001);
        let refused = edit(
            &mut ws,
            json!({"command": "create", "path": "big.txt", "file_text": big}),
        )
        .expect_err("too big");
        assert!(refused.contains("at most 1000 bytes"), "{refused}");
        edit(
            &mut ws,
            json!({"command": "create", "path": "a.txt", "file_text": "x".repeat(900)}),
        )
        .expect("fits");
        let total = edit(
            &mut ws,
            json!({"command": "create", "path": "b.txt", "file_text": "x".repeat(600)}),
        )
        .expect_err("over the total");
        assert!(total.contains("at most 1500 bytes"), "{total}");
        edit(
            &mut ws,
            json!({"command": "create", "path": "c.txt", "file_text": "x"}),
        )
        .expect("third file");
        let count = edit(
            &mut ws,
            json!({"command": "create", "path": "d.txt", "file_text": "x"}),
        )
        .expect_err("fourth file");
        assert!(count.contains("3 files"), "{count}");
        assert!(edit(&mut ws, json!({"command": "create"})).is_err());
        assert!(edit(&mut ws, json!({"command": "rename", "path": "a.txt"})).is_err());
    }

    #[test]
    fn placeholders_are_refused_unless_they_were_there() {
        let mut ws = workspace(&[
            ("index.html", PAGE_HTML),
            ("app.js", "// ... existing code ...\nrun();\n"),
        ]);
        for placeholder in [
            "<!-- ... rest of the list unchanged ... -->",
            "// ... existing code ...",
            "/* rest of the file */",
            "...",
        ] {
            let refused = edit(&mut ws, json!({"command": "str_replace", "path": "index.html", "old_str": "<li>bread</li>", "new_str": format!("<li>bread</li>\n{placeholder}")}))
                .expect_err(placeholder);
            assert!(refused.contains("placeholder"), "{refused}");
        }
        // Ordinary text that merely mentions the words is fine.
        edit(&mut ws, json!({"command": "str_replace", "path": "index.html", "old_str": "<li>bread</li>", "new_str": "<li>bread (the rest of the loaf)</li>"}))
            .expect("not a placeholder");
        // A placeholder line the file already had may stay.
        edit(&mut ws, json!({"command": "create", "path": "app.js", "file_text": "// ... existing code ...\nrun();\nstop();\n"}))
            .expect("kept from before");
    }
}
