//! What the PostgreSQL tests of `common` share.

use sqlx::PgConnection;

/// The superuser's URL, where the tests connect.
pub fn admin_url() -> String {
    std::env::var("ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The backend process serving `conn`: which connection a pool lent.
pub async fn backend(conn: &mut PgConnection) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(conn)
        .await
}
