//! The command-line client of a running server: `submit`, `status`, `list`,
//! `logs`, `cancel`, `recover`, `waiting`, `answer`. Human output by
//! default, `--json` for scripts; `--server` (`ORCHESTRATOR_URL`) and
//! `--token` (`ORCHESTRATOR_TOKEN`) say where and as whom.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::{Value, json};

use super::{INVALID, read_input};

/// Where the server is and who is asking.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientFlags {
    /// The server's base URL.
    #[arg(
        long,
        env = "ORCHESTRATOR_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// An API token (when the server requires one).
    #[arg(long, env = "ORCHESTRATOR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the server's JSON answers instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientCommand {
    /// Submit a pipeline file; with --wait, wait for it to end (exit 0
    /// succeeded, 1 failed or cancelled, 2 refused).
    Submit {
        /// The pipeline YAML file (`-` for standard input).
        file: PathBuf,
        /// An input, KEY=VALUE (VALUE is read as YAML).
        #[arg(short = 'i', long = "input", value_name = "KEY=VALUE")]
        inputs: Vec<String>,
        /// Wait for the execution to end, with its progress on a terminal.
        #[arg(long)]
        wait: bool,
        /// Wait, printing one line per step change as it happens.
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// An execution and its steps.
    Status {
        id: String,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Executions, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// A step's log (every step's, without STEP); --follow streams it live.
    Logs {
        id: String,
        step: Option<String>,
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Cancel an execution.
    Cancel {
        id: String,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Recover a finished execution from its checkpoints.
    Recover {
        id: String,
        /// Run this step and everything after it again.
        #[arg(long)]
        from: Option<String>,
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Steps waiting for a person, oldest first.
    Waiting {
        #[command(flatten)]
        flags: ClientFlags,
    },
    /// Answer a waiting step: --approve, --reject REASON, --value VALUE, or
    /// a JSON answer.
    Answer {
        id: String,
        step: String,
        /// The answer as JSON (as `POST …/answer` takes it).
        answer: Option<String>,
        #[arg(long, conflicts_with_all = ["reject", "value", "answer"])]
        approve: bool,
        #[arg(long, value_name = "REASON", conflicts_with_all = ["value", "answer"])]
        reject: Option<String>,
        /// A `user-prompt` answer (read as YAML: numbers, booleans, text).
        #[arg(long, conflicts_with = "answer")]
        value: Option<String>,
        #[command(flatten)]
        flags: ClientFlags,
    },
}

/// A failed call, already explained.
struct Failed(ExitCode);

struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

impl Api {
    fn new(flags: &ClientFlags) -> Self {
        Api {
            http: orchestrator_tools::net::default_client(),
            base: flags.server.trim_end_matches('/').to_string(),
            token: flags.token.clone().filter(|t| !t.is_empty()),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends and reads JSON; a problem answer is printed and fails.
    async fn call(&self, r: reqwest::RequestBuilder) -> Result<Value, Failed> {
        let response = r.send().await.map_err(|e| {
            eprintln!("error: cannot reach {}: {e}", self.base);
            Failed(ExitCode::FAILURE)
        })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        eprintln!(
            "error: {} {}: {}",
            status.as_u16(),
            body["title"].as_str().unwrap_or("request failed"),
            body["detail"].as_str().unwrap_or_default()
        );
        if let Some(errors) = body["errors"].as_array() {
            for e in errors {
                let at = match (e["line"].as_u64(), e["step"].as_str()) {
                    (Some(l), Some(s)) => format!("line {l}, step {s}: "),
                    (Some(l), None) => format!("line {l}: "),
                    (None, Some(s)) => format!("step {s}: "),
                    _ => String::new(),
                };
                eprintln!("  {at}{}", e["message"].as_str().unwrap_or_default());
            }
        }
        let code = if status.as_u16() == 422 || status.as_u16() == 400 {
            ExitCode::from(INVALID)
        } else {
            ExitCode::FAILURE
        };
        Err(Failed(code))
    }

    async fn get(&self, path: &str) -> Result<Value, Failed> {
        self.call(self.request(reqwest::Method::GET, path)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Result<Value, Failed> {
        self.call(self.request(reqwest::Method::POST, path).json(body))
            .await
    }
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

const FINISHED: [&str; 3] = ["succeeded", "failed", "cancelled"];

fn finished(e: &Value) -> bool {
    e["status"].as_str().is_some_and(|s| FINISHED.contains(&s))
}

fn exit_for(e: &Value) -> ExitCode {
    if e["status"] == "succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn print_execution(e: &Value) {
    println!(
        "{}  {}  {}",
        e["id"].as_str().unwrap_or_default(),
        e["pipeline_name"].as_str().unwrap_or_default(),
        e["status"].as_str().unwrap_or_default()
    );
    if let Some(err) = e["error"].as_str() {
        println!("error: {err}");
    }
    for s in e["steps"].as_array().into_iter().flatten() {
        let mut line = format!(
            "  {:<24} {:<10}",
            s["id"].as_str().unwrap_or_default(),
            s["status"].as_str().unwrap_or_default()
        );
        if let Some(err) = s["error"].as_str() {
            line.push_str(&format!(
                " {}: {err}",
                s["error_type"].as_str().unwrap_or("error")
            ));
        } else if let Some(w) = s.get("waiting").filter(|w| !w.is_null()) {
            let r = &w["request"];
            let asked = r["title"]
                .as_str()
                .or(r["prompt"].as_str())
                .unwrap_or("an answer");
            line.push_str(&format!(" asks: {asked}"));
        }
        println!("{line}");
    }
    if let Some(o) = e.get("outputs").filter(|o| !o.is_null()) {
        println!(
            "outputs: {}",
            serde_json::to_string_pretty(o).unwrap_or_default()
        );
    }
}

/// `[#####-----] 3/10 steps  running` on one line of a terminal.
fn progress_line(e: &Value) -> String {
    let p = &e["progress"];
    let total = p["total"].as_u64().unwrap_or(0);
    let done = ["succeeded", "failed", "skipped", "cancelled"]
        .iter()
        .map(|k| p[*k].as_u64().unwrap_or(0))
        .sum::<u64>();
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(0).min(width) as usize;
    format!(
        "\r[{}{}] {done}/{total} steps  {:<10}",
        "#".repeat(filled),
        "-".repeat(width as usize - filled),
        e["status"].as_str().unwrap_or_default()
    )
}

/// Polls until the execution ends; prints step changes (`follow`) or a
/// progress bar (on a terminal). Ctrl-C stops waiting, not the execution.
async fn wait(api: &Api, id: &str, follow: bool, json_out: bool) -> Result<Value, Failed> {
    let bar = !follow && !json_out && std::io::stderr().is_terminal();
    let mut seen: BTreeMap<String, (String, i64)> = BTreeMap::new();
    loop {
        let e = api.get(&format!("/executions/{id}")).await?;
        if follow && !json_out {
            let p = &e["progress"];
            let total = p["total"].as_u64().unwrap_or(0);
            let done = ["succeeded", "failed", "skipped", "cancelled"]
                .iter()
                .map(|k| p[*k].as_u64().unwrap_or(0))
                .sum::<u64>();
            for s in e["steps"].as_array().into_iter().flatten() {
                let sid = s["id"].as_str().unwrap_or_default().to_string();
                let now = (
                    s["status"].as_str().unwrap_or_default().to_string(),
                    s["attempt"].as_i64().unwrap_or(0),
                );
                if seen.get(&sid) != Some(&now) {
                    let extra = s["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default();
                    println!(
                        "[{done}/{total}] {sid} {} (attempt {}){extra}",
                        now.0, now.1
                    );
                    seen.insert(sid, now);
                }
            }
        }
        if bar {
            eprint!("{}", progress_line(&e));
            let _ = std::io::stderr().flush();
        }
        if finished(&e) {
            if bar {
                eprintln!();
            }
            return Ok(e);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = tokio::signal::ctrl_c() => {
                if bar { eprintln!(); }
                eprintln!("stopped waiting; execution {id} goes on (orchestrator cancel {id} stops it)");
                return Err(Failed(ExitCode::from(130)));
            }
        }
    }
}

/// Prints a step's log lines (all, or streamed while it runs).
async fn logs(
    api: &Api,
    id: &str,
    step: &str,
    follow: bool,
    json_out: bool,
    prefix: bool,
) -> Result<(), Failed> {
    let mut after = 0i64;
    loop {
        let page = api
            .get(&format!(
                "/executions/{id}/steps/{step}/logs?after={after}&limit=10000"
            ))
            .await?;
        let items = page["items"].as_array().cloned().unwrap_or_default();
        for l in &items {
            if json_out {
                println!("{l}");
            } else {
                let text = l["line"].as_str().unwrap_or_default();
                let tag = if prefix {
                    format!("{step} | ")
                } else {
                    String::new()
                };
                if l["stream"] == "stderr" {
                    eprintln!("{tag}{text}");
                } else {
                    println!("{tag}{text}");
                }
            }
            after = l["seq"].as_i64().unwrap_or(after);
        }
        let ended = page["step_status"]
            .as_str()
            .is_some_and(|s| ["succeeded", "failed", "skipped", "cancelled"].contains(&s));
        if !follow || (ended && items.is_empty()) {
            return Ok(());
        }
        if items.is_empty() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    }
}

impl ClientCommand {
    fn flags(&self) -> &ClientFlags {
        match self {
            ClientCommand::Submit { flags, .. }
            | ClientCommand::Status { flags, .. }
            | ClientCommand::List { flags, .. }
            | ClientCommand::Logs { flags, .. }
            | ClientCommand::Cancel { flags, .. }
            | ClientCommand::Recover { flags, .. }
            | ClientCommand::Waiting { flags }
            | ClientCommand::Answer { flags, .. } => flags,
        }
    }
}

pub(super) async fn run(command: ClientCommand) -> ExitCode {
    let flags = command.flags().clone();
    let api = Api::new(&flags);
    match run_command(&api, command, flags.json).await {
        Ok(code) => code,
        Err(Failed(code)) => code,
    }
}

async fn run_command(
    api: &Api,
    command: ClientCommand,
    json_out: bool,
) -> Result<ExitCode, Failed> {
    match command {
        ClientCommand::Submit {
            file,
            inputs,
            wait: wait_flag,
            follow,
            ..
        } => {
            let name = file.display().to_string();
            let text = read_input(&file).map_err(|e| {
                eprintln!("error: cannot read {name}: {e}");
                Failed(ExitCode::from(INVALID))
            })?;
            let context = super::parse_inputs(&inputs).map_err(|e| {
                eprintln!("error: {e}");
                Failed(ExitCode::from(INVALID))
            })?;
            let created = api
                .post(
                    "/executions",
                    &json!({"pipeline": text, "context": context}),
                )
                .await?;
            let id = created["id"].as_str().unwrap_or_default().to_string();
            if !(wait_flag || follow) {
                if json_out {
                    print_json(&created);
                } else {
                    println!("{id}");
                }
                return Ok(ExitCode::SUCCESS);
            }
            if !json_out {
                eprintln!("submitted {id}");
            }
            let done = wait(api, &id, follow, json_out).await?;
            if json_out {
                print_json(&done);
            } else {
                print_execution(&done);
            }
            Ok(exit_for(&done))
        }
        ClientCommand::Status { id, .. } => {
            let e = api.get(&format!("/executions/{id}")).await?;
            if json_out {
                print_json(&e);
            } else {
                print_execution(&e);
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::List {
            status,
            pipeline,
            limit,
            ..
        } => {
            let mut q = format!("/executions?limit={limit}");
            if let Some(s) = status {
                q.push_str(&format!("&status={s}"));
            }
            if let Some(p) = pipeline {
                q.push_str(&format!("&pipeline={p}"));
            }
            let page = api.get(&q).await?;
            if json_out {
                print_json(&page);
            } else {
                for e in page["items"].as_array().into_iter().flatten() {
                    println!(
                        "{}  {:<10} {:<24} {}",
                        e["id"].as_str().unwrap_or_default(),
                        e["status"].as_str().unwrap_or_default(),
                        e["pipeline_name"].as_str().unwrap_or_default(),
                        e["created_at"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Logs {
            id, step, follow, ..
        } => {
            match step {
                Some(step) => logs(api, &id, &step, follow, json_out, false).await?,
                None => {
                    let e = api.get(&format!("/executions/{id}")).await?;
                    for s in e["steps"].as_array().into_iter().flatten() {
                        let sid = s["id"].as_str().unwrap_or_default();
                        logs(api, &id, sid, follow, json_out, true).await?;
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Cancel { id, .. } => {
            let e = api
                .post(&format!("/executions/{id}/cancel"), &json!({}))
                .await?;
            if json_out {
                print_json(&e);
            } else {
                println!("{id}: {}", e["status"].as_str().unwrap_or_default());
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Recover { id, from, .. } => {
            let body = match from {
                Some(f) => json!({"from_checkpoint": f}),
                None => json!({}),
            };
            let r = api
                .post(&format!("/executions/{id}/recover"), &body)
                .await?;
            if json_out {
                print_json(&r);
            } else {
                let rerun: Vec<&str> = r["rerun"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!("{id}: running again: {}", rerun.join(", "));
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Waiting { .. } => {
            let page = api.get("/waiting").await?;
            if json_out {
                print_json(&page);
            } else {
                for w in page["items"].as_array().into_iter().flatten() {
                    let r = &w["request"];
                    let asked = r["title"]
                        .as_str()
                        .or(r["prompt"].as_str())
                        .unwrap_or_default();
                    println!(
                        "{} {:<20} {:<20} {asked}",
                        w["execution_id"].as_str().unwrap_or_default(),
                        w["step_id"].as_str().unwrap_or_default(),
                        w["kind"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        ClientCommand::Answer {
            id,
            step,
            answer,
            approve,
            reject,
            value,
            ..
        } => {
            let body = if approve {
                json!({"action": "approve"})
            } else if let Some(reason) = reject {
                json!({"action": "reject", "reason": reason})
            } else if let Some(v) = value {
                let mut one = BTreeMap::new();
                one.insert("value".to_string(), v);
                Value::Object(crate::dto::inputs_from_query(&one))
            } else if let Some(text) = answer {
                serde_json::from_str(&text).map_err(|e| {
                    eprintln!("error: the answer is not JSON: {e}");
                    Failed(ExitCode::from(INVALID))
                })?
            } else {
                eprintln!("error: give --approve, --reject REASON, --value VALUE or a JSON answer");
                return Err(Failed(ExitCode::from(INVALID)));
            };
            let done = api
                .post(&format!("/executions/{id}/steps/{step}/answer"), &body)
                .await?;
            if json_out {
                print_json(&done);
            } else {
                println!("{id} {step}: answered");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
