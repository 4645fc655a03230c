//! The committed OpenAPI document is the one the code generates.

const COMMITTED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/openapi/messaging.json"
);

#[test]
fn the_committed_openapi_document_is_fresh() {
    let generated = common::openapi::render(&messaging::openapi());
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi/messaging.json is stale: run `UPDATE_OPENAPI=1 cargo test -p messaging openapi`"
    );
}

#[test]
fn no_response_carries_an_email_or_a_credential() {
    let document: serde_json::Value =
        serde_json::from_str(&common::openapi::render(&messaging::openapi())).unwrap();
    assert!(test_support::openapi::operations(&document) > 5);
    let mut fields = test_support::openapi::SECRET_FIELDS.to_vec();
    fields.push("email");
    let exposed = test_support::openapi::responses_exposing(&document, &fields, &[]);
    assert!(exposed.is_empty(), "{exposed:?}");
    // The check sees fields where they are.
    let senders = test_support::openapi::responses_exposing(&document, &["sender_id"], &[]);
    assert!(!senders.is_empty());
}
