//! The `orchestrator` binary.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = orchestrator_server::cli::Cli::parse();
    orchestrator_server::cli::run(args)
}
