//! One trace per request across services: the feed's span, its call to the users service, the
//! users service's own span as the call's child, and the SQL.

use crate::helpers::*;
use opentelemetry::trace::{SpanId, TraceId};
use opentelemetry_sdk::trace::SpanData;
use reqwest::StatusCode;
use std::time::Duration;

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

#[tokio::test]
async fn a_feed_request_is_one_trace_across_posts_and_users_down_to_the_sql() {
    let app = spawn_app().await;
    let reader = app.register("traced").await;
    app.post(&reader, "hello").await;

    let trace_id = TraceId::from_hex(&uuid::Uuid::new_v4().simple().to_string()).unwrap();
    let caller = SpanId::from_hex("00f067aa0ba902b7").unwrap();
    let response = app
        .client
        .get(format!("{}/v1/feed", app.address))
        .bearer_auth(&reader.token)
        .header("traceparent", format!("00-{trace_id}-{caller}-01"))
        .send()
        .await
        .unwrap();
    expect_json(response, StatusCode::OK).await;

    let mut spans = Vec::new();
    for _ in 0..20 {
        spans = finished_spans()
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .filter(|s| s.span_context.trace_id() == trace_id)
            .collect();
        if spans
            .iter()
            .any(|s| attribute(s, "http.route").as_deref() == Some("/v1/feed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let find = |name: &str, route: Option<&str>| {
        spans
            .iter()
            .find(|s| {
                s.name == name
                    && route.is_none_or(|r| attribute(s, "http.route").as_deref() == Some(r))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no span {name} {route:?} in {:#?}",
                    spans.iter().map(|s| &s.name).collect::<Vec<_>>()
                )
            })
    };
    let feed = find("http.request", Some("/v1/feed"));
    assert_eq!(
        feed.parent_span_id, caller,
        "the feed continues the caller's trace"
    );
    let call = find("followee_ids", None);
    let users = find("http.request", Some("/v1/users/{id}/following/ids"));
    assert_eq!(
        users.parent_span_id,
        call.span_context.span_id(),
        "the users service continues the call's trace"
    );
    let sql = find("page", None);
    assert_eq!(
        sql.parent_span_id,
        feed.span_context.span_id(),
        "the feed statement is the request's child"
    );
    find("graph_version", None);
}
