//! What the model is told: a fixed system prompt (cached by the provider), the conversation so
//! far as plain text, and the new message with the page's current text files. The prompt's
//! version (a hash of the system prompt and the tools) is recorded per turn; the prompt itself
//! never is.

use std::sync::LazyLock;

use sha2::{Digest, Sha256};

use super::workspace::{Content, Workspace};
use crate::ai::model::Message;

pub const SYSTEM: &str = "You build and edit a person's living page: a small website (a grocery \
list, a league schedule, a trip plan) that they shape by talking to you. The page is a set of \
files; index.html is the page itself and must always exist.

How to work:
- Change the files with the tools, then say in one or two short sentences what you changed. Do \
not repeat the files' contents in your reply.
- Prefer small, exact edits (str_replace) over rewriting a file. Use create for a new file or \
when most of a file changes.
- Always write complete text. Never write placeholders such as \"rest of the file unchanged\": \
anything you leave out is deleted.
- Keep pages self-contained: plain HTML and CSS, with a little JavaScript only when the page \
needs it. Nothing may load from other sites (no CDNs, no external fonts or images).
- Make pages readable on phones and accessible: headings, labels, enough contrast.
- If a request is unclear, make a sensible choice and say what you chose.
- When a tool answers with an error, read it and fix the call.";

/// Text files up to this size in all are sent with the message; beyond it the model is given
/// the list and views what it needs.
const INLINE_MAX_BYTES: usize = 64 * 1024;
/// The conversation sent, newest first, up to this many characters.
const HISTORY_MAX_CHARS: usize = 24_000;

/// The system prompt and tools, hashed: what `ai_turns.prompt_version` records.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hash = Sha256::new();
    hash.update(SYSTEM.as_bytes());
    for tool in super::workspace::tools() {
        hash.update(tool.name.as_bytes());
        hash.update(tool.description.as_bytes());
        hash.update(tool.input_schema.to_string().as_bytes());
    }
    crate::storage::keys::hex(&hash.finalize()[..8])
});

/// The messages of a turn: the recent conversation (user and assistant text, alternating, oldest
/// first), then `content` with the page's files.
pub fn messages(
    history: &[(String, String)],
    content: &str,
    workspace: &Workspace,
) -> Vec<Message> {
    let mut kept: Vec<&(String, String)> = Vec::new();
    let mut chars = 0;
    for entry in history.iter().rev() {
        chars += entry.1.len();
        if chars > HISTORY_MAX_CHARS {
            break;
        }
        kept.push(entry);
    }
    kept.reverse();
    let mut out: Vec<Message> = Vec::new();
    for (role, text) in kept {
        let message = match role.as_str() {
            "assistant" => Message::assistant_text(text.as_str()),
            _ => Message::user_text(text.as_str()),
        };
        // Roles must alternate, starting with the user: merge or drop what does not.
        match out.last_mut() {
            None if message.role != crate::ai::model::Role::User => {}
            Some(last) if last.role == message.role => {
                last.content.extend(message.content);
            }
            _ => out.push(message),
        }
    }
    if out
        .last()
        .is_some_and(|m| m.role == crate::ai::model::Role::User)
    {
        out.pop();
    }
    out.push(Message::user_text(format!(
        "{}\n\n{content}",
        files_section(workspace)
    )));
    out
}

fn files_section(workspace: &Workspace) -> String {
    let text_bytes: usize = workspace
        .files()
        .values()
        .map(|c| match c {
            Content::Text(t) => t.len(),
            Content::Binary { .. } => 0,
        })
        .sum();
    if workspace.files().is_empty() {
        return "The page has no files yet: create index.html.".to_string();
    }
    if text_bytes > INLINE_MAX_BYTES {
        return format!(
            "{}\nView the files you need before editing them.",
            workspace.listing()
        );
    }
    let mut out = String::from("The page's current files:");
    for (path, content) in workspace.files() {
        match content {
            Content::Text(text) => {
                out.push_str(&format!("\n<file path=\"{path}\">\n{text}\n</file>"));
            }
            Content::Binary { size } => {
                out.push_str(&format!(
                    "\n<file path=\"{path}\" bytes=\"{size}\" binary=\"true\"/>"
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ai::model::{Block, Role};
    use crate::turns::workspace::Bounds;

    #[test]
    fn history_alternates_and_the_files_come_with_the_new_message() {
        let ws = Workspace::new(
            [
                (
                    "index.html".to_string(),
                    Content::Text("<h1>Hi</h1>".into()),
                ),
                ("logo.png".to_string(), Content::Binary { size: 10 }),
            ]
            .into_iter()
            .collect(),
            Bounds {
                max_file_bytes: 1,
                max_total_bytes: 1,
                max_files: 1,
            },
        );
        let history = vec![
            ("assistant".to_string(), "orphan reply".to_string()),
            ("user".to_string(), "make a page".to_string()),
            ("user".to_string(), "with a title".to_string()),
            ("assistant".to_string(), "Done.".to_string()),
            ("user".to_string(), "unanswered".to_string()),
        ];
        let messages = messages(&history, "add milk", &ws);
        let roles: Vec<Role> = messages.iter().map(|m| m.role).collect();
        assert_eq!(roles, vec![Role::User, Role::Assistant, Role::User]);
        assert_eq!(messages[0].content.len(), 2);
        let Block::Text(last) = &messages[2].content[0] else {
            panic!("text");
        };
        assert!(last.contains("<file path=\"index.html\">\n<h1>Hi</h1>\n</file>"));
        assert!(last.contains("binary=\"true\""));
        assert!(last.ends_with("add milk"));
        assert_eq!(VERSION.len(), 16);
    }
}
