//! The BOLA matrix: every operation whose path names an object, tried as someone the object is
//! not for. A service's test lists each such operation with who may use it; [`check`] fails if
//! the list and the OpenAPI document disagree ([`assert_covers`]), so a new id-taking route
//! cannot go untested.

use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::collections::BTreeSet;
use uuid::Uuid;

/// Who may use an operation, and so what a second, ordinary user gets.
#[derive(Debug, Clone, Copy)]
pub enum Access {
    /// The object's owner (or its participants) only: anyone else gets 404, answered exactly
    /// as for an id that does not exist. The owner then gets `owner`, proving the request was
    /// a valid one.
    Owner { owner: u16 },
    /// Public by design, or about the caller's own relation to the object (a follow, a like):
    /// the second user gets this status.
    Anyone(u16),
    /// Services only: a user token is 403.
    Internal,
    /// The admin role only: a user token is 403.
    Admin,
}

/// One operation of the matrix. `{name}` placeholders in `path` are filled from the ids given.
#[derive(Debug, Clone)]
pub struct Case {
    pub method: Method,
    pub path: &'static str,
    pub body: Option<Value>,
    pub access: Access,
    /// Ids for this case only, where a placeholder names another kind of object than usual
    /// (`{id}` is a post in `/v1/posts/{id}`, an account in `/v1/users/{id}/posts`).
    pub own_ids: Vec<(&'static str, String)>,
}

impl Case {
    pub fn new(method: Method, path: &'static str, body: Option<Value>, access: Access) -> Self {
        Self {
            method,
            path,
            body,
            access,
            own_ids: Vec::new(),
        }
    }

    /// Fills `{name}` with `id` in this case.
    pub fn with_id(mut self, name: &'static str, id: impl ToString) -> Self {
        self.own_ids.push((name, id.to_string()));
        self
    }

    fn path_with(&self, ids: &[(&str, String)]) -> String {
        let own: Vec<(&str, String)> = self.own_ids.iter().map(|(n, v)| (*n, v.clone())).collect();
        fill(&fill(self.path, &own), ids)
    }
}

/// Every `(METHOD, path)` of the document whose path has a parameter.
pub fn id_operations(document: &Value) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (path, operations) in document["paths"].as_object().into_iter().flatten() {
        if !path.contains('{') {
            continue;
        }
        for method in operations.as_object().into_iter().flatten().map(|(m, _)| m) {
            if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                found.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    found
}

fn fill(path: &str, ids: &[(&str, String)]) -> String {
    ids.iter().fold(path.to_owned(), |path, (name, id)| {
        path.replace(&format!("{{{name}}}"), id)
    })
}

async fn send(
    client: &reqwest::Client,
    base: &str,
    case: &Case,
    path: &str,
    token: &str,
) -> reqwest::Response {
    let mut request = client
        .request(case.method.clone(), format!("{base}{path}"))
        .bearer_auth(token);
    if let Some(body) = &case.body {
        request = request.json(body);
    }
    request.send().await.expect("request sent")
}

/// The parts of a problem that must not differ between "someone else's" and "no such".
fn problem_shape(body: &Value) -> Value {
    serde_json::json!([body["type"], body["title"], body["status"], body["detail"]])
}

/// Fails unless `cases` lists exactly the id-taking operations of `document`, each once.
pub fn assert_covers(document: &Value, cases: &[Case]) {
    let listed: BTreeSet<(String, String)> = cases
        .iter()
        .map(|c| (c.method.to_string(), c.path.to_owned()))
        .collect();
    let documented = id_operations(document);
    assert!(
        documented.len() > 3,
        "the document has id-taking operations"
    );
    let untested: Vec<_> = documented.difference(&listed).collect();
    let unknown: Vec<_> = listed.difference(&documented).collect();
    assert!(
        untested.is_empty() && unknown.is_empty(),
        "the matrix must list every id-taking operation of the document: untested {untested:?}, not in the document {unknown:?}"
    );
    assert_eq!(listed.len(), cases.len(), "each operation is listed once");
}

/// Sends every case as `intruder`, in order: owner-only ones must answer 404 exactly as they do
/// for unknown ids (sent too), the others their stated status.
pub async fn as_intruder(
    client: &reqwest::Client,
    base: &str,
    cases: &[Case],
    ids: &[(&str, String)],
    intruder: &str,
) {
    let unknown_ids: Vec<(&str, String)> = ids
        .iter()
        .map(|(name, _)| (*name, Uuid::new_v4().to_string()))
        .collect();
    for case in cases {
        let path = case.path_with(ids);
        let what = format!("{} {}", case.method, case.path);
        let response = send(client, base, case, &path, intruder).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match case.access {
            Access::Owner { .. } => {
                assert_eq!(
                    status,
                    StatusCode::NOT_FOUND,
                    "{what} as another user: {body}"
                );
                let missing = fill(case.path, &unknown_ids);
                let response = send(client, base, case, &missing, intruder).await;
                assert_eq!(
                    response.status(),
                    StatusCode::NOT_FOUND,
                    "{what} with unknown ids"
                );
                let unknown: Value = response.json().await.unwrap_or(Value::Null);
                assert_eq!(
                    problem_shape(&body),
                    problem_shape(&unknown),
                    "{what}: someone else's object must answer exactly as a missing one"
                );
            }
            Access::Anyone(expected) => {
                assert_eq!(status.as_u16(), expected, "{what} as another user: {body}");
            }
            Access::Internal | Access::Admin => {
                assert_eq!(
                    status,
                    StatusCode::FORBIDDEN,
                    "{what} with a user token: {body}"
                );
            }
        }
    }
}

/// Sends every owner-only case as `owner`, in order, expecting its stated status: the requests
/// the intruder was refused were valid ones.
pub async fn as_owner(
    client: &reqwest::Client,
    base: &str,
    cases: &[Case],
    ids: &[(&str, String)],
    owner: &str,
) {
    for case in cases {
        if let Access::Owner { owner: expected } = case.access {
            let path = case.path_with(ids);
            let response = send(client, base, case, &path, owner).await;
            let status = response.status().as_u16();
            let body = response.text().await.unwrap_or_default();
            assert_eq!(
                status, expected,
                "{} {} as its owner: {body}",
                case.method, case.path
            );
        }
    }
}
