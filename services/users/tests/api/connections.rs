//! Whose each of the service's PostgreSQL connections is: an operator reads it in
//! `pg_stat_activity` and in the server's `connection authorized` log lines.

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The service role's backends on the test database, counted by `application_name`.
async fn backends(app: &TestApp) -> BTreeMap<String, i64> {
    sqlx::query_as(
        "SELECT application_name, count(*) FROM pg_stat_activity
         WHERE datname = $1 AND usename = 'users_svc' GROUP BY application_name",
    )
    .bind(&app.db.name)
    .fetch_all(&app.admin_pool)
    .await
    .expect("pg_stat_activity can be read")
    .into_iter()
    .collect()
}

#[tokio::test]
async fn each_connection_is_named_after_the_pool_that_opened_it() {
    let app = spawn_app().await;
    // The pool (a sign-up), the statement pool (the followee ids other services ask for).
    let user = app.register("reader").await;
    let ids = app
        .get(&format!("/v1/users/{}/following/ids", user.id), None)
        .await;
    assert_eq!(expect_json(ids, StatusCode::OK).await["ids"], json!([]));

    let names = |listed: &BTreeMap<String, i64>| listed.keys().cloned().collect::<Vec<_>>();
    let expected = [
        "users",
        "users statements",
        "users statements watch",
        "users watch",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The watchers connect in the background.
        let listed = backends(&app).await;
        if names(&listed) == expected {
            assert_eq!(listed["users watch"], 1, "{listed:?}");
            assert_eq!(listed["users statements watch"], 1, "{listed:?}");
            break;
        }
        assert!(Instant::now() < deadline, "backends {listed:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
