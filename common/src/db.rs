//! PostgreSQL: pools with bounded waits, per-service migrations, and the bootstrap that creates
//! the database, each service's role and its schema.
//!
//! One database, one schema per service, one login role per service that owns its schema and
//! has no privilege on the others. Each service keeps its migration history in its own schema
//! (`<schema>._sqlx_migrations`). See docs/adr/0002-schema-per-service.md.

use crate::config::{ConfigError, Env, Secret};
use anyhow::Context;
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, PgPool};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

mod statements;
pub use statements::StatementPool;

/// How a service connects to PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: the service's own role on the shared database.
    pub url: Secret,
    /// `DATABASE_MAX_CONNECTIONS` (default 10): this replica's share of the connection budget.
    pub max_connections: u32,
    /// `DATABASE_STATEMENT_CONNECTIONS` (default 10): the size of a [`StatementPool`], for the
    /// services that keep one beside their pool.
    pub statement_connections: u32,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS` (default 3000): longest wait for a pooled connection.
    pub acquire_timeout: Duration,
    /// `DATABASE_STATEMENT_TIMEOUT_MS` (default 5000): longest a statement may run.
    pub statement_timeout: Duration,
}

impl DatabaseSettings {
    /// Reads the settings; `default_url` is the local development role of the service.
    pub fn from_env(env: &Env, default_url: &str) -> Result<Self, ConfigError> {
        let settings = Self {
            url: env.secret("DATABASE_URL", default_url),
            max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 10)?,
            statement_connections: env.parse("DATABASE_STATEMENT_CONNECTIONS", 10)?,
            acquire_timeout: env.millis("DATABASE_ACQUIRE_TIMEOUT_MS", 3000)?,
            statement_timeout: env.millis("DATABASE_STATEMENT_TIMEOUT_MS", 5000)?,
        };
        PgConnectOptions::from_str(settings.url.expose())
            .map_err(|e| env.invalid("DATABASE_URL", format!("not a PostgreSQL URL: {e}")))?;
        Ok(settings)
    }

    /// Connection options: the URL, the service's schema first on the search path, and the
    /// statement timeout. The connections are named after the schema (`application_name`, as
    /// `pg_stat_activity` and the server's log show it) unless the URL names them.
    pub fn connect_options(&self, schema: &str) -> anyhow::Result<PgConnectOptions> {
        let mut options =
            PgConnectOptions::from_str(self.url.expose()).context("parsing DATABASE_URL")?;
        if options.get_application_name().is_none() {
            options = options.application_name(schema);
        }
        Ok(options
            .options([
                ("search_path", schema.to_owned()),
                (
                    "statement_timeout",
                    format!("{}", self.statement_timeout.as_millis()),
                ),
            ])
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_millis(500)))
    }

    /// A pool that connects lazily, so a service starts (and reports not-ready) while
    /// PostgreSQL is down, and whose waits are bounded.
    ///
    /// Inside a Tokio runtime, a checked-out connection is pinged only when in doubt, and a
    /// watcher holds one more connection to notice a restart (see [`ServerWatch`] and
    /// docs/adr/0021). Outside one, every checkout is pinged.
    pub fn pool(&self, schema: &str) -> anyhow::Result<PgPool> {
        let options = self.connect_options(schema)?;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.acquire_timeout)
            // Every acquisition becomes a trace event, turned into db_pool_acquire_seconds.
            .acquire_time_level(tracing::log::LevelFilter::Trace);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Ok(pool.connect_lazy_with(options));
        };
        let watch = ServerWatch::spawn(&runtime, options.clone(), self.acquire_timeout);
        Ok(pool
            .test_before_acquire(false)
            .before_acquire(move |conn, meta| {
                let trusted = watch.trusts(meta.idle_for);
                Box::pin(async move {
                    if !trusted {
                        crate::metrics::db_connection_checks().inc();
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_lazy_with(options))
    }
}

/// `options` with its connections named after those of `options` (`pool` when unnamed),
/// followed by `suffix`: how a pool's watcher, or a second pool, says whose it is.
pub(crate) fn suffixed(options: &PgConnectOptions, suffix: &str) -> PgConnectOptions {
    let name = format!(
        "{} {suffix}",
        options.get_application_name().unwrap_or("pool")
    );
    options.clone().application_name(&name)
}

/// How long after its last check a pooled connection is handed out without another.
///
/// sqlx pings every connection as it returns to the pool, so a connection idle for less than
/// this answered that long ago at most. The pool hands out the connection idle longest, so
/// under a light load each one idles for its pool's size over the request rate: 16 connections
/// at 20 requests a second idle 0.8 s each.
pub const TRUSTED_FOR: Duration = Duration::from_secs(5);

/// Whether the pool's connections may be trusted without a ping: a watcher holds one
/// connection of its own to the server and notices when it ends, as all of them do when the
/// server restarts or crashes (docs/adr/0021).
///
/// A connection is trusted when it answered within [`TRUSTED_FOR`], the watcher is connected,
/// and the watcher has not lost its connection since that answer. Anything else is pinged, as
/// sqlx's `test_before_acquire` would. What this cannot see is one backend ended alone (by
/// `pg_terminate_backend`): the request that meets it fails with a 503, and the connection is
/// dropped as it is returned.
struct ServerWatch {
    epoch: Instant,
    /// Whether the watcher holds a live connection.
    connected: AtomicBool,
    /// Nanoseconds after `epoch` when the watcher last lost its connection.
    lost_at: AtomicU64,
    /// Dropped with the pool: the watcher ends.
    _stop: tokio::sync::watch::Sender<()>,
}

impl ServerWatch {
    fn spawn(
        runtime: &tokio::runtime::Handle,
        options: PgConnectOptions,
        timeout: Duration,
    ) -> Arc<Self> {
        let (stop, stopped) = tokio::sync::watch::channel(());
        let watch = Arc::new(Self {
            epoch: Instant::now(),
            connected: AtomicBool::new(false),
            lost_at: AtomicU64::new(0),
            _stop: stop,
        });
        // Named after the pool's connections, so an operator sees whose watcher it is.
        runtime.spawn(watch_server(
            Arc::downgrade(&watch),
            suffixed(&options, "watch"),
            timeout,
            stopped,
        ));
        watch
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Whether a connection last checked `idle_for` ago may go out unchecked.
    fn trusts(&self, idle_for: Duration) -> bool {
        if idle_for >= TRUSTED_FOR || !self.connected.load(Ordering::Acquire) {
            return false;
        }
        let checked_at = Instant::now().checked_sub(idle_for).unwrap_or(self.epoch);
        self.nanos(checked_at) > self.lost_at.load(Ordering::Acquire)
    }

    fn set_connected(&self) {
        self.connected.store(true, Ordering::Release);
    }

    fn set_lost(&self) {
        self.lost_at
            .store(self.nanos(Instant::now()), Ordering::Release);
        self.connected.store(false, Ordering::Release);
    }
}

/// The channel the watcher listens on; nothing notifies it.
const WATCH_CHANNEL: &str = "pool_watch";

/// Holds a connection of its own and waits for it to end; reconnects, with a growing pause
/// while the server refuses. Ends when the pool is dropped.
async fn watch_server(
    watch: Weak<ServerWatch>,
    options: PgConnectOptions,
    timeout: Duration,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(timeout)
        .idle_timeout(None)
        .max_lifetime(None)
        .connect_lazy_with(options);
    let mut pause = Duration::from_millis(50);
    loop {
        let listener = tokio::select! {
            listener = sqlx::postgres::PgListener::connect_with(&own) => listener,
            _ = stopped.changed() => return,
        };
        // A statement ties the session to a server backend, also through a pooler in session
        // mode (which otherwise assigns one at the first statement): its end is the server's.
        // Nothing is ever sent on the channel, so the first thing the connection yields is its
        // end.
        let listening = match listener {
            Ok(mut listener) => listener.listen(WATCH_CHANNEL).await.map(|()| listener),
            Err(e) => Err(e),
        };
        if let Ok(mut listener) = listening {
            listener.eager_reconnect(false);
            let Some(watch) = watch.upgrade() else { return };
            watch.set_connected();
            drop(watch);
            pause = Duration::from_millis(50);
            loop {
                tokio::select! {
                    received = listener.try_recv() => {
                        if !matches!(received, Ok(Some(_))) {
                            break;
                        }
                    }
                    _ = stopped.changed() => return,
                }
            }
            tracing::info!("the PostgreSQL watcher's connection ended; checking every connection");
        }
        match watch.upgrade() {
            Some(watch) => watch.set_lost(),
            None => return,
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stopped.changed() => return,
        }
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

/// The migrator of a service, recording its history in its own schema.
///
/// Migrations applied by a newer release of the service are accepted: during a rolling update
/// (or a rollback) the previous release starts against the schema its successor migrated. Our
/// migrations only add (a column with a default, a table, an index), so the previous code still
/// works there; a migration that takes something away ships in a release after the last one
/// that used it. Migrations both sides know must still match their checksums.
pub fn migrator_for(mut migrator: Migrator, schema: &str) -> Migrator {
    migrator.dangerous_set_table_name(format!("{schema}._sqlx_migrations"));
    migrator.set_ignore_missing(true);
    migrator
}

/// A service's place in the database: its login role and the schema it owns.
#[derive(Debug, Clone)]
pub struct ServiceRole {
    /// The schema, named after the service (`users`).
    pub schema: String,
    /// The login role (`users_svc`).
    pub role: String,
    /// The role's password, set when the role is created.
    pub password: Secret,
}

impl ServiceRole {
    /// The role of `service` with its conventional names: schema `<service>`, role `<service>_svc`.
    pub fn new(service: &str, password: Secret) -> Self {
        Self {
            schema: service.to_owned(),
            role: format!("{service}_svc"),
            password,
        }
    }
}

fn ident(name: &str) -> anyhow::Result<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    anyhow::ensure!(ok, "{name:?} is not a plain lower-case SQL identifier");
    Ok(format!("\"{name}\""))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Creates, if missing, the database `database`, and for each service its login role and the
/// schema that role owns; revokes everything else. Idempotent, and safe to run concurrently
/// (roles are cluster-wide, so parallel test databases share them).
///
/// `admin` is a superuser connection to any database of the cluster (usually `postgres`).
pub async fn bootstrap(
    admin: &PgConnectOptions,
    database: &str,
    services: &[ServiceRole],
) -> anyhow::Result<()> {
    let db = ident(database)?;
    let mut conn = admin
        .connect()
        .await
        .context("connecting as the admin role")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let created = sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE {db}")))
            .execute(&mut conn)
            .await;
        if let Err(e) = created {
            let duplicate =
                e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P04");
            if !duplicate {
                return Err(e).context("creating the database");
            }
        }
    }
    for service in services {
        // CREATE ROLE has no IF NOT EXISTS; two bootstraps racing may both try.
        let create_role = format!(
            "DO $$ BEGIN CREATE ROLE {} LOGIN PASSWORD {} NOSUPERUSER NOCREATEDB NOCREATEROLE; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$",
            ident(&service.role)?,
            literal(service.password.expose()),
        );
        sqlx::raw_sql(AssertSqlSafe(create_role))
            .execute(&mut conn)
            .await
            .context("creating a role")?;
    }
    conn.close().await?;

    let mut conn = admin
        .clone()
        .database(database)
        .connect()
        .await
        .context("connecting to the database")?;
    let mut sql = format!(
        "REVOKE ALL ON DATABASE {db} FROM PUBLIC; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
    );
    for service in services {
        let (role, schema) = (ident(&service.role)?, ident(&service.schema)?);
        sql.push_str(&format!(
            "GRANT CONNECT, TEMPORARY ON DATABASE {db} TO {role};
             CREATE SCHEMA IF NOT EXISTS {schema} AUTHORIZATION {role};
             ALTER SCHEMA {schema} OWNER TO {role};
             REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;"
        ));
    }
    sqlx::raw_sql(AssertSqlSafe(sql))
        .execute(&mut conn)
        .await
        .context("creating schemas and grants")?;
    conn.close().await?;
    Ok(())
}

/// Applies `migrator` (built with [`migrator_for`]) over one connection of `pool`.
pub async fn migrate(pool: &PgPool, migrator: &Migrator) -> anyhow::Result<()> {
    let mut conn = pool
        .acquire()
        .await
        .context("acquiring a connection to migrate")?;
    migrator
        .run(&mut *conn)
        .await
        .context("applying migrations")?;
    Ok(())
}

/// Checks that the database answers within `timeout`.
pub async fn ping(pool: &PgPool, timeout: Duration) -> bool {
    let check = async {
        let mut conn = pool.acquire().await?;
        conn.ping().await
    };
    matches!(tokio::time::timeout(timeout, check).await, Ok(Ok(())))
}

/// The 503 to answer when `error` says PostgreSQL cannot serve now — unreachable, restarting,
/// out of connections, or too slow for `statement_timeout` — rather than that a request or our
/// code is wrong. Clients may retry after `Retry-After`. The cause is logged here.
pub fn unavailable(error: &sqlx::Error) -> Option<crate::problem::Problem> {
    let transient = match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // 08: connection exceptions; 57P01-03: shutting down or starting up; 53300: too many
        // connections; 57014: cancelled by statement_timeout.
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            code.starts_with("08")
                || matches!(
                    code.as_ref(),
                    "57P01" | "57P02" | "57P03" | "53300" | "57014"
                )
        }),
        _ => false,
    };
    transient.then(|| {
        tracing::warn!(error = %error, "database unavailable");
        crate::problem::Problem::unavailable("the database is unavailable; retry shortly")
    })
}

/// How a transaction holds an account's write lock: shared by the account's own writes,
/// exclusive for the deletion that sweeps them (docs/adr/0013).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountLock {
    Write,
    Delete,
}

/// Takes `account`'s write lock until the transaction ends: a transaction advisory lock keyed
/// by the account. The services share one database, so a deletion holding it in one service
/// briefly holds that account's writes in the others too; they are all about the departing
/// account, and each deletion is one short transaction. Writes in an account's name take it
/// [`AccountLock::Write`] and then, in a statement of their own, check that the account has not
/// departed; the deletion takes it [`AccountLock::Delete`] before recording the departure.
///
/// posts' create takes the write lock in its PL/pgSQL function (`posts.create_post`,
/// docs/adr/0033), and messaging's writes in a conversation inside the statement that locks its
/// row (`messaging::store::conversations::lock_for_participant`), so the lock's key is spelled
/// there too: posts' tests `a_keyed_post_waits_for_its_accounts_deletion_in_flight_and_is_then_refused`
/// and `a_post_without_a_key_waits_for_its_accounts_deletion_in_flight_and_is_then_refused`, and
/// messaging's `a_send_waits_for_its_accounts_deletion_in_flight_and_is_then_refused`, fail if
/// they drift apart.
pub async fn lock_account(
    conn: &mut sqlx::PgConnection,
    account: uuid::Uuid,
    mode: AccountLock,
) -> Result<(), sqlx::Error> {
    let sql = match mode {
        AccountLock::Write => {
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1::uuid::text, 11))"
        }
        AccountLock::Delete => "SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 11))",
    };
    sqlx::query(sql).bind(account).execute(conn).await?;
    Ok(())
}
