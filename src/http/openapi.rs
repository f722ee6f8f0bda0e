//! The OpenAPI document, generated from the handlers' annotations (browsed at `/api/docs`, see
//! `docs`).

use axum::Router;
use axum::routing::get;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::AppState;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AIde API",
        description = "AIde's backend: sign-in, aides, conversations and the audit trail. \
                       Errors are JSON: {\"detail\", \"code\", \"request_id\"}; 429 answers carry Retry-After.",
    ),
    paths(
        super::health,
        super::ready,
        crate::auth::routes::send,
        crate::auth::routes::verify_page,
        crate::auth::routes::verify,
        crate::auth::routes::verify_code,
        crate::auth::routes::me,
        crate::auth::routes::logout,
        crate::auth::routes::logout_all,
        crate::aides::list,
        crate::aides::create,
        crate::aides::read,
        crate::aides::update,
        crate::aides::archive,
        crate::aides::restore,
        crate::aides::delete,
        crate::conversations::read,
        crate::conversations::append,
        crate::audit::list,
        crate::files::list_files,
        crate::files::put_file,
        crate::files::get_file,
        crate::files::delete_file,
        crate::publishing::publish,
        crate::publishing::unpublish,
        crate::publishing::list_versions,
        crate::publishing::restore_version,
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Magic-link sign-in and sessions"),
        (name = "aides", description = "A person's living pages"),
        (name = "conversations", description = "Each aide's chat history; user messages use turns"),
        (name = "audit", description = "The caller's own audit trail"),
        (name = "files", description = "An aide's workspace files (the draft page)"),
        (name = "publishing", description = "Immutable published versions"),
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

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/api/openapi.json",
        get(|| async { axum::Json(document()) }),
    )
}
