//! The messaging service binary: `messaging` (serve), `messaging migrate`, `messaging healthcheck`, `messaging openapi`.

use messaging::{Application, Settings};

// Why mimalloc, and what it was measured to save: docs/adr/0026-allocation-on-the-hot-path.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::from_env(&common::config::Env::from_process())?;
    let _telemetry = common::telemetry::init("messaging", &settings.base.telemetry);
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Some("migrate") => messaging::startup::migrate(&settings).await?,
        Some("healthcheck") => common::health::check_local(settings.base.http.port).await?,
        Some("openapi") => print!("{}", common::openapi::render(&messaging::openapi())),
        Some(other) => anyhow::bail!(
            "unknown command {other:?}; expected serve, migrate, healthcheck or openapi"
        ),
    }
    Ok(())
}
