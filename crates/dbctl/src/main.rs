//! `dbctl`: the operator's database tool. `dbctl setup` creates the database, each service's
//! role and schema (from an admin connection) and applies every service's migrations as that
//! service's role; `dbctl bootstrap` does only the first half. Both are idempotent.
//!
//! Environment: `ADMIN_DATABASE_URL` (a superuser, default the local `postgres`),
//! `DATABASE_NAME` (default `social`), `USERS_DB_PASSWORD`, `POSTS_DB_PASSWORD`,
//! `MESSAGING_DB_PASSWORD` (passwords given to roles it creates; development defaults).

use anyhow::Context;
use common::config::{Env, Secret};
use common::db::{ServiceRole, migrator_for};
use sqlx::ConnectOptions;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;

fn migrator(service: &str) -> Migrator {
    let embedded = match service {
        "users" => sqlx::migrate!("../../migrations/users"),
        "posts" => sqlx::migrate!("../../migrations/posts"),
        _ => sqlx::migrate!("../../migrations/messaging"),
    };
    migrator_for(embedded, service)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let command = std::env::args().nth(1).unwrap_or_default();
    if !matches!(command.as_str(), "setup" | "bootstrap") {
        eprintln!("usage: dbctl setup|bootstrap");
        std::process::exit(2);
    }
    let env = Env::from_process();
    let admin_url = env.string(
        "ADMIN_DATABASE_URL",
        "postgres://postgres@127.0.0.1:5432/postgres",
    );
    let admin = PgConnectOptions::from_str(&admin_url)
        .context("ADMIN_DATABASE_URL is not a PostgreSQL URL")?;
    let database = env.string("DATABASE_NAME", "social");
    let services = ["users", "posts", "messaging"];
    let roles: Vec<ServiceRole> = services
        .iter()
        .map(|s| {
            let var = format!("{}_DB_PASSWORD", s.to_uppercase());
            ServiceRole::new(
                s,
                env.optional(&var)
                    .map(Secret::new)
                    .unwrap_or_else(|| Secret::new(format!("{s}_dev_password"))),
            )
        })
        .collect();
    common::db::bootstrap(&admin, &database, &roles).await?;
    println!(
        "bootstrapped database {database}: roles and schemas for {}",
        services.join(", ")
    );
    if command == "setup" {
        for role in &roles {
            let options = admin
                .clone()
                .database(&database)
                .username(&role.role)
                .password(role.password.expose())
                .options([("search_path", role.schema.as_str())]);
            let mut conn = options
                .connect()
                .await
                .with_context(|| format!("connecting as {}", role.role))?;
            migrator(&role.schema)
                .run(&mut conn)
                .await
                .with_context(|| format!("migrating {}", role.schema))?;
            println!("migrated schema {}", role.schema);
        }
    }
    Ok(())
}
