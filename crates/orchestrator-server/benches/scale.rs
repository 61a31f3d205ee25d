//! Scale-out benchmark on PostgreSQL, run by hand (never in CI):
//!
//! ```sh
//! ORCHESTRATOR_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p orchestrator-server --bench scale
//! ```
//!
//! Real processes: one `orchestrator serve --no-workers` takes the
//! submissions, then 1, 2 or 4 `orchestrator worker` processes (10 slots each,
//! the default) drain the same queue. Measured from the workers' start to the
//! last execution finished, for 200 executions of a 20-step pipeline whose
//! steps are (a) no-ops (the database is the bottleneck) and (b) 50 ms
//! commands (the worker slots are). Then, with the default lease settings,
//! the time from SIGKILL of the process running a step to that step running
//! again in the other process.

mod support;
use support::submit;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator_store::testing::{TempDir, postgres_url};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn orchestrator(command: &str, database_url: &str, workspace: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    c.arg(command)
        .env("ORCHESTRATOR_DATABASE_URL", database_url)
        .env("ORCHESTRATOR_WORKSPACE_ROOT", workspace)
        .env("ORCHESTRATOR_ENABLE_TERMINAL", "true")
        .env("ORCHESTRATOR_MAX_QUEUED_STEPS", "1000000")
        .env("ORCHESTRATOR_LOG_LEVEL", "warn")
        .env("NO_COLOR", "1")
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null());
    c
}

/// `serve` on a free port; its address once it listens.
fn serve(database_url: &str, workspace: &Path, workers: bool) -> (Proc, String) {
    let mut cmd = orchestrator("serve", database_url, workspace);
    if !workers {
        cmd.arg("--no-workers");
    }
    let mut child = cmd
        .env("ORCHESTRATOR_BIND", "127.0.0.1:0")
        .env("ORCHESTRATOR_LOG_LEVEL", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent && let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.chars().take_while(|c| !c.is_whitespace()).collect());
                sent = true;
            }
        }
    });
    let addr: String = rx.recv_timeout(Duration::from_secs(30)).expect("listening");
    (Proc(child), format!("http://{addr}"))
}

fn worker(database_url: &str, workspace: &Path) -> Proc {
    Proc(
        orchestrator("worker", database_url, workspace)
            .stderr(Stdio::null())
            .spawn()
            .expect("start worker"),
    )
}

/// 20 steps: one first, 18 in parallel after it, one joining them.
fn pipeline(step: &str) -> String {
    let mut y = format!("name: scale\nsteps:\n  - id: first\n{step}");
    for i in 0..18 {
        y.push_str(&format!("  - id: mid{i}\n{step}    depends_on: [first]\n"));
    }
    let all: Vec<String> = (0..18).map(|i| format!("mid{i}")).collect();
    y.push_str(&format!(
        "  - id: last\n{step}    depends_on: [{}]\n",
        all.join(", ")
    ));
    y
}

/// How many executions have `status` (up to 200, one page).
async fn with_status(client: &reqwest::Client, base: &str, status: &str) -> usize {
    let v: serde_json::Value = client
        .get(format!("{base}/executions?status={status}&limit=200"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    v["items"].as_array().map_or(0, Vec::len)
}

async fn unfinished(client: &reqwest::Client, base: &str) -> usize {
    with_status(client, base, "queued").await + with_status(client, base, "running").await
}

async fn drain(label: &str, step: &str, workers: usize, executions: usize) -> f64 {
    let Some(url) = postgres_url().await else {
        panic!("set ORCHESTRATOR_TEST_POSTGRES_URL");
    };
    let ws = TempDir::new("orch-scale");
    let (_api, base) = serve(&url, ws.path(), false);
    let client = orchestrator_tools::net::default_client();
    let yaml = pipeline(step);
    for _ in 0..executions {
        submit(&client, &base, &yaml).await;
    }
    let t0 = Instant::now();
    let _workers: Vec<Proc> = (0..workers).map(|_| worker(&url, ws.path())).collect();
    while unfinished(&client, &base).await > 0 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let succeeded = with_status(&client, &base, "succeeded").await;
    assert_eq!(succeeded, executions.min(200), "every execution succeeds");
    let steps = executions * 20;
    let rate = steps as f64 / secs;
    println!(
        "postgres  {label:<16} {workers} worker process(es): {steps} steps in {secs:.2} s = {rate:.0} steps/s"
    );
    rate
}

/// SIGKILL the process running a step; time until the step starts again in
/// the other process (default lease 30 s, heartbeat 10 s).
async fn takeover() {
    let Some(url) = postgres_url().await else {
        panic!("set ORCHESTRATOR_TEST_POSTGRES_URL");
    };
    let ws = TempDir::new("orch-scale-kill");
    let (api, base) = serve(&url, ws.path(), true);
    let client = orchestrator_tools::net::default_client();
    let marks = ws.path().join("starts.txt");
    let yaml = "name: takeover\nsteps:\n  - id: slow\n    tool: terminal\n    action: run\n    timeout: 300\n    parameters: {command: ['sh', '-c', 'echo started >> starts.txt; sleep 120']}\n";
    submit(&client, &base, yaml).await;
    let starts = || {
        std::fs::read_to_string(&marks)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    while starts() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let other = worker(&url, ws.path());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed = Instant::now();
    drop(api); // SIGKILL
    while starts() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!(
        "postgres  SIGKILL -> step running again in the other process: {:.1} s (default lease 30 s, heartbeat 10 s)",
        killed.elapsed().as_secs_f64()
    );
    drop(other);
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let noop = "    tool: echo\n    parameters: {x: 1}\n";
        let slow =
            "    tool: terminal\n    action: run\n    parameters: {command: ['sleep', '0.05']}\n";
        for (label, step) in [("no-op steps", noop), ("50 ms steps", slow)] {
            let one = drain(label, step, 1, 200).await;
            for n in [2, 4] {
                let many = drain(label, step, n, 200).await;
                println!(
                    "postgres  {label:<16} {n} processes / 1 process: {:.2}x",
                    many / one
                );
            }
        }
        takeover().await;
    });
}
