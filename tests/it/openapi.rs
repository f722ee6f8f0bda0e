//! The OpenAPI document describes the service that runs: every route it names is served, with
//! the parameters where the code reads them, the schemas of the types the code returns, and the
//! answers the layers around each route can give.

use axum::http::{Method, StatusCode};
use serde_json::Value;

use crate::app::{Req, TestApp};

const METHODS: [(&str, Method); 5] = [
    ("get", Method::GET),
    ("post", Method::POST),
    ("put", Method::PUT),
    ("patch", Method::PATCH),
    ("delete", Method::DELETE),
];

async fn document(app: &TestApp) -> Value {
    let answer = app.send(Req::get("/api/openapi.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    answer.json()
}

/// Each (path, method, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, Method, Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (name, method) in METHODS.iter() {
            if item[*name].is_object() {
                found.push((path.clone(), method.clone(), item[*name].clone()));
            }
        }
    }
    found
}

#[tokio::test]
async fn every_documented_route_is_served() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    let operations = operations(&doc);
    assert!(operations.len() >= 27, "{} operations", operations.len());
    for (path, method, _) in operations {
        let concrete = path
            .replace("{id}", "00000000-0000-4000-8000-000000000000")
            .replace("{path}", "index.html")
            .replace("{n}", "1");
        let answer = app.send(Req::new(method.clone(), &concrete)).await;
        assert_ne!(
            answer.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert!(
            !answer.body.contains("There is nothing at this address."),
            "{method} {path} is documented but not served"
        );
    }
}

#[tokio::test]
async fn schemas_are_the_types_the_code_returns() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    let schemas = doc["components"]["schemas"].as_object().expect("schemas");
    let schema_of = |path: &str, method: &str, status: &str| -> String {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            ["$ref"]
            .as_str()
            .unwrap_or_default()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string()
    };
    // Once, two types shared a short name and the document kept only one of them.
    for path in ["/health", "/ready"] {
        let name = schema_of(path, "get", "200");
        assert_eq!(name, "Health", "{path}");
        assert!(schemas[&name]["properties"]["status"].is_object());
    }
    let notice = schema_of("/auth/send", "post", "200");
    assert!(
        schemas[&notice]["properties"]["detail"].is_object(),
        "{notice}"
    );
    assert_eq!(
        schema_of("/api/aides/{id}/conversation/messages", "post", "201"),
        "Appended"
    );
    // Every reference resolves.
    let text = doc.to_string();
    for reference in text.split("\"#/components/schemas/").skip(1) {
        let name = reference.split('"').next().unwrap_or_default();
        assert!(schemas.contains_key(name), "unresolved {name}");
    }
}

#[tokio::test]
async fn parameters_are_where_the_code_reads_them() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    for (path, names) in [
        ("/api/aides", vec!["status", "cursor", "limit"]),
        ("/api/audit", vec!["cursor", "limit"]),
        ("/api/aides/{id}/conversation", vec!["cursor", "limit"]),
    ] {
        let params = doc["paths"][path]["get"]["parameters"]
            .as_array()
            .expect("parameters");
        for name in names {
            let param = params
                .iter()
                .find(|p| p["name"] == name)
                .unwrap_or_else(|| panic!("{path}: no {name}"));
            assert_eq!(param["in"], "query", "{path} {name}");
            assert_ne!(param["required"], true, "{path} {name} is optional");
        }
    }
    // The file routes take a whole path, written as an OpenAPI path parameter.
    let file = &doc["paths"]["/api/aides/{id}/files/{path}"];
    for method in ["get", "put", "delete"] {
        assert!(file[method].is_object(), "{method}");
    }
    assert!(
        doc["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .all(|p| !p.contains('*')),
        "no axum wildcards in the document"
    );
}

#[tokio::test]
async fn every_operation_documents_the_answers_its_layers_give() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    for (path, method, op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        let has = |status: &str| responses.contains_key(status);
        let signed_in = op["security"].as_array().is_some_and(|s| !s.is_empty());
        if signed_in {
            assert!(has("401"), "{method} {path}: 401");
            if path.starts_with("/api/") {
                assert!(has("429"), "{method} {path}: 429");
            }
        }
        if path.contains("{id}") {
            assert!(has("404") && has("422"), "{method} {path}: 404, 422");
        }
        if op["requestBody"]["content"]["application/json"].is_object() {
            for status in ["413", "415", "422"] {
                assert!(has(status), "{method} {path}: {status}");
            }
        }
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let json = &response["content"]["application/json"];
                let html = &response["content"]["text/html"];
                assert!(
                    json.is_object() || html.is_object(),
                    "{method} {path} {status}: no error body"
                );
            }
        }
    }
}

/// The sign-in routes take JSON or a browser's form, and answer a form with pages.
#[tokio::test]
async fn sign_in_routes_document_forms_and_their_pages() {
    let app = TestApp::new().await;
    let doc = document(&app).await;
    for path in ["/auth/send", "/auth/verify", "/auth/verify-code"] {
        let op = &doc["paths"][path]["post"];
        let content = &op["requestBody"]["content"];
        assert!(content["application/json"].is_object(), "{path}");
        assert!(
            content["application/x-www-form-urlencoded"].is_object(),
            "{path}"
        );
        for (status, response) in op["responses"].as_object().expect("responses") {
            if status.starts_with('4') {
                assert!(
                    response["content"]["text/html"].is_object(),
                    "{path} {status}"
                );
            }
        }
    }
}
