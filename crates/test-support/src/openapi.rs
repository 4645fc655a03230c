//! Checks over a service's OpenAPI document.

use serde_json::Value;
use std::collections::BTreeSet;

/// Property names no response may carry: credentials and their hashes.
pub const SECRET_FIELDS: [&str; 6] = [
    "password",
    "password_hash",
    "token_hash",
    "client_secret",
    "secret",
    "hash",
];

/// Every property name reachable from `schema`, following `$ref`s into `components`.
pub fn property_names(document: &Value, schema: &Value, out: &mut BTreeSet<String>, depth: u32) {
    if depth > 16 {
        return;
    }
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        property_names(
            document,
            &document["components"]["schemas"][name],
            out,
            depth + 1,
        );
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, inner) in properties {
            out.insert(name.clone());
            property_names(document, inner, out, depth + 1);
        }
    }
    for key in ["items", "additionalProperties"] {
        if schema[key].is_object() {
            property_names(document, &schema[key], out, depth + 1);
        }
    }
    for key in ["allOf", "oneOf", "anyOf"] {
        for inner in schema[key].as_array().into_iter().flatten() {
            property_names(document, inner, out, depth + 1);
        }
    }
}

/// `(method, path, field)` for every response of every operation that documents one of
/// `fields` — except the operations in `allowed`.
pub fn responses_exposing(
    document: &Value,
    fields: &[&str],
    allowed: &[(&str, &str)],
) -> Vec<(String, String, String)> {
    let mut found = Vec::new();
    for (path, operations) in document["paths"].as_object().into_iter().flatten() {
        for (method, operation) in operations.as_object().into_iter().flatten() {
            if allowed.contains(&(method.as_str(), path.as_str())) {
                continue;
            }
            let mut names = BTreeSet::new();
            for response in operation["responses"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|r| r.1)
            {
                for content in response["content"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|c| c.1)
                {
                    property_names(document, &content["schema"], &mut names, 0);
                }
            }
            for field in fields {
                if names.contains(*field) {
                    found.push((method.clone(), path.clone(), (*field).to_owned()));
                }
            }
        }
    }
    found
}

/// Every `(method, path)` of the document, to check that a checker saw something.
pub fn operations(document: &Value) -> usize {
    document["paths"].as_object().map_or(0, |paths| {
        paths
            .values()
            .map(|ops| ops.as_object().map_or(0, |o| o.len()))
            .sum()
    })
}
