//! The OpenAPI document, generated from the handlers' annotations (browsed at `/api/docs`, see
//! `docs`).

use axum::Router;
use axum::routing::get;
use std::sync::LazyLock;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

use axum::http::header;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::state::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIde API",
        description = "AIde's backend: sign-in, aides, conversations and the audit trail. \
                       Errors are JSON: {\"detail\", \"code\", \"request_id\"}; 429 answers carry Retry-After.",
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Magic-link sign-in and sessions"),
        (name = "aides", description = "A person's living pages"),
        (name = "conversations", description = "Each aide's chat history; user messages use turns"),
        (name = "audit", description = "The caller's own audit trail"),
        (name = "files", description = "An aide's workspace files (the draft page)"),
        (name = "publishing", description = "Immutable published versions"),
        (name = "revisions", description = "The history of an aide's files, and undo"),
        (name = "turns", description = "A message that changes the page: the AI turn, streamed"),
        (name = "billing", description = "The Pro plan through Stripe: checkout, the billing portal, Stripe's webhook"),
        (name = "account", description = "A person's own data: exports and account deletion"),
        (name = "support", description = "Staff access to one account, for operators only: with a grant, a reason, a time limit and a trail"),
        (name = "operations", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "session_cookie",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::with_description(
                "__Host-session",
                "The session cookie, set on sign-in. Named `session` instead when APP_URL is \
                 plain-http localhost, where it cannot be Secure.",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Every documented route, each declared once (`routes!` takes the path, the method and the
/// description from the handler's `#[utoipa::path]`): the router that runs and the document that
/// describes it come from the same declarations.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(super::health))
        .routes(routes!(super::ready))
        .merge(crate::auth::router())
        .merge(crate::aides::router())
        .merge(crate::conversations::router())
        .merge(crate::audit::router())
        .merge(crate::files::router())
        .merge(crate::publishing::router())
        .merge(crate::revisions::router())
        .merge(crate::turns::router())
        .merge(crate::account::router())
        .merge(crate::support::router())
        .merge(crate::billing::router())
}

static DOCUMENT: LazyLock<(utoipa::openapi::OpenApi, String)> = LazyLock::new(|| {
    let (_, mut doc) = api().split_for_parts();
    complete(&mut doc);
    let json = serde_json::to_string(&doc).unwrap_or_else(|_| "{}".to_string());
    (doc, json)
});

/// The document, as served.
pub fn document() -> utoipa::openapi::OpenApi {
    DOCUMENT.0.clone()
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "application/json")],
                DOCUMENT.1.as_str(),
            )
        }),
    )
}

/// What the handlers' annotations leave to the layers around them, added to every operation the
/// same way the code answers: wildcard paths written as OpenAPI parameters, and the answers any
/// route of a kind can give (401 and 429 on signed-in routes, 422 for a malformed id, 404 for an
/// id that is not the caller's, 415, 413 and 422 for a JSON body).
fn complete(doc: &mut utoipa::openapi::OpenApi) {
    let paths = std::mem::take(&mut doc.paths.paths);
    for (path, mut item) in paths {
        let path = path.replace("{*", "{");
        for (_, operation) in operations(&mut item) {
            let signed_in = operation.security.as_ref().is_some_and(|s| !s.is_empty());
            let takes_id = path.contains("{id}");
            let takes_json = operation
                .request_body
                .as_ref()
                .is_some_and(|body| body.content.keys().any(|media| media == "application/json"));
            let mut add = |status: &str, description: &str| {
                operation
                    .responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(description).into());
            };
            if signed_in {
                add("401", "No live session (UNAUTHORIZED)");
                if path.starts_with("/api/") {
                    add(
                        "429",
                        "Over API_REQUESTS_PER_USER_PER_MINUTE (RATE_LIMITED), with Retry-After",
                    );
                }
            }
            if takes_id {
                add("404", "No such item of yours (NOT_FOUND)");
                add("422", "A malformed id (VALIDATION_FAILED)");
            }
            if takes_json {
                add("413", "The body is too large (PAYLOAD_TOO_LARGE)");
                add("415", "The body is not JSON (UNSUPPORTED_MEDIA_TYPE)");
                add(
                    "422",
                    "The body does not parse or validate (VALIDATION_FAILED)",
                );
            }
            let takes_form = operation.request_body.as_ref().is_some_and(|body| {
                body.content
                    .keys()
                    .any(|media| media == "application/x-www-form-urlencoded")
            });
            if takes_form {
                // A browser's form gets its answers as pages (its successes may be redirects).
                for (status, response) in operation.responses.responses.iter_mut() {
                    let has_body = !status.starts_with('3') && status != "204";
                    if let (true, RefOr::T(response)) = (has_body, response) {
                        response
                            .content
                            .entry("text/html".to_string())
                            .or_insert_with(|| ContentBuilder::new().build());
                    }
                }
            }
        }
        doc.paths.paths.insert(path, item);
    }
}

fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("patch", &mut item.patch),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
    .collect()
}

/// A response carrying our error body.
fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
}
