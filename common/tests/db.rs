//! Pool settings against a real PostgreSQL: a statement that outlives `statement_timeout` is
//! cancelled by the server, and the services answer that with a 503 rather than a 500.

use common::config::Env;
use common::db::{DatabaseSettings, unavailable};

fn admin_url() -> String {
    std::env::var("ADMIN_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

#[tokio::test]
async fn a_statement_over_the_timeout_is_cancelled_and_answers_503() {
    let env = Env::from_pairs([
        ("DATABASE_URL", admin_url()),
        ("DATABASE_STATEMENT_TIMEOUT_MS", "200".to_owned()),
    ]);
    let pool = DatabaseSettings::from_env(&env, "postgres://unused")
        .unwrap()
        .pool("public")
        .unwrap();

    let shown: String = sqlx::query_scalar("SHOW statement_timeout")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(shown, "200ms");
    sqlx::query("SELECT pg_sleep(0.01)")
        .execute(&pool)
        .await
        .unwrap();

    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(&pool)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
    let problem = unavailable(&err).expect("a cancelled statement is a 503");
    assert_eq!(
        (problem.status, problem.code.as_str()),
        (503, "service_unavailable")
    );
}
