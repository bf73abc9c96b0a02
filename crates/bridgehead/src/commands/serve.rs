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
    // One worker: everything on this thread. Several: each data-plane worker on a thread and
    // single-threaded runtime of its own (App::run starts them), and this thread keeps the admin
    // listener and the background tasks.
    let workers = bridgehead_gateway::workers(&loaded.config);
    let rt = super::runtime(Some(1))?;
    rt.block_on(async move {
        tracing::info!(workers, "data-plane workers");
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
