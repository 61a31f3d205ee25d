//! The terminal tool runs real processes and leaves none behind.
#![cfg(unix)]

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_tools::terminal::Terminal;
use orchestrator_tools::testing::{TestWorkspace, test_workspace};
use orchestrator_tools::{Tool, ToolContext, ToolError};
use serde_json::{Map, Value, json};

fn ctx() -> (ToolContext, TestWorkspace) {
    let ws = test_workspace();
    (ws.ctx.clone(), ws)
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn run(t: &Terminal, ctx: &ToolContext, p: Value) -> Result<Value, ToolError> {
    t.execute("run", &params(p), ctx).await
}

/// Waits until the process whose pid is in `file` is gone.
async fn gone(ctx: &ToolContext, file: &str) -> bool {
    let pid = std::fs::read_to_string(ctx.workspace.join(file)).expect("pid file");
    let proc = PathBuf::from(format!("/proc/{}", pid.trim()));
    for _ in 0..200 {
        if !proc.exists()
            || std::fs::read_to_string(proc.join("stat")).is_ok_and(|s| s.contains(") Z "))
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn commands_run_in_the_workspace_and_report_their_output() {
    let (ctx, _ws) = ctx();
    let t = Terminal::default();
    let r = run(
        &t,
        &ctx,
        json!({"command": "echo hi; echo err >&2; pwd", "env": {"X": "1"}}),
    )
    .await
    .expect("runs");
    assert_eq!(r["return_code"], 0);
    assert_eq!(r["stderr"], "err\n");
    // The seed's fields: what ran, where, that it succeeded, how long.
    assert_eq!(r["command"], "echo hi; echo err >&2; pwd");
    assert_eq!(
        (r["success"].clone(), r["working_dir"].clone()),
        (json!(true), json!("."))
    );
    assert!(
        r["execution_time"].as_f64().is_some_and(|t| t >= 0.0),
        "{r}"
    );
    let out = r["stdout"].as_str().unwrap_or_default();
    assert!(
        out.starts_with("hi\n")
            && out.trim_end().ends_with(
                ctx.workspace
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("?")
            ),
        "{out}"
    );
    let r = run(&t, &ctx, json!({"command": ["printf", "%s", "a b"]}))
        .await
        .expect("argv");
    assert_eq!(r["stdout"], "a b");
}

#[tokio::test]
async fn failures_are_typed() {
    let (ctx, _ws) = ctx();
    let t = Terminal::default();
    let e = run(&t, &ctx, json!({"command": "echo bad >&2; exit 3"}))
        .await
        .expect_err("exit 3");
    assert_eq!(e.kind, "CommandError");
    assert!(
        e.message.contains("code 3") && e.message.contains("bad"),
        "{e:?}"
    );
    let r = run(
        &t,
        &ctx,
        json!({"command": "exit 3", "allow_failure": true}),
    )
    .await
    .expect("allowed");
    assert_eq!(r["return_code"], 3);
    assert!(
        r.get("success").is_none(),
        "a let-through failure does not fail its step: {r}"
    );
    let e = run(&t, &ctx, json!({"command": ["no-such-program-xyz"]}))
        .await
        .expect_err("missing");
    assert_eq!(e.kind, "FileNotFoundError");
    let e = run(&t, &ctx, json!({"command": "ls", "working_dir": "../.."}))
        .await
        .expect_err("escape");
    assert_eq!(e.kind, "PermissionError");
    let only_echo = Terminal {
        allowed_programs: Some(["echo".to_string()].into()),
        ..Default::default()
    };
    let e = run(&only_echo, &ctx, json!({"command": "rm -rf x"}))
        .await
        .expect_err("not allowed");
    assert_eq!(e.kind, "PermissionError");
    run(&only_echo, &ctx, json!({"command": "echo ok"}))
        .await
        .expect("allowed");
    let small = Terminal {
        max_output_bytes: Some(100),
        ..Default::default()
    };
    let r = run(
        &small,
        &ctx,
        json!({"command": "head -c 100000 /dev/zero | tr '\\0' a"}),
    )
    .await
    .expect("runs");
    assert_eq!(r["stdout"].as_str().map(str::len), Some(100));
    assert_eq!(r["truncated"], true);
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let (ctx, _ws) = ctx();
    let t = Terminal::default();
    let e = run(
        &t,
        &ctx,
        json!({"command": "sleep 30 & echo $! > child.pid; wait", "timeout": 0.5}),
    )
    .await
    .expect_err("timeout");
    assert_eq!(e.kind, "TimeoutError");
    assert!(
        gone(&ctx, "child.pid").await,
        "the background child survived"
    );
}

#[tokio::test]
async fn cancelling_or_dropping_stops_the_command() {
    let (ctx, _ws) = ctx();
    let t = Terminal::default();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cancel.cancel();
    });
    let e = run(
        &t,
        &ctx,
        json!({"command": "sleep 30 & echo $! > a.pid; wait"}),
    )
    .await
    .expect_err("cancelled");
    assert_eq!(e.kind, "CancelledError");
    assert!(gone(&ctx, "a.pid").await);

    // The engine drops the future on a step timeout: nothing may survive that either.
    let (ctx, _ws2) = self::ctx();
    let fut = run(
        &t,
        &ctx,
        json!({"command": "sleep 30 & echo $! > b.pid; wait"}),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(300), fut)
            .await
            .is_err()
    );
    assert!(gone(&ctx, "b.pid").await);
}

#[tokio::test]
async fn an_allow_list_runs_only_its_programs_without_a_shell() {
    let (ctx, _ws) = ctx();
    let only_ls = Terminal {
        allowed_programs: Some(["ls".to_string(), "echo".to_string()].into()),
        ..Default::default()
    };
    // Each of these ran every command after the first word.
    for line in [
        "ls >/dev/null && touch and.txt",
        "ls; touch semi.txt",
        "ls | touch pipe.txt",
        "ls $(touch subst.txt)",
        "ls `touch tick.txt`",
        "echo \"$(touch quoted.txt)\"",
        "ls *",
        "ls\ntouch newline.txt",
        "ls > out.txt",
    ] {
        let e = run(&only_ls, &ctx, json!({"command": line}))
            .await
            .expect_err(line);
        assert_eq!(e.kind, "PermissionError", "{line}: {e:?}");
        assert!(e.message.contains("shell syntax"), "{line}: {}", e.message);
    }
    for file in [
        "and.txt",
        "semi.txt",
        "pipe.txt",
        "subst.txt",
        "tick.txt",
        "quoted.txt",
        "newline.txt",
        "out.txt",
    ] {
        assert!(!ctx.workspace.join(file).exists(), "{file} was created");
    }
    // A path that ends in an allowed name is another program.
    std::fs::write(ctx.workspace.join("ls"), "#!/bin/sh\ntouch fake.txt\n").expect("write");
    for command in [json!("./ls"), json!("/tmp/ls"), json!(["./ls"])] {
        let e = run(&only_ls, &ctx, json!({"command": command}))
            .await
            .expect_err("not allowed");
        assert_eq!(e.kind, "PermissionError", "{command}: {e:?}");
    }
    // PATH (and the loader's variables) cannot be set by a step.
    for var in ["PATH", "LD_PRELOAD"] {
        let e = run(
            &only_ls,
            &ctx,
            json!({"command": "ls", "env": {var: ctx.workspace.display().to_string()}}),
        )
        .await
        .expect_err(var);
        assert_eq!(e.kind, "PermissionError", "{var}: {e:?}");
    }
    // Quotes group words; the words reach the program as they are.
    let r = run(
        &only_ls,
        &ctx,
        json!({"command": "echo 'a  b' \"c;d\" e|f", "env": {"X": "1"}}),
    )
    .await;
    assert!(r.is_err(), "an unquoted | is refused");
    let r = run(
        &only_ls,
        &ctx,
        json!({"command": "echo 'a  b' \"c;d|e\" plain"}),
    )
    .await
    .expect("runs");
    assert_eq!(r["stdout"], "a  b c;d|e plain\n");
    // Without an allow-list a step still cannot change PATH.
    let open = Terminal::default();
    let e = run(
        &open,
        &ctx,
        json!({"command": "true", "env": {"PATH": "/tmp"}}),
    )
    .await
    .expect_err("PATH");
    assert_eq!(e.kind, "PermissionError");
}
