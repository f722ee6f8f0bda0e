//! `/api/docs`: the API reference, rendered on the server from the generated OpenAPI document.
//!
//! No script at all, and nothing from another origin: the page and its one stylesheet come from
//! this binary, and its Content-Security-Policy allows exactly that stylesheet. (The reference
//! used to load a third-party bundle from a CDN, which would run with the app's origin.) The
//! stylesheet's address carries a hash of its content, so it is cached for good.

use std::fmt::Write;
use std::sync::LazyLock;

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::html::escape;
use crate::state::AppState;

const STYLESHEET: &str = include_str!("docs/docs.css");

/// The stylesheet's path, named by the first bytes of its SHA-256.
static STYLESHEET_PATH: LazyLock<String> = LazyLock::new(|| {
    let digest = Sha256::digest(STYLESHEET.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("/api/docs/docs-{hex}.css")
});

/// The page, rendered once from the document.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    let doc = serde_json::to_value(super::openapi::document()).unwrap_or(Value::Null);
    render(&doc)
});

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/docs", get(page))
        .route(&STYLESHEET_PATH, get(stylesheet))
}

async fn page() -> Response {
    let mut response = Html(PAGE.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

async fn stylesheet() -> Response {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
        ],
        STYLESHEET,
    )
        .into_response()
}

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The whole reference: operations grouped by tag, then the schemas.
fn render(doc: &Value) -> String {
    let info = &doc["info"];
    let title = info["title"].as_str().unwrap_or("API");
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t} reference</title><link rel=\"stylesheet\" href=\"{css}\"></head><body>\
         <header><h1>{t}</h1><p>{d}</p><p class=\"muted\">Version {v}. The machine-readable \
         document is at <a href=\"/api/openapi.json\"><code>/api/openapi.json</code></a>.</p></header><main>",
        t = escape(title),
        d = escape(info["description"].as_str().unwrap_or_default()),
        v = escape(info["version"].as_str().unwrap_or_default()),
        css = *STYLESHEET_PATH,
    );

    let operations = operations(doc);
    let tags = tags(doc, &operations);
    out.push_str("<nav>");
    for (tag, _) in &tags {
        let _ = write!(out, "<h2>{}</h2><ul>", escape(tag));
        for op in operations.iter().filter(|op| op.tag == *tag) {
            let _ = write!(
                out,
                "<li><a href=\"#{}\">{} {}</a></li>",
                op.anchor(),
                op.method.to_uppercase(),
                escape(&op.path)
            );
        }
        out.push_str("</ul>");
    }
    out.push_str("<h2>Schemas</h2><ul>");
    if let Some(schemas) = doc["components"]["schemas"].as_object() {
        for name in schemas.keys() {
            let _ = write!(
                out,
                "<li><a href=\"#schema-{0}\">{0}</a></li>",
                escape(name)
            );
        }
    }
    out.push_str("</ul></nav><article>");

    for (tag, description) in &tags {
        let _ = write!(
            out,
            "<h2 class=\"tag\">{}</h2><p class=\"muted\">{}</p>",
            escape(tag),
            escape(description)
        );
        for op in operations.iter().filter(|op| op.tag == *tag) {
            render_operation(&mut out, op);
        }
    }
    render_schemas(&mut out, doc);
    out.push_str("</article></main></body></html>");
    out
}

/// One operation of the document.
struct Operation<'a> {
    path: String,
    method: &'static str,
    tag: String,
    body: &'a Value,
}

impl Operation<'_> {
    fn anchor(&self) -> String {
        let path: String = self
            .path
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("op-{}{}", self.method, path)
    }
}

fn operations(doc: &Value) -> Vec<Operation<'_>> {
    let mut found = Vec::new();
    if let Some(paths) = doc["paths"].as_object() {
        for (path, item) in paths {
            for method in METHODS {
                let body = &item[method];
                if body.is_object() {
                    let tag = body["tags"][0].as_str().unwrap_or("other").to_string();
                    found.push(Operation {
                        path: path.clone(),
                        method,
                        tag,
                        body,
                    });
                }
            }
        }
    }
    found
}

/// The document's tags in its order, then any tag only an operation names.
fn tags(doc: &Value, operations: &[Operation<'_>]) -> Vec<(String, String)> {
    let mut tags: Vec<(String, String)> = doc["tags"]
        .as_array()
        .map(|tags| {
            tags.iter()
                .filter_map(|t| {
                    let name = t["name"].as_str()?;
                    let description = t["description"].as_str().unwrap_or_default();
                    Some((name.to_string(), description.to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    for op in operations {
        if !tags.iter().any(|(name, _)| *name == op.tag) {
            tags.push((op.tag.clone(), String::new()));
        }
    }
    tags.retain(|(name, _)| operations.iter().any(|op| op.tag == *name));
    tags
}

fn render_operation(out: &mut String, op: &Operation<'_>) {
    let body = op.body;
    let signed_in = body["security"].as_array().is_some_and(|s| !s.is_empty());
    let _ = write!(
        out,
        "<section class=\"op\" id=\"{}\"><h3><span class=\"method {m}\">{m}</span>{}{}</h3>",
        op.anchor(),
        escape(&op.path),
        if signed_in {
            "<span class=\"auth\">signed in</span>"
        } else {
            ""
        },
        m = op.method,
    );
    for key in ["summary", "description"] {
        if let Some(text) = body[key].as_str() {
            let _ = write!(out, "<p>{}</p>", escape(text));
        }
    }
    if let Some(params) = body["parameters"].as_array().filter(|p| !p.is_empty()) {
        out.push_str(
            "<h4>Parameters</h4><table><tr><th>Name</th><th>In</th><th>Type</th><th>Description</th></tr>",
        );
        for p in params {
            let _ = write!(
                out,
                "<tr><td><code>{}</code>{}</td><td>{}</td><td class=\"type\">{}</td><td>{}</td></tr>",
                escape(p["name"].as_str().unwrap_or_default()),
                if p["required"].as_bool() == Some(true) {
                    "<span class=\"req\">required</span>"
                } else {
                    ""
                },
                escape(p["in"].as_str().unwrap_or_default()),
                type_of(&p["schema"]),
                escape(p["description"].as_str().unwrap_or_default())
            );
        }
        out.push_str("</table>");
    }
    if let Some(content) = body["requestBody"]["content"].as_object() {
        out.push_str("<h4>Request body</h4><table><tr><th>Content type</th><th>Type</th></tr>");
        for (media, value) in content {
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td class=\"type\">{}</td></tr>",
                escape(media),
                type_of(&value["schema"])
            );
        }
        out.push_str("</table>");
        if let Some(text) = body["requestBody"]["description"].as_str() {
            let _ = write!(out, "<p class=\"muted\">{}</p>", escape(text));
        }
    }
    if let Some(responses) = body["responses"].as_object() {
        out.push_str(
            "<h4>Responses</h4><table><tr><th>Status</th><th>Description</th><th>Body</th></tr>",
        );
        for (status, response) in responses {
            let bodies: Vec<String> = response["content"]
                .as_object()
                .map(|content| {
                    content
                        .iter()
                        .map(|(media, v)| {
                            let schema = &v["schema"];
                            if schema.is_null() {
                                format!("<code>{}</code>", escape(media))
                            } else {
                                format!("<code>{}</code> {}", escape(media), type_of(schema))
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td><code>{}</code></td><td>{}</td><td class=\"type\">{}</td></tr>",
                escape(status),
                escape(response["description"].as_str().unwrap_or_default()),
                bodies.join("<br>")
            );
        }
        out.push_str("</table>");
    }
    out.push_str("</section>");
}

fn render_schemas(out: &mut String, doc: &Value) {
    let Some(schemas) = doc["components"]["schemas"].as_object() else {
        return;
    };
    out.push_str("<h2 class=\"tag\">Schemas</h2>");
    for (name, schema) in schemas {
        let _ = write!(
            out,
            "<section class=\"op\" id=\"schema-{0}\"><h3>{0}</h3>",
            escape(name)
        );
        if let Some(text) = schema["description"].as_str() {
            let _ = write!(out, "<p>{}</p>", escape(text));
        }
        match schema["properties"].as_object() {
            Some(properties) => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                out.push_str("<table><tr><th>Field</th><th>Type</th><th>Description</th></tr>");
                for (field, value) in properties {
                    let _ = write!(
                        out,
                        "<tr><td><code>{}</code>{}</td><td class=\"type\">{}</td><td>{}</td></tr>",
                        escape(field),
                        if required.contains(&field.as_str()) {
                            "<span class=\"req\">required</span>"
                        } else {
                            ""
                        },
                        type_of(value),
                        escape(value["description"].as_str().unwrap_or_default())
                    );
                }
                out.push_str("</table>");
            }
            None => {
                let _ = write!(out, "<p class=\"type\">{}</p>", type_of(schema));
            }
        }
        out.push_str("</section>");
    }
}

/// A JSON Schema as a short phrase, with links to named schemas. Escaped.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("<a href=\"#schema-{0}\">{0}</a>", escape(name));
    }
    for (key, joiner) in [("oneOf", " or "), ("anyOf", " or "), ("allOf", " and ")] {
        if let Some(parts) = schema[key].as_array() {
            return parts.iter().map(type_of).collect::<Vec<_>>().join(joiner);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| match v {
                Value::String(s) => format!("<code>{}</code>", escape(s)),
                other => escape(&other.to_string()),
            })
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let described: Vec<String> = types
        .iter()
        .map(|t| match *t {
            "array" => format!("array of {}", type_of(&schema["items"])),
            "string" => match schema["format"].as_str() {
                Some(format) => format!("string ({})", escape(format)),
                None => "string".to_string(),
            },
            "integer" | "number" => match schema["format"].as_str() {
                Some(format) => format!("{t} ({})", escape(format)),
                None => (*t).to_string(),
            },
            other => escape(other),
        })
        .collect();
    if described.is_empty() {
        "any".to_string()
    } else {
        described.join(" or ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_read_as_phrases() {
        let schema = serde_json::json!({"type": ["array", "null"], "items": {"$ref": "#/components/schemas/Aide"}});
        assert_eq!(
            type_of(&schema),
            "array of <a href=\"#schema-Aide\">Aide</a> or null"
        );
        assert_eq!(
            type_of(&serde_json::json!({"type": "string", "format": "uuid"})),
            "string (uuid)"
        );
        assert_eq!(
            type_of(&serde_json::json!({"enum": ["draft", "<x>"]})),
            "one of <code>draft</code>, <code>&lt;x&gt;</code>"
        );
    }

    #[test]
    fn the_page_covers_every_operation_and_loads_nothing_from_elsewhere() {
        let doc = serde_json::to_value(crate::app::openapi::document()).expect("json");
        let page = render(&doc);
        let count: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|item| METHODS.iter().filter(|m| item[**m].is_object()).count())
            .sum();
        assert!(count > 20);
        assert_eq!(
            page.matches("<section class=\"op\" id=\"op-").count(),
            count
        );
        assert!(!page.contains("<script"));
        assert!(!page.contains("http://") && !page.contains("https://"));
        assert!(page.contains(STYLESHEET_PATH.as_str()));
    }
}
