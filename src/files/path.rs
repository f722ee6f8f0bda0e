//! File paths inside an aide, and their content types.

/// A normalised relative path: segments of 1 to 255 bytes separated by single `/`, no `.` or
/// `..`, no backslash, no control characters, 512 bytes at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePath(String);

impl FilePath {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("is empty");
        }
        if raw.len() > 512 {
            return Err("must be at most 512 bytes");
        }
        if raw.starts_with('/') {
            return Err("must be relative (no leading /)");
        }
        if raw.contains('\\') {
            return Err("must use / between folders, not \\");
        }
        if raw.chars().any(char::is_control) {
            return Err("must not contain control characters");
        }
        for segment in raw.split('/') {
            match segment {
                "" => return Err("must not contain empty folder names (// or a trailing /)"),
                "." | ".." => return Err("must not contain . or .. segments"),
                s if s.len() > 255 => return Err("has a name longer than 255 bytes"),
                _ => {}
            }
        }
        Ok(FilePath(raw.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The content type for a file: the client's, unless it said nothing useful, else by extension.
pub fn content_type_for(path: &FilePath, declared: Option<&str>) -> String {
    let declared = declared.map(str::trim).filter(|d| {
        !d.is_empty()
            && d.len() <= 200
            && d.contains('/')
            && d.is_ascii()
            && !d.starts_with("application/x-www-form-urlencoded")
            && !d.starts_with("application/octet-stream")
            && !d.starts_with("multipart/")
    });
    if let Some(declared) = declared {
        return declared.to_string();
    }
    let extension = path
        .as_str()
        .rsplit('/')
        .next()
        .and_then(|name| name.rsplit_once('.'))
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .unwrap_or_default();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "pdf" => "application/pdf",
        _ => "application/octet-stream",
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        for good in [
            "index.html",
            "css/site.css",
            "a/b/c.txt",
            "name with spaces.md",
            "ünï.txt",
        ] {
            assert!(FilePath::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../secret",
            "a/../b",
            "a/./b",
            ".",
            "a//b",
            "a/",
            "a\\b",
            "a\u{0}b",
            "a\nb",
            &"x".repeat(513),
            &format!("{}/a", "x".repeat(256)),
        ] {
            assert!(FilePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types() {
        let page = FilePath::parse("index.html").expect("path");
        assert_eq!(content_type_for(&page, None), "text/html; charset=utf-8");
        assert_eq!(
            content_type_for(&page, Some("application/x-www-form-urlencoded")),
            "text/html; charset=utf-8"
        );
        assert_eq!(content_type_for(&page, Some("text/plain")), "text/plain");
        let unknown = FilePath::parse("data.bin").expect("path");
        assert_eq!(content_type_for(&unknown, None), "application/octet-stream");
        let upper = FilePath::parse("IMG.PNG").expect("path");
        assert_eq!(content_type_for(&upper, None), "image/png");
    }
}
