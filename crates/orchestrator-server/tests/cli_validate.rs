//! `orchestrator validate`: exit codes and output.

use std::process::Command;

fn orchestrator() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
}

fn examples() -> String {
    format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn a_valid_file_exits_zero_and_prints_its_levels() {
    let out = orchestrator()
        .args(["validate", &format!("{}/fan_out_fan_in.yaml", examples())])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("fan_out_fan_in.yaml is valid"), "{stdout}");
    assert!(stdout.contains("level 0: left, right"), "{stdout}");
    assert!(stdout.contains("level 2: join"), "{stdout}");
}

#[test]
fn an_invalid_file_exits_two_with_every_error_and_its_place() {
    let dir = std::env::temp_dir().join(format!("orchestrator-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "name: p\nsteps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    depends_on: [c]\n").expect("write");
    let out = orchestrator()
        .arg("validate")
        .arg(&file)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:4:11: error[unknown_tool]: step 'a'"),
        "{stderr}"
    );
    assert!(
        stderr.contains("bad.yaml:7:18: error[unknown_dependency]: step 'b'"),
        "{stderr}"
    );

    let out = orchestrator()
        .arg("validate")
        .arg(&file)
        .arg("--json")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(body["valid"], false);
    assert_eq!(body["errors"].as_array().map(Vec::len), Some(2));
    assert_eq!(body["errors"][0]["line"], 4);
    assert_eq!(body["errors"][0]["column"], 11);
    // The API's names: `code`, as in a problem's `errors`.
    assert_eq!(body["errors"][0]["code"], "unknown_tool");
    assert!(body["errors"][0].get("kind").is_none());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_file_exits_two() {
    let out = orchestrator()
        .args(["validate", "/nonexistent/pipeline.yaml"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

#[test]
fn tokens_are_created_listed_and_revoked_from_the_command_line() {
    let dir = std::env::temp_dir().join(format!("orchestrator-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite://{}", dir.join("t.db").display());
    let run = |args: &[&str]| {
        let out = orchestrator()
            .args(["token", "--database-url", &db])
            .args(args)
            .env("ORCHESTRATOR_AUTH_PEPPER", "p")
            .output()
            .expect("runs");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let token = run(&["create", "--name", "deploy", "--scope", "submit"]);
    let token = token.trim();
    assert!(token.starts_with("orc_") && token.len() > 70, "{token}");
    let id = token.split('_').nth(1).expect("id");
    let listed = run(&["list"]);
    assert!(
        listed.contains(&format!("{id}\tsubmit\tdeploy\tlive")),
        "{listed}"
    );
    assert!(!listed.contains(token), "the secret is never listed");
    run(&["revoke", id]);
    assert!(run(&["list"]).contains("revoked"));
    let bad = orchestrator()
        .args([
            "token",
            "--database-url",
            &db,
            "create",
            "--name",
            "x",
            "--scope",
            "root",
        ])
        .output()
        .expect("runs");
    assert!(!bad.status.success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn authentication_without_a_pepper_is_refused_naming_the_variable() {
    // Tokens made without the pepper were later refused as "not valid",
    // with no hint why; a server with auth on and no pepper started silently.
    for (args, auth) in [
        (
            vec![
                "serve",
                "--bind",
                "127.0.0.1:0",
                "--database-url",
                "sqlite::memory:",
            ],
            "true",
        ),
        (
            vec![
                "token",
                "--database-url",
                "sqlite::memory:",
                "create",
                "--name",
                "x",
                "--scope",
                "read",
            ],
            "false",
        ),
    ] {
        let out = orchestrator()
            .args(&args)
            .env("ORCHESTRATOR_AUTH_ENABLED", auth)
            .env_remove("ORCHESTRATOR_AUTH_PEPPER")
            .output()
            .expect("runs");
        assert!(!out.status.success(), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("ORCHESTRATOR_AUTH_PEPPER is not set"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn serving_beyond_loopback_without_authentication_is_refused() {
    let out = orchestrator()
        .args([
            "serve",
            "--bind",
            "0.0.0.0:0",
            "--database-url",
            "sqlite::memory:",
        ])
        .env_remove("ORCHESTRATOR_AUTH_ENABLED")
        .env_remove("ORCHESTRATOR_ALLOW_UNAUTHENTICATED")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
}

/// Limits in `orchestrator.yaml` take effect: reading the file (or an
/// environment value) must not fix the limits at their defaults first.
#[test]
fn limits_in_the_config_file_take_effect() {
    let dir = std::env::temp_dir().join(format!("orch-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("orchestrator.yaml"), "limits:\n  max_steps: 3\n").expect("write");
    let file = format!("{}/fan_out_fan_in.yaml", examples());
    let out = orchestrator()
        .args(["validate", &file])
        .current_dir(&dir)
        .env_remove("ORCHESTRATOR_MAX_STEPS")
        .output()
        .expect("runs");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("at most 3 are allowed (limits.max_steps)"),
        "{out:?}"
    );
}

#[test]
fn the_step_limit_is_configurable() {
    let file = format!("{}/fan_out_fan_in.yaml", examples());
    let out = orchestrator()
        .args(["validate", &file])
        .env("ORCHESTRATOR_MAX_STEPS", "3")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("limits.max_steps"), "{all}");
    let out = orchestrator()
        .args(["validate", &file])
        .env("ORCHESTRATOR_MAX_STEPS", "5")
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn purge_says_what_it_needs_and_deletes_by_age() {
    let dir = std::env::temp_dir().join(format!("orchestrator-cli-purge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let db = format!("sqlite://{}", dir.join("p.db").display());
    let out = orchestrator()
        .args(["purge", "--database-url", &db])
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--older-than"));
    let out = orchestrator()
        .args(["purge", "--database-url", &db, "--older-than", "3w"])
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unit is s, m, h or d"));
    let out = orchestrator()
        .args([
            "purge",
            "--database-url",
            &db,
            "--older-than",
            "30d",
            "--status",
            "failed",
        ])
        .current_dir(&dir)
        .output()
        .expect("runs");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deleted 0 finished executions\n"
    );
    std::fs::remove_dir_all(&dir).ok();
}
