//! `bridgehead serve`: load, validate, bind, run until SIGTERM.

use std::path::Path;
use std::process::ExitCode;

use bridgehead_gateway::{App, AppOptions, Listeners};

pub fn run(config: &Path, watch: bool) -> anyhow::Result<ExitCode> {
    super::init_logging();
    let loaded = match bridgehead_config::load(config) {
        Ok(l) => l,
        Err(d) => {
            eprintln!("{d}");
            return Ok(ExitCode::FAILURE);
        }
    };
    // What `config check` checks beyond validation (TLS and key files, the access log's
    // directory), before anything is opened or bound.
    if let Err(e) = bridgehead_gateway::preflight(&loaded) {
        eprintln!("{}: {e}", loaded.file.display());
        return Ok(ExitCode::FAILURE);
    }
    let workers = super::effective_workers(loaded.config.server.workers);
    let rt = super::runtime(Some(workers))?;
    rt.block_on(async move {
        let flavor = if workers == 1 { "current_thread" } else { "multi_thread" };
        tracing::info!(workers, runtime = flavor, "async runtime");
        let listeners = Listeners::bind(&loaded.config)?;
        let opts = AppOptions {
            config_path: Some(config.to_owned()),
            watch_config: watch,
            sighup: true,
            ..AppOptions::default()
        };
        let app = App::build(loaded, listeners, opts).await?;
        tracing::info!(data = %app.data_addr(), admin = %app.admin_addr(), "listening");
        app.run(bridgehead_gateway::shutdown_signal()).await?;
        Ok(ExitCode::SUCCESS)
    })
}
