//! One module per command that does more than a few lines.

pub mod apikey;
pub mod bundle;
pub mod collection;
pub mod demo;
pub mod endpoints;
pub mod grpc;
pub mod jwt;
pub mod keys;
pub mod oauth;
pub mod probe;
pub mod serve;
pub mod soap;
pub mod token;
pub mod version;
pub mod webhook;

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;

/// Output format for commands a script may read.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// A tokio runtime with `workers` threads, or one per CPU this process may run on when unset.
/// One worker means a current-thread runtime. (`serve` runs its data-plane workers on threads
/// of their own; see `App::run`.)
pub fn runtime(workers: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let n = workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get))
        .max(1);
    let mut b = match n {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    };
    b.enable_all().thread_name("bridgehead").build().context("cannot start the async runtime")
}

/// Structured logs (JSON lines) to stderr; stdout carries the access log only.
/// How logs are written (`--log-format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise.
    Auto,
    Json,
    Text,
}

/// The `--log-format` given (set once, before any command runs).
pub static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

/// Logs to stderr, filtered by `BRIDGEHEAD_LOG` (default `info`), in the `--log-format` given:
/// with `auto`, readable text on a terminal and JSON lines otherwise (a pipe, journald,
/// `kubectl logs`).
pub fn init_logging() {
    use std::io::IsTerminal as _;
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("BRIDGEHEAD_LOG").unwrap_or_else(|_| "info".into());
    let terminal = std::io::stderr().is_terminal();
    let text = match LOG_FORMAT.get().copied().unwrap_or(LogFormat::Auto) {
        LogFormat::Auto => terminal,
        LogFormat::Json => false,
        LogFormat::Text => true,
    };
    // Colours only for a terminal: a file or journald gets plain text.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(terminal);
    let _ = if text { builder.try_init() } else { builder.json().try_init() };
}

pub fn init(file: &Path, force: bool) -> anyhow::Result<ExitCode> {
    if file.exists() && !force {
        eprintln!("{} already exists; pass --force to overwrite it", file.display());
        return Ok(ExitCode::FAILURE);
    }
    std::fs::write(file, bridgehead_config::STARTER)
        .with_context(|| format!("cannot write {}", file.display()))?;
    println!("wrote {}; check it with: bridgehead config check {}", file.display(), file.display());
    Ok(ExitCode::SUCCESS)
}

pub fn config_check(file: &Path, output: Output) -> anyhow::Result<ExitCode> {
    let result = bridgehead_config::load(file)
        .map_err(|d| d.0.iter().map(ToString::to_string).collect::<Vec<_>>())
        .and_then(|loaded| {
            bridgehead_gateway::preflight(&loaded).map_err(|e| vec![format!("{}: {e}", file.display())])?;
            Ok(loaded.warnings.iter().map(warning_line).collect::<Vec<_>>())
        });
    let name = file.display().to_string();
    match (result, output) {
        (Ok(warnings), Output::Text) => {
            for w in &warnings {
                println!("{w}");
            }
            println!("{name}: ok");
            Ok(ExitCode::SUCCESS)
        }
        (Ok(warnings), Output::Json) => {
            println!(
                "{}",
                serde_json::json!({"file": name, "valid": true, "errors": [], "warnings": warnings})
            );
            Ok(ExitCode::SUCCESS)
        }
        (Err(lines), Output::Text) => {
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::FAILURE)
        }
        (Err(lines), Output::Json) => {
            println!(
                "{}",
                serde_json::json!({"file": name, "valid": false, "errors": lines, "warnings": []})
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// `file:line:col: key.path: warning: message`.
fn warning_line(d: &bridgehead_config::Diagnostic) -> String {
    let mut d = d.clone();
    d.message = format!("warning: {}", d.message);
    d.to_string()
}
