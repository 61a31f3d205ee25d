//! `python-executor` runs real Python, sees nothing of the server's
//! environment, and is stopped at its timeout with everything it started.
#![cfg(unix)]

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_tools::python::PythonExecutor;
use orchestrator_tools::testing::test_workspace;
use orchestrator_tools::{Tool, ToolContext, ToolError};
use serde_json::{Map, Value, json};

/// These tests need a `python3`; a machine without one skips them, saying so.
fn have_python() -> bool {
    let found = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipping: python3 is not installed");
    }
    found
}

async fn run(ctx: &ToolContext, p: Value) -> Result<Value, ToolError> {
    PythonExecutor::default()
        .execute(
            "execute",
            &p.as_object().cloned().unwrap_or_else(Map::new),
            ctx,
        )
        .await
}

#[tokio::test]
async fn code_runs_in_the_workspace_with_its_arguments() {
    if !have_python() {
        return;
    }
    let ws = test_workspace();
    let ctx = &ws.ctx;
    let out = run(
        ctx,
        json!({"code": "import sys, os\nprint(sum(range(10)), sys.argv[1:])\nopen('made.txt', 'w').write(os.environ['GREETING'])\nprint('warn', file=sys.stderr)", "args": ["a", 2], "env": {"GREETING": "hi"}}),
    )
    .await
    .expect("runs");
    assert_eq!(out["stdout"], "45 ['a', '2']\n");
    assert_eq!(out["stderr"], "warn\n");
    assert_eq!(out["return_code"], 0);
    assert_eq!(out["success"], true);
    assert_eq!(
        std::fs::read_to_string(ctx.workspace.join("made.txt")).expect("file"),
        "hi"
    );
}

#[tokio::test]
async fn the_servers_environment_does_not_reach_the_code() {
    if !have_python() {
        return;
    }
    let ws = test_workspace();
    let out = run(
        &ws.ctx,
        json!({"code": "import os\nprint(' '.join(sorted(os.environ)))\nprint(os.environ['HOME'])"}),
    )
    .await
    .expect("runs");
    let lines: Vec<&str> = out["stdout"].as_str().unwrap_or_default().lines().collect();
    // Cargo gives the test process these; none of them reaches the code
    // (an interpreter wrapper, such as pyenv's, may add its own).
    let names: Vec<&str> = lines[0].split_whitespace().collect();
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("CARGO")) {
        assert!(
            !names.contains(&name.as_str()),
            "{name} reached the code: {names:?}"
        );
    }
    assert!(std::env::var("CARGO_MANIFEST_DIR").is_ok(), "run by cargo");
    assert_eq!(PathBuf::from(lines[1]), ws.ctx.workspace);
    let refused = run(
        &ws.ctx,
        json!({"code": "pass", "env": {"PYTHONPATH": "/tmp"}}),
    )
    .await
    .expect_err("refused");
    assert_eq!(refused.kind, "PermissionError");
}

#[tokio::test]
async fn failures_and_timeouts_are_step_errors() {
    if !have_python() {
        return;
    }
    let ws = test_workspace();
    let ctx = &ws.ctx;
    let e = run(ctx, json!({"code": "raise ValueError('bad input')"}))
        .await
        .expect_err("fails");
    assert_eq!(e.kind, "CommandError");
    assert!(
        e.message.contains("exited with code 1") && e.message.contains("ValueError: bad input"),
        "{}",
        e.message
    );
    let out = run(
        ctx,
        json!({"code": "import sys; sys.exit(3)", "allow_failure": true}),
    )
    .await
    .expect("let through");
    assert_eq!(out["return_code"], 3);
    assert!(out.get("success").is_none(), "{out}");
    // A child process it starts goes with it at the timeout.
    let started = std::time::Instant::now();
    let e = run(
        ctx,
        json!({"code": "import subprocess, time\np = subprocess.Popen(['sleep', '30'])\nopen('pid', 'w').write(str(p.pid))\ntime.sleep(30)", "timeout": 1}),
    )
    .await
    .expect_err("timed out");
    assert_eq!(e.kind, "TimeoutError");
    assert!(started.elapsed() < Duration::from_secs(10));
    let pid = std::fs::read_to_string(ctx.workspace.join("pid")).expect("pid");
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    for _ in 0..100 {
        let zombie_or_gone = std::fs::read_to_string(proc.join("stat"))
            .map_or(true, |s| s.split_whitespace().nth(2) == Some("Z"));
        if zombie_or_gone {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the child of the timed-out code still runs");
}
