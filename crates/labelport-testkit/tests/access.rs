//! Authorization of every route, generated from the router's own route
//! list (the OpenAPI document is built from the same `routes!` list): each
//! route is called as a non-member and as a member of too weak a role, and
//! the test fails when a route answers more than the access table
//! (`labelport_api::access::rule`) and the roles' plain rules allow. A new
//! route cannot be forgotten: without an entry in the table it is refused,
//! and `every_route_has_an_access_rule` fails.

use labelport_api::access::{rule, Need};
use labelport_domain::access::Role;
use labelport_domain::storage::{Direction, StorageKind, StorageSettings};
use labelport_testkit::{backends, TestApp};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const CONFIG: &str = r#"<View><Image name="image" value="$image"/><Choices name="c" toName="image"><Choice value="a"/></Choices></View>"#;

fn result() -> Value {
    json!([{"from_name": "c", "to_name": "image", "type": "choices", "value": {"choices": ["a"]}}])
}

/// Every (method, path template) the router serves, from its OpenAPI document.
fn route_list() -> Vec<(Method, String)> {
    let (_, doc) = labelport_api::routes();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((
                    Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                    path.clone(),
                ));
            }
        }
    }
    out
}

#[test]
fn every_route_has_an_access_rule() {
    let missing: Vec<String> = route_list()
        .into_iter()
        .filter(|(m, p)| rule(m, p).is_none())
        .map(|(m, p)| format!("{m} {p}"))
        .collect();
    assert!(missing.is_empty(), "routes without an access rule: {missing:?}");
}

/// The roles' plain rules, stated apart from the table: what an annotator
/// may never do, whatever the table says.
fn annotator_may_never(method: &Method, path: &str) -> bool {
    let writes = *method != Method::GET;
    path.contains("/storages")
        || path.contains("/members")
        || path.ends_with("/import")
        || path.ends_with("/export")
        || (path.starts_with("/api/users") && path != "/api/users/me")
        || (writes
            && (path.starts_with("/api/projects")
                || path.starts_with("/api/tasks/{id}") && !path.ends_with("/annotations")))
        || (writes && path.starts_with("/api/predictions"))
        || (writes && path == "/api/tasks")
}

struct World {
    project: i64,
    task: i64,
    /// An annotation by the admin (not the annotator's).
    annotation: i64,
    prediction: i64,
    import_storage: i64,
    export_storage: i64,
    manager_member: i64,
}

/// The path, query and body of a call of `template` on `w`'s objects.
fn concrete(method: &Method, template: &str, w: &World) -> (String, Option<Value>) {
    let id = if template.starts_with("/api/projects/") || template.starts_with("/projects/") {
        w.project
    } else if template.starts_with("/api/tasks/") || template.starts_with("/tasks/") {
        w.task
    } else if template.starts_with("/api/annotations/") {
        w.annotation
    } else if template.starts_with("/api/predictions/") {
        w.prediction
    } else if template.starts_with("/api/storages/export/") {
        w.export_storage
    } else if template.starts_with("/api/storages/") {
        w.import_storage
    } else if template.starts_with("/api/users/") {
        w.manager_member
    } else {
        0
    };
    let mut path = template.replace("{id}", &id.to_string()).replace("{kind}", "gcs");
    let query = match template {
        "/api/tasks" | "/api/storages" | "/api/storages/{kind}" | "/api/storages/export/{kind}" => {
            format!("?project={}", w.project)
        }
        "/api/predictions" => format!("?task={}", w.task),
        "/api/projects/{id}/members" if *method == Method::DELETE => format!("?user={}", w.manager_member),
        t if t.ends_with("/resolve") || t.ends_with("/presign") => "?fileuri=gs://elsewhere/a.jpg".into(),
        _ => String::new(),
    };
    path.push_str(&query);
    let body = (*method != Method::GET && *method != Method::DELETE).then(|| {
        json!({
            "project": w.project, "task": w.task, "bucket": "media", "title": "x",
            "result": result(), "data": {"image": "gs://media/b.jpg"}, "user": w.manager_member,
            "google_application_credentials": "",
        })
    });
    (path, body)
}

#[tokio::test]
async fn no_route_answers_more_than_its_role_and_membership_allow() {
    for backend in backends() {
        let app = TestApp::spawn(backend).await;
        // Users: a manager and an annotator who are members, a manager and
        // an annotator who are not.
        let mut tokens = Vec::new();
        let mut ids = Vec::new();
        for (name, role) in [
            ("mm", "manager"),
            ("am", "annotator"),
            ("mx", "manager"),
            ("ax", "annotator"),
        ] {
            let (s, u) = app.post("/api/users", json!({"username": name, "role": role})).await;
            assert_eq!(s, StatusCode::CREATED, "{u}");
            assert!(u.get("password").is_none(), "{u}");
            tokens.push(u["token"].as_str().unwrap().to_owned());
            ids.push(u["id"].as_i64().unwrap());
        }
        let (s, p) = app
            .post("/api/projects", json!({"title": "p", "label_config": CONFIG}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{p}");
        let project = p["id"].as_i64().unwrap();
        for member in &ids[..2] {
            let (s, r) = app
                .post(&format!("/api/projects/{project}/members"), json!({"user": member}))
                .await;
            assert_eq!(s, StatusCode::CREATED, "{r}");
        }
        let (s, t) = app
            .post(
                "/api/tasks",
                json!({"project": project, "data": {"image": "gs://media/a.jpg"}}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{t}");
        let task = t["id"].as_i64().unwrap();
        let (s, a) = app
            .post(&format!("/api/tasks/{task}/annotations"), json!({"result": result()}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{a}");
        let (s, pr) = app
            .post("/api/predictions", json!({"task": task, "result": result()}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{pr}");
        // Storages straight into the database (no bucket to check here).
        let mut settings = StorageSettings::defaults(Direction::Import);
        settings.bucket = "media".into();
        let import_storage = app
            .db()
            .create_storage(project, StorageKind::Gcs, &settings)
            .await
            .unwrap()
            .id;
        let mut settings = StorageSettings::defaults(Direction::Export);
        settings.bucket = "media".into();
        let export_storage = app
            .db()
            .create_storage(project, StorageKind::Gcs, &settings)
            .await
            .unwrap()
            .id;
        let w = World {
            project,
            task,
            annotation: a["id"].as_i64().unwrap(),
            prediction: pr["id"].as_i64().unwrap(),
            import_storage,
            export_storage,
            manager_member: ids[0],
        };
        let callers = [
            ("manager member", &tokens[0], Role::Manager, true),
            ("annotator member", &tokens[1], Role::Annotator, true),
            ("manager non-member", &tokens[2], Role::Manager, false),
            ("annotator non-member", &tokens[3], Role::Annotator, false),
        ];
        let mut checked = 0;
        for (method, template) in route_list() {
            let need = rule(&method, &template).expect("every route has a rule");
            let (path, body) = concrete(&method, &template, &w);
            for (who, token, role, member) in &callers {
                let (allowed_role, project_scoped) = match need {
                    Need::Public => continue,
                    // Push requests carry Google's token, never a user's:
                    // every user is refused.
                    Need::PubSubPush => (false, false),
                    Need::Role(min) => (*role >= min, false),
                    Need::Project(_, min) => (*role >= min, true),
                };
                let editing_others =
                    *role == Role::Annotator && template == "/api/annotations/{id}" && method != Method::GET;
                let allowed = allowed_role
                    && (*member || !project_scoped)
                    && !editing_others
                    && !(*role == Role::Annotator && annotator_may_never(&method, &template));
                if allowed {
                    // Only reads are tried on the allowed side (writes
                    // would change the objects the other calls use).
                    if method == Method::GET {
                        let (s, r) = app.call_as(token, method.clone(), &path, body.clone()).await;
                        assert!(
                            s != StatusCode::FORBIDDEN && s != StatusCode::UNAUTHORIZED,
                            "{who}: {method} {path} should be allowed: {s} {r}"
                        );
                    }
                    continue;
                }
                let (s, r) = app.call_as(token, method.clone(), &path, body.clone()).await;
                checked += 1;
                // A user's token is no push token at all: 401 there.
                let unauthenticated = need == Need::PubSubPush && s == StatusCode::UNAUTHORIZED;
                assert!(
                    unauthenticated
                        || matches!(
                            s,
                            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
                        ),
                    "{who}: {method} {path} answered {s} {r}; it should be refused"
                );
                if project_scoped && !member && s != StatusCode::BAD_REQUEST {
                    assert_eq!(
                        s,
                        StatusCode::NOT_FOUND,
                        "{who}: {method} {path}: a project they cannot see is hidden: {r}"
                    );
                }
                if s == StatusCode::BAD_REQUEST {
                    let text = r.to_string();
                    assert!(
                        text.contains("does not exist") || text.contains("required"),
                        "{who}: {method} {path}: {r}"
                    );
                }
            }
        }
        assert!(checked > 60, "only {checked} refusals were checked");
        // The fixtures are intact: nothing a refused call did stuck.
        let (s, t) = app.get(&format!("/api/tasks/{task}")).await;
        assert_eq!(s, StatusCode::OK, "{t}");
        assert_eq!(t["annotations"].as_array().map(Vec::len), Some(1), "{t}");
        // A non-member's project list does not show the project.
        let (s, list) = app.call_as(&tokens[2], Method::GET, "/api/projects", None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(list["count"], 0, "{list}");
        let (_, list) = app.call_as(&tokens[1], Method::GET, "/api/projects", None).await;
        assert_eq!(list["count"], 1, "{list}");
        // An annotator member labels, and changes only their own annotation.
        let (s, own) = app
            .call_as(
                &tokens[1],
                Method::POST,
                &format!("/api/tasks/{task}/annotations"),
                Some(json!({"result": result()})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{own}");
        let own_id = own["id"].as_i64().unwrap();
        let (s, r) = app
            .call_as(
                &tokens[1],
                Method::PATCH,
                &format!("/api/annotations/{own_id}"),
                Some(json!({"result": result()})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{r}");
        // The server's own Google identity is the admins': a manager's
        // storage without a key is refused with the reason, before any
        // connection is tried.
        for path in [
            "/api/storages/gcs",
            "/api/storages/export/gcs",
            "/api/storages/gcs/validate",
            "/api/storages/gcs/cors",
        ] {
            let (s, r) = app
                .call_as(
                    &tokens[0],
                    Method::POST,
                    path,
                    Some(json!({"project": project, "bucket": "media"})),
                )
                .await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {r}");
            assert!(
                r["detail"].as_str().unwrap().contains("server's own Google identity"),
                "{r}"
            );
        }
        // Syncing an admin's keyless storage acts as that identity too, as
        // does fixing its bucket's CORS policy, by path or by id in a body.
        for path in [
            format!("/api/storages/gcs/{import_storage}/sync"),
            format!("/api/storages/export/gcs/{export_storage}/sync"),
            format!("/api/storages/gcs/{import_storage}/cors"),
        ] {
            let (s, r) = app.call_as(&tokens[0], Method::POST, &path, None).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {r}");
        }
        let (s, r) = app
            .call_as(
                &tokens[0],
                Method::POST,
                "/api/storages/gcs/cors",
                Some(json!({"id": import_storage})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{r}");
        // So is a gcswif storage (the server's identity, traded through a
        // pool), whatever its fields.
        let wif = json!({"project": project, "bucket": "media", "google_wif_pool_id": "pool-1",
            "google_wif_provider_id": "provider-1", "google_project_number": "1",
            "google_service_account_email": "sa@p.iam.gserviceaccount.com"});
        for path in [
            "/api/storages/gcswif",
            "/api/storages/export/gcswif",
            "/api/storages/gcswif/validate",
            "/api/storages/gcswif/cors",
        ] {
            let (s, r) = app.call_as(&tokens[0], Method::POST, path, Some(wif.clone())).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{path}: {r}");
            assert!(r["detail"].as_str().unwrap().contains("server's own identity"), "{r}");
        }
        // Without credentials: 401 everywhere but the public routes.
        let anon = reqwest::Client::new();
        let r = anon
            .get(format!("{}/api/projects/{project}", app.base_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
}
