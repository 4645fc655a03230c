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
