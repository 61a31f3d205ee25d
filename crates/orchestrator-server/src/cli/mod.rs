//! Command line: `orchestrator validate FILE [--json]`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use orchestrator_core::{CompileOptions, Diagnostic, builtin_catalog, compile_yaml};

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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Compile a pipeline file and report every problem, or its execution levels.
    Validate {
        /// The pipeline YAML file (`-` for standard input).
        file: PathBuf,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Exit code for an invalid pipeline.
const INVALID: u8 = 2;

pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { file, json } => validate(&file, json),
    }
}

fn read_input(file: &PathBuf) -> std::io::Result<String> {
    if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
}

fn validate(file: &PathBuf, json: bool) -> ExitCode {
    let name = file.display().to_string();
    let text = match read_input(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {name}: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let catalog = builtin_catalog();
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
                    "warnings": compiled.warnings,
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
                let body = serde_json::json!({
                    "valid": false,
                    "errors": err.errors,
                    "warnings": err.warnings,
                });
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
