//! `orchestrator run`: one pipeline in this process, on a throwaway SQLite
//! store, printing each step change as it happens.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use orchestrator_core::flow::ExecutionStatus;
use orchestrator_engine::{ExecutionOptions, PipelineSource, Submission, SubmitError};

use super::{INVALID, init_logging, parse_inputs, print_diagnostics, read_input};
use crate::config::{self, Overrides, Settings};

pub(super) async fn run_file(
    file: PathBuf,
    inputs: Vec<String>,
    json: bool,
    workspace: Option<PathBuf>,
    timeout: u64,
    enable_terminal: bool,
) -> ExitCode {
    init_logging(
        &std::env::var("ORCHESTRATOR_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
        false,
    );
    let name = file.display().to_string();
    let text = match read_input(&file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let context = match parse_inputs(&inputs) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let dir = std::env::temp_dir().join(format!(
        "orchestrator-run-{}",
        uuid::Uuid::new_v4().simple()
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    // Tools are configured as for the server (orchestrator.yaml and
    // ORCHESTRATOR_* variables); the database is a throwaway one.
    let env: HashMap<String, String> = std::env::vars().collect();
    let loaded = match config::load(&Overrides::default(), &env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            let _ = std::fs::remove_dir_all(&dir);
            return ExitCode::from(INVALID);
        }
    };
    orchestrator_core::limits::configure(loaded.core_limits);
    let settings = Settings {
        database_url: format!("sqlite://{}", dir.join("run.db").display()),
        workspace_root: workspace.unwrap_or_else(|| PathBuf::from(".")),
        enable_terminal: enable_terminal || loaded.enable_terminal,
        ..loaded
    };
    let code = run_in(&settings, &name, text, context, json, timeout).await;
    let _ = std::fs::remove_dir_all(&dir);
    code
}

async fn run_in(
    settings: &Settings,
    name: &str,
    text: String,
    context: serde_json::Map<String, serde_json::Value>,
    json: bool,
    timeout: u64,
) -> ExitCode {
    let engine = match crate::app::build_engine(settings).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let workers = engine.start(shutdown.clone(), Duration::from_secs(5));
    let submission = Submission {
        source: PipelineSource::Yaml(text),
        context,
        options: ExecutionOptions::default(),
        idempotency_key: None,
        token_id: None,
    };
    let record = match engine.submit(submission).await {
        Ok((r, _)) => r,
        Err(SubmitError::Compile(e)) => {
            eprintln!("{name} is invalid: {} error(s)", e.errors.len());
            print_diagnostics("error", name, &e.errors);
            return ExitCode::from(INVALID);
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let waited = watch(&engine, &record.id, Duration::from_secs(timeout), !json).await;
    match &waited {
        Watched::TimedOut => {
            eprintln!("{name}: timed out after {timeout} s (--timeout); cancelling it");
            let _ = engine.cancel(&record.id).await;
        }
        Watched::Interrupted => {
            eprintln!("{name}: interrupted; cancelling it");
            let _ = engine.cancel(&record.id).await;
        }
        Watched::Ended | Watched::Failed(_) => {}
    }
    if matches!(waited, Watched::TimedOut | Watched::Interrupted) {
        // The cancellation stops running steps (and kills their commands'
        // process groups) before the workers are let go.
        let _ = engine
            .wait_finished(&record.id, Duration::from_secs(10))
            .await;
    }
    shutdown.cancel();
    let _ = workers.await;
    if let Watched::Failed(e) = &waited {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    let done = match engine.store().get_execution(&record.id).await {
        Ok(Some(d)) => d,
        Ok(None) => return ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let steps = engine
        .store()
        .list_step_summaries(&done.id)
        .await
        .unwrap_or_default();
    let succeeded = done.status == ExecutionStatus::Succeeded;
    let view = crate::dto::ExecutionView::new(done, steps);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).unwrap_or_default()
        );
    } else {
        println!("{name}: {}", view.status);
        for s in &view.steps {
            let extra = match (&s.error, &s.reason) {
                (Some(e), _) => format!(" ({}: {e})", s.error_type.as_deref().unwrap_or("error")),
                (None, Some(r)) => format!(" ({r})"),
                _ => String::new(),
            };
            println!("  {:<24} {}{extra}", s.id, s.status);
        }
        if let Some(outputs) = &view.outputs {
            println!(
                "outputs: {}",
                serde_json::to_string_pretty(outputs).unwrap_or_default()
            );
        }
    }
    if succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// How waiting for a `run` ended.
enum Watched {
    Ended,
    TimedOut,
    Interrupted,
    Failed(String),
}

/// Waits for the execution to end, printing one line per step change as it
/// happens (`[done/total] step status`) when `print`.
async fn watch(
    engine: &orchestrator_engine::Engine,
    id: &str,
    timeout: Duration,
    print: bool,
) -> Watched {
    use orchestrator_core::flow::StepStatus;
    let deadline = tokio::time::Instant::now() + timeout;
    let mut seen: HashMap<String, (StepStatus, i64)> = HashMap::new();
    let mut ctrl_c = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let steps = match engine.store().list_steps(id).await {
            Ok(s) => s,
            Err(e) => return Watched::Failed(e.to_string()),
        };
        if print {
            let total = steps.len();
            let done = steps.iter().filter(|s| s.status.is_terminal()).count();
            for s in &steps {
                let now = (s.status, s.attempt);
                if seen.get(&s.step_id) != Some(&now) {
                    let extra = match (s.status, s.error.as_deref()) {
                        (StepStatus::Failed | StepStatus::Retrying, Some(e)) => format!(": {e}"),
                        _ => String::new(),
                    };
                    eprintln!(
                        "[{done}/{total}] {} {} (attempt {}){extra}",
                        s.step_id,
                        s.status.as_str(),
                        s.attempt
                    );
                    seen.insert(s.step_id.clone(), now);
                }
            }
        }
        match engine.store().get_execution(id).await {
            Ok(Some(e)) if e.status.is_terminal() => return Watched::Ended,
            Ok(_) => {}
            Err(e) => return Watched::Failed(e.to_string()),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = tokio::time::sleep_until(deadline) => return Watched::TimedOut,
            _ = &mut ctrl_c => return Watched::Interrupted,
        }
    }
}
