//! `docker compose up` as a container would run it, without Docker: the
//! environment the image's `ENV` and the compose file's `environment` give
//! the server (compose wins, as Docker does), started as a real process
//! against the test PostgreSQL; `/ready` must report PostgreSQL.
#![cfg(unix)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use orchestrator_core::yaml;
use orchestrator_store::testing::{TempDir, postgres_url};
use serde_json::Value;

fn repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The Dockerfile's instructions of its final stage, continuation lines joined.
fn final_stage(dockerfile: &str) -> Vec<String> {
    let mut joined = Vec::new();
    let mut line = String::new();
    for raw in dockerfile.lines() {
        let t = raw.trim();
        if t.starts_with('#') && line.is_empty() {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            line.push_str(head);
            line.push(' ');
            continue;
        }
        line.push_str(t);
        if !line.trim().is_empty() {
            joined.push(std::mem::take(&mut line));
        }
        line.clear();
    }
    let last_from = joined
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    joined.split_off(last_from)
}

/// `ENV K=V K2=V2` (and the old `ENV K V`) of the final stage, in order.
fn image_env(stage: &[String]) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for l in stage {
        let Some(rest) = l.strip_prefix("ENV ") else {
            continue;
        };
        if !rest.contains('=') {
            let (k, v) = rest.split_once(' ').expect("ENV K V");
            env.insert(k.to_string(), v.trim().to_string());
            continue;
        }
        for pair in rest.split_whitespace() {
            let (k, v) = pair.split_once('=').expect("K=V");
            env.insert(k.to_string(), v.trim_matches('"').to_string());
        }
    }
    env
}

/// The `orchestrator` service's `environment` (a map, as the file writes it).
fn compose_env(compose: &str) -> BTreeMap<String, String> {
    let root = yaml::parse(compose).expect("docker-compose.yml parses");
    let env = root
        .get("services")
        .and_then(|s| s.get("orchestrator"))
        .and_then(|s| s.get("environment"))
        .and_then(|e| e.as_map())
        .expect("services.orchestrator.environment is a map");
    env.iter()
        .map(|(k, v)| {
            let value = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| panic!("{}: quote it, compose wants text", k.name));
            (k.name.clone(), value)
        })
        .collect()
}

#[test]
fn the_image_makes_its_workspace_for_its_user() {
    let stage = final_stage(&repo_file("Dockerfile"));
    let user_at = stage
        .iter()
        .position(|l| l.starts_with("USER "))
        .expect("the image runs as a user");
    let user = stage[user_at]
        .trim_start_matches("USER ")
        .trim()
        .to_string();
    let workspace = image_env(&stage)
        .get("ORCHESTRATOR_WORKSPACE_ROOT")
        .cloned()
        .expect("the image names its workspace");
    // Made (as root, before USER) and given to the server's user, so a named
    // volume mounted there starts out writable by it.
    assert!(
        stage[..user_at].iter().any(|l| l.starts_with("RUN ")
            && l.contains(&workspace)
            && (l.contains(&format!("-o {user}")) || l.contains(&format!("chown {user}")))),
        "the Dockerfile must create {workspace} owned by {user}: {stage:#?}"
    );
}

#[tokio::test]
async fn compose_runs_the_server_on_postgres() {
    let Some(pg) = postgres_url().await else {
        return;
    };
    let stage = final_stage(&repo_file("Dockerfile"));
    let mut env = image_env(&stage);
    env.extend(compose_env(&repo_file("docker-compose.yml")));
    let dir = TempDir::new("orch-compose");
    // What differs outside a container: the database host is the test's,
    // the image's /data is a temporary folder, and the port is any free one.
    let data = dir.path().to_string_lossy().to_string();
    for value in env.values_mut() {
        if value.starts_with("postgres://") && value.contains("@postgres:") {
            *value = pg.clone();
        } else {
            *value = value.replace("/data", &data);
        }
    }
    env.insert("ORCHESTRATOR_BIND".into(), "127.0.0.1:0".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("serve")
        .env_clear()
        .envs(&env)
        .env("NO_COLOR", "1")
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start orchestrator");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(Ok(addr));
            } else if line.contains("ERROR") || line.starts_with("error") {
                let _ = tx.send(Err(line));
            }
        }
    });
    let started = rx.recv_timeout(Duration::from_secs(30));
    let outcome = async {
        let addr = started
            .expect("the server did not start")
            .expect("the server failed");
        let ready: Value = orchestrator_tools::net::default_client()
            .get(format!("http://{addr}/ready"))
            .send()
            .await
            .expect("GET /ready")
            .json()
            .await
            .expect("json");
        ready
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(outcome["status"], "ready", "{outcome}");
    assert_eq!(
        outcome["database"], "postgres",
        "compose's environment must put the server on PostgreSQL: {env:#?}"
    );
}
