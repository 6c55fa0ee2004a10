//! The storage routes are one set for every direction and kind: each
//! answers for the kinds this server serves and 404s for any other, and the
//! OpenAPI document describes them with their `{kind}` parameter.

use labelport_domain::storage::StorageKind;
use labelport_testkit::{backends, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// Every storage route with a `{kind}`, as (method, path template, body).
fn kind_routes() -> Vec<(Method, String, Option<Value>)> {
    let body = || Some(json!({"project": 1, "bucket": "b"}));
    let mut routes = Vec::new();
    for (base, files) in [("/api/storages", true), ("/api/storages/export", false)] {
        routes.push((Method::GET, format!("{base}/{{kind}}?project=1"), None));
        routes.push((Method::POST, format!("{base}/{{kind}}"), body()));
        routes.push((Method::GET, format!("{base}/{{kind}}/{{id}}"), None));
        routes.push((Method::PATCH, format!("{base}/{{kind}}/{{id}}"), body()));
        routes.push((Method::PUT, format!("{base}/{{kind}}/{{id}}"), body()));
        routes.push((Method::DELETE, format!("{base}/{{kind}}/{{id}}"), None));
        routes.push((Method::POST, format!("{base}/{{kind}}/validate"), body()));
        routes.push((Method::POST, format!("{base}/{{kind}}/{{id}}/sync"), None));
        if files {
            routes.push((Method::POST, format!("{base}/{{kind}}/files"), body()));
            routes.push((Method::POST, format!("{base}/{{kind}}/{{id}}/cors"), None));
            routes.push((Method::POST, format!("{base}/{{kind}}/cors"), body()));
        }
    }
    routes
}

#[tokio::test]
async fn every_storage_route_serves_each_kind_and_only_those() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        let (s, p) = app
            .post(
                "/api/projects",
                json!({"title": "p", "label_config": "<View><Image name=\"i\" value=\"$i\"/></View>"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        assert_eq!(p["id"], 1, "the routes below name project 1");
        for (method, template, body) in kind_routes() {
            let template = template.replace("{id}", "1");
            let unknown = template.replace("{kind}", "s3");
            let (s, r) = app.call(method.clone(), &unknown, body.clone()).await;
            assert_eq!(s, StatusCode::NOT_FOUND, "{method} {unknown}: {r}");
            for kind in StorageKind::ALL {
                let path = template.replace("{kind}", kind.name());
                let (s, r) = app.call(method.clone(), &path, body.clone()).await;
                // Served: a storage answer (the list), a 404 for storage 1
                // that does not exist, or a 400 from the connection check
                // (no emulator here) — never the unknown-route 404 body or a 5xx.
                assert!(
                    s.is_success()
                        || s == StatusCode::BAD_REQUEST
                        || (s == StatusCode::NOT_FOUND && path.contains("/1")),
                    "{method} {path}: {s} {r}"
                );
            }
        }
        // Without the project: the list is refused, naming the parameter.
        let (s, r) = app.get("/api/storages/export/gcs").await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{r}");
        assert!(r["validation_errors"]["project"].is_array(), "{r}");
    }
}

#[tokio::test]
async fn the_openapi_document_describes_the_storage_routes_with_their_kind() {
    let app = TestApp::spawn(backends()[0]).await;
    let (s, doc) = app.get("/api/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (method, template, _) in kind_routes() {
        let path = template.split('?').next().unwrap();
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"))[method.as_str().to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        for name in ["kind", "id"]
            .into_iter()
            .filter(|n| path.contains(&format!("{{{n}}}")))
        {
            assert!(
                params.iter().any(|p| p["name"] == name && p["in"] == "path"),
                "{method} {path} documents no {name}: {op}"
            );
        }
    }
    let schema = &doc["components"]["schemas"]["StorageInput"]["properties"];
    for field in [
        "bucket",
        "presign_ttl",
        "deletion_policy",
        "can_delete_objects",
        "export_format",
    ] {
        assert!(schema[field].is_object(), "StorageInput documents no {field}: {schema}");
    }
}
