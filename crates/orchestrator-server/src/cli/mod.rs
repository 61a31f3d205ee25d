//! Command line: `serve`, `run`, `validate`, `openapi`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use orchestrator_core::{CompileOptions, Diagnostic, compile_yaml};

use crate::config::{self, Overrides, Settings};

mod client;
mod purge;
mod run;

#[derive(Debug, Parser)]
#[command(
    name = "orchestrator",
    version,
    about = "Pipeline orchestration server"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args, Clone, Default)]
pub struct ServerFlags {
    /// Configuration file (default: ./orchestrator.yaml, else ~/.orchestrator/orchestrator.yaml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address to listen on, HOST:PORT (default 127.0.0.1:8080).
    #[arg(long)]
    pub bind: Option<String>,
    /// sqlite://FILE (default sqlite://orchestrator.db) or postgres://USER@HOST/DB.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Folder the filesystem tools work in (default ./workspace).
    #[arg(long)]
    pub workspace_root: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[arg(long)]
    pub log_level: Option<String>,
    /// `json` logs one JSON object per line; `pretty` (or `text`) is for people.
    #[arg(long, env = "ORCHESTRATOR_LOG_FORMAT", value_parser = ["pretty", "text", "json"], default_value = "pretty")]
    pub log_format: String,
    /// Worker slots of this process.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Serve the API only; steps are run by `orchestrator worker` processes.
    #[arg(long)]
    pub no_workers: bool,
    /// Listen on a non-loopback address even though authentication is off.
    #[arg(long)]
    pub allow_unauthenticated: bool,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a token and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// read, submit or admin.
        #[arg(long, value_parser = ["read", "submit", "admin"])]
        scope: String,
    },
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server and its workers.
    Serve(ServerFlags),
    /// Run workers only (no HTTP), sharing the database with `serve` processes.
    Worker(ServerFlags),
    /// Run one pipeline in this process and print its result
    /// (exit 0: succeeded, 1: failed, 2: invalid pipeline).
    Run {
        /// The pipeline YAML file (`-` for standard input).
        file: PathBuf,
        /// An input, KEY=VALUE (VALUE is read as YAML: numbers, booleans, lists).
        #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// Print the execution as JSON.
        #[arg(long)]
        json: bool,
        /// Folder the filesystem tools work in (default: the current folder).
        #[arg(long)]
        workspace_root: Option<PathBuf>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
        /// Let steps run commands with the `terminal` tool.
        #[arg(long)]
        enable_terminal: bool,
    },
    /// Compile a pipeline file and report every problem, or its execution levels.
    Validate {
        /// The pipeline YAML file (`-` for standard input).
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the OpenAPI document.
    Openapi,
    /// Manage API tokens in the configured database.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// Delete finished executions (with the executions they started) from
    /// the configured database now: by age and count, or by the configured
    /// `retention:` rules.
    Purge {
        #[command(flatten)]
        args: purge::PurgeArgs,
        #[command(flatten)]
        flags: ServerFlags,
    },
    /// Talk to a running server (--server, ORCHESTRATOR_URL).
    #[command(flatten)]
    Client(client::ClientCommand),
}

/// Exit code for an invalid pipeline.
const INVALID: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { file, json } => validate(&file, json),
        Command::Openapi => {
            match serde_json::to_string_pretty(&crate::openapi()) {
                Ok(text) => println!("{text}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
            ExitCode::SUCCESS
        }
        Command::Serve(flags) => with_runtime(|| serve(flags, false)),
        Command::Token { command, flags } => with_runtime(|| token(command, flags)),
        Command::Purge { args, flags } => with_runtime(|| purge::purge(args, flags)),
        Command::Client(command) => with_runtime(|| client::run(command)),
        Command::Worker(flags) => with_runtime(|| serve(flags, true)),
        Command::Run {
            file,
            inputs,
            json,
            workspace_root,
            timeout,
            enable_terminal,
        } => with_runtime(|| {
            run::run_file(file, inputs, json, workspace_root, timeout, enable_terminal)
        }),
    }
}

fn with_runtime<F, Fut>(f: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ExitCode>,
{
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn init_logging(level: &str, json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| {
            EnvFilter::try_new(format!(
                "{level},sqlx=warn,tower_http=warn,hyper=warn,rmcp=warn"
            ))
        })
        .unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a terminal (not in a log file), and never with NO_COLOR.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn settings(flags: &ServerFlags) -> Result<Settings, config::ConfigError> {
    let overrides = Overrides {
        config: flags.config.clone(),
        bind: flags.bind.clone(),
        database_url: flags.database_url.clone(),
        workspace_root: flags.workspace_root.clone(),
        log_level: flags.log_level.clone(),
        max_concurrent: flags.max_concurrent,
        allow_unauthenticated: flags.allow_unauthenticated,
    };
    let env: HashMap<String, String> = std::env::vars().collect();
    config::load(&overrides, &env)
}

/// Refuses to listen beyond loopback without authentication, unless told to.
pub fn check_exposure(settings: &Settings) -> Result<(), String> {
    if settings.auth.enabled
        || settings.bind.ip().is_loopback()
        || settings.auth.allow_unauthenticated
    {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {} with authentication off: anyone who can reach it could run pipelines. \
         Turn authentication on (ORCHESTRATOR_AUTH_ENABLED=true, then `orchestrator token create`), \
         bind to 127.0.0.1, or pass --allow-unauthenticated",
        settings.bind
    ))
}

/// The configuration and the database it names, for commands that work on
/// the database directly; what went wrong is printed.
async fn open_store(
    flags: &ServerFlags,
) -> Result<(Settings, std::sync::Arc<dyn orchestrator_store::Store>), ExitCode> {
    let settings = settings(flags).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(INVALID)
    })?;
    match orchestrator_store::connect(&settings.database_url).await {
        Ok(store) => Ok((settings, store)),
        Err(e) => {
            eprintln!(
                "error: cannot open database {}: {e}",
                orchestrator_store::redact_url(&settings.database_url)
            );
            Err(ExitCode::FAILURE)
        }
    }
}

async fn token(command: TokenCommand, flags: ServerFlags) -> ExitCode {
    let (settings, store) = match open_store(&flags).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let result = match command {
        TokenCommand::Create { .. } if settings.auth.pepper.0.is_empty() => {
            eprintln!(
                "error: {} is not set: a token made without it is refused once the server runs with it; set it as the server has it",
                settings.auth.pepper_env
            );
            return ExitCode::FAILURE;
        }
        TokenCommand::Create { name, scope } => {
            let scope = crate::auth::Scope::parse(&scope).unwrap_or(crate::auth::Scope::Read);
            let (record, text) = crate::auth::new_token(&name, scope, &settings.auth.pepper);
            store.create_token(&record).await.map(|()| {
                eprintln!(
                    "token '{}' ({}), id {}; it is shown only now:",
                    record.name, record.scope, record.id
                );
                println!("{text}");
            })
        }
        TokenCommand::List => store.list_tokens().await.map(|tokens| {
            for t in tokens {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "live"
                };
                println!("{}\t{}\t{}\t{state}", t.id, t.scope, t.name);
            }
        }),
        TokenCommand::Revoke { id } => store
            .revoke_token(&id, orchestrator_store::now_ms())
            .await
            .map(|done| {
                if done {
                    eprintln!("token {id} revoked");
                } else {
                    eprintln!("no live token {id}");
                }
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(flags: ServerFlags, workers_only: bool) -> ExitCode {
    let settings = match settings(&flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    init_logging(&settings.log_level, flags.log_format == "json");
    orchestrator_core::limits::configure(settings.core_limits);
    if !workers_only {
        if let Err(e) = check_exposure(&settings) {
            tracing::error!("{e}");
            return ExitCode::from(INVALID);
        }
        if !settings.auth.enabled {
            tracing::warn!(bind = %settings.bind, "authentication is off: every client that reaches {} has full access", settings.bind);
        }
    }
    for notice in &settings.notices {
        tracing::warn!("{notice}");
    }
    tracing::info!(
        database = %orchestrator_store::redact_url(&settings.database_url),
        workspace = %settings.workspace_root.display(),
        config = ?settings.config_file,
        "starting orchestrator {}",
        env!("CARGO_PKG_VERSION")
    );
    if workers_only {
        return run_workers(settings).await;
    }
    let server = match crate::start(settings, !flags.no_workers).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let token = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    match server.wait().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `orchestrator worker`: the worker pool without the HTTP API.
async fn run_workers(settings: Settings) -> ExitCode {
    let engine = match crate::app::build_engine(&settings).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let pool = engine.start(
        shutdown.clone(),
        Duration::from_secs(settings.shutdown_grace_seconds),
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    shutdown.cancel();
    let _ = pool.await;
    ExitCode::SUCCESS
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `KEY=VALUE` inputs (VALUE read as YAML: numbers, booleans, lists), as
/// `run` and `submit` take them.
fn parse_inputs(items: &[String]) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let mut pairs = BTreeMap::new();
    for item in items {
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("input '{item}' is not KEY=VALUE"))?;
        pairs.insert(k.to_string(), v.to_string());
    }
    Ok(crate::dto::inputs_from_query(&pairs))
}

fn read_input(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
}

/// Problems as the API writes them (`code`, `message`, `line`, …).
fn problems(list: &[Diagnostic]) -> Vec<crate::error::ProblemItem> {
    list.iter().map(crate::error::ProblemItem::from).collect()
}

fn validate(file: &PathBuf, json: bool) -> ExitCode {
    let env: HashMap<String, String> = std::env::vars().collect();
    match config::load(&Overrides::default(), &env) {
        Ok(s) => {
            orchestrator_core::limits::configure(s.core_limits);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    }
    let name = file.display().to_string();
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let catalog = orchestrator_core::builtin_catalog();
    let result = compile_yaml(
        &text,
        CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: None,
        },
    );
    match result {
        Ok(compiled) => {
            if json {
                let body = serde_json::json!({
                    "valid": true,
                    "pipeline": compiled.plan.pipeline.id,
                    "levels": compiled.plan.levels,
                    "warnings": problems(&compiled.warnings),
                });
                println!("{body:#}");
            } else {
                println!("{name} is valid");
                for (i, level) in compiled.plan.levels.iter().enumerate() {
                    println!("  level {i}: {}", level.join(", "));
                }
                print_diagnostics("warning", &name, &compiled.warnings);
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            if json {
                let body = serde_json::json!({"valid": false, "errors": problems(&err.errors), "warnings": problems(&err.warnings)});
                println!("{body:#}");
            } else {
                eprintln!("{name} is invalid: {} error(s)", err.errors.len());
                print_diagnostics("error", &name, &err.errors);
                print_diagnostics("warning", &name, &err.warnings);
            }
            ExitCode::from(INVALID)
        }
    }
}

fn print_diagnostics(label: &str, file: &str, diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        let place = match (d.line, d.column) {
            (Some(l), Some(c)) => format!("{file}:{l}:{c}"),
            _ => file.to_string(),
        };
        let step = d
            .step
            .as_deref()
            .map(|s| format!(" step '{s}':"))
            .unwrap_or_default();
        eprintln!("{place}: {label}[{}]:{step} {}", d.kind, d.message);
    }
}
