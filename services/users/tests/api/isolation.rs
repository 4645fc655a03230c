//! Each service's role reaches its own schema and nothing else.

use crate::helpers::*;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;

async fn error_code(url: &str, sql: &'static str) -> Option<String> {
    let mut conn = PgConnectOptions::from_str(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let result = sqlx::query(sql).execute(&mut conn).await;
    conn.close().await.unwrap();
    result.err().and_then(|e| {
        e.as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.into_owned())
    })
}

#[tokio::test]
async fn each_service_role_is_denied_the_other_schemas() {
    let app = spawn_app().await;
    app.register("someone").await;
    let users_url = app.db.url_for("users");
    let posts_url = app.db.url_for("posts");
    let messaging_url = app.db.url_for("messaging");

    // 42501: insufficient_privilege.
    assert_eq!(
        error_code(&posts_url, "SELECT * FROM users.accounts")
            .await
            .as_deref(),
        Some("42501")
    );
    assert_eq!(
        error_code(&messaging_url, "SELECT * FROM users.accounts")
            .await
            .as_deref(),
        Some("42501")
    );
    assert_eq!(
        error_code(&users_url, "SELECT * FROM posts._sqlx_migrations")
            .await
            .as_deref(),
        Some("42501")
    );
    assert_eq!(
        error_code(&users_url, "CREATE TABLE public.sneaky (id int)")
            .await
            .as_deref(),
        Some("42501")
    );
    assert_eq!(
        error_code(&posts_url, "CREATE TABLE users.sneaky (id int)")
            .await
            .as_deref(),
        Some("42501")
    );
    // The control: each role does reach its own schema.
    assert_eq!(
        error_code(&users_url, "SELECT * FROM users.accounts").await,
        None
    );
    assert_eq!(
        error_code(&posts_url, "SELECT 1 FROM posts._sqlx_migrations")
            .await
            .as_deref(),
        Some("42P01"),
        "posts not migrated in this test"
    );
}

#[tokio::test]
async fn the_migration_history_lives_in_the_service_schema() {
    let app = spawn_app().await;
    let versions: i64 = sqlx::query_scalar("SELECT count(*) FROM users._sqlx_migrations")
        .fetch_one(&app.admin_pool)
        .await
        .unwrap();
    assert!(versions >= 2);
    let public: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(&app.admin_pool)
            .await
            .unwrap();
    assert!(!public, "no shared history table in public");
}
