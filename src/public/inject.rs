//! What the server adds to a served index.html: Open Graph tags when the page lacks them, and the
//! free tier's "Made with AIde" footer.

use crate::html::escape;

/// Adds og:title, og:url and og:type, each only when the page does not set it.
pub fn open_graph(html: &str, title: &str, url: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut tags = String::new();
    for (property, content) in [("og:title", title), ("og:url", url), ("og:type", "website")] {
        if !lower.contains(&format!("property=\"{property}\""))
            && !lower.contains(&format!("property='{property}'"))
        {
            tags.push_str(&format!(
                "<meta property=\"{property}\" content=\"{}\">",
                escape(content)
            ));
        }
    }
    if tags.is_empty() {
        return html.to_string();
    }
    // Inside <head>; without one, just inside <html> (the parser opens the head there); without
    // that, after the doctype, so the page keeps its standards mode.
    let at = find_tag_end(&lower, "<head")
        .or_else(|| find_tag_end(&lower, "<html"))
        .or_else(|| doctype_end(&lower))
        .unwrap_or(0);
    format!("{}{tags}{}", &html[..at], &html[at..])
}

/// The index just past a leading `<!doctype ...>`, if the page starts with one.
fn doctype_end(lower: &str) -> Option<usize> {
    let start = lower.len()
        - lower
            .trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n'])
            .len();
    if !lower[start..].starts_with("<!doctype") {
        return None;
    }
    lower[start..].find('>').map(|end| start + end + 1)
}

/// Adds the footer before `</body>`, or at the end.
pub fn footer(html: &str, app_url: &str) -> String {
    let footer = format!(
        "<footer style=\"font:12px system-ui,sans-serif;text-align:center;padding:12px;opacity:.7\">\
         Made with <a href=\"{}\" target=\"_blank\" rel=\"noopener\">AIde</a></footer>",
        escape(app_url)
    );
    match html.to_ascii_lowercase().rfind("</body") {
        Some(at) => format!("{}{footer}{}", &html[..at], &html[at..]),
        None => format!("{html}{footer}"),
    }
}

/// The index just past the `>` of the first `tag` (such as `<head`), if any.
fn find_tag_end(lower: &str, tag: &str) -> Option<usize> {
    let start = lower.find(tag)?;
    // `<header` is not `<head`.
    let next = lower.as_bytes().get(start + tag.len())?;
    if !(*next == b'>' || next.is_ascii_whitespace()) {
        return None;
    }
    lower[start..].find('>').map(|end| start + end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_missing_open_graph_tags_inside_head() {
        let page = "<html><head><title>x</title></head><body>hi</body></html>";
        let out = open_graph(page, "Poker \"night\"", "https://p.example/s/abc/");
        assert!(out.starts_with(
            "<html><head><meta property=\"og:title\" content=\"Poker &quot;night&quot;\">"
        ));
        assert!(out.contains("<meta property=\"og:url\" content=\"https://p.example/s/abc/\">"));
        assert!(out.contains("<meta property=\"og:type\" content=\"website\">"));
        let own = "<head><meta property=\"og:title\" content=\"Mine\"></head>";
        let out = open_graph(own, "Other", "u");
        assert_eq!(out.matches("og:title").count(), 1);
        assert!(open_graph("<p>no head</p>", "t", "u").starts_with("<meta property=\"og:title\""));
        assert!(open_graph("<header>x</header>", "t", "u").starts_with("<meta"));
        // Never before the doctype: that would put the page in quirks mode.
        let bare = open_graph("<!doctype html>\n<title>x</title><h1>x</h1>", "t", "u");
        assert!(
            bare.starts_with("<!doctype html><meta property=\"og:title\""),
            "{bare}"
        );
        let html = open_graph(
            "<!DOCTYPE html><html lang=en><body>x</body></html>",
            "t",
            "u",
        );
        assert!(
            html.starts_with("<!DOCTYPE html><html lang=en><meta property=\"og:title\""),
            "{html}"
        );
    }

    #[test]
    fn footer_goes_before_the_body_closes() {
        let out = footer("<body><p>x</p></BODY>", "https://app.example/");
        assert!(out.contains("Made with <a href=\"https://app.example/\""));
        assert!(out.ends_with("</footer></BODY>"));
        assert!(footer("<p>bare</p>", "u").ends_with("</footer>"));
    }
}
