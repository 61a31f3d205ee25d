//! `terminal`: runs a command in the workspace, in its own process group.
//!
//! Off by default: the server enables it in configuration, optionally with an
//! allow-list of programs. With an allow-list the command never goes through
//! a shell: a command line is split into words (quotes group them) and run
//! directly, and shell syntax (`|`, `&&`, `;`, `>`, `$( )`, backquotes,
//! globs…) is refused, so the allowed program is the only one that runs; it
//! is named by its bare name and found on the server's `PATH`. A step never
//! sets `PATH` (nor, with an allow-list, the loader's `LD_*` variables).
//! The whole process group is killed when the step times out, is cancelled,
//! or its future is dropped, so nothing is left running.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ErrorKind;
use crate::filesystem::resolve;
use crate::log::{LineSplitter, LogSink, Stream};
use crate::{ActionSpec, Tool, ToolContext, ToolError, action, required_str, type_name};

/// Bytes of stdout and of stderr kept (the rest is read and dropped).
pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, Default)]
pub struct Terminal {
    /// When set, only these programs may run, without a shell.
    pub allowed_programs: Option<BTreeSet<String>>,
    pub max_output_bytes: Option<usize>,
}

/// Kills the process group when dropped (timeout, cancellation, shutdown).
#[derive(Debug)]
struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        #[cfg(unix)]
        if let Some(pgid) = self.pgid.take() {
            use nix::sys::signal::{Signal, killpg};
            use nix::unistd::Pid;
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end: the first `cap` bytes are kept for the result,
/// and every line goes to the step's log as it comes.
async fn read_capped<R: AsyncRead + Unpin>(
    mut reader: R,
    cap: usize,
    log: Option<(Arc<dyn LogSink>, Stream)>,
) -> (String, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let mut buf = [0u8; 8192];
    let mut lines = LineSplitter::default();
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                if n > room {
                    truncated = true;
                }
                kept.extend_from_slice(&buf[..n.min(room)]);
                if let Some((sink, stream)) = &log {
                    lines.feed(&buf[..n], |l| sink.line(*stream, l));
                }
            }
        }
    }
    if let Some((sink, stream)) = &log {
        lines.finish(|l| sink.line(*stream, l));
    }
    (String::from_utf8_lossy(&kept).into_owned(), truncated)
}

/// A process that exited badly, as a step error: how it ended and the end
/// of what it said on stderr, else on stdout.
pub(crate) fn exit_error(
    what: &str,
    status: std::process::ExitStatus,
    stdout: &str,
    stderr: &str,
) -> ToolError {
    let said = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    let tail: String = said
        .chars()
        .rev()
        .take(800)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let how = status.code().map_or_else(
        || "was killed by a signal".to_string(),
        |c| format!("exited with code {c}"),
    );
    let tail = tail.trim();
    ToolError::new(
        ErrorKind::CommandError,
        if tail.is_empty() {
            format!("{what} {how}")
        } else {
            format!("{what} {how}: {tail}")
        },
    )
}

/// Variables a step gives its process: text (other values as JSON); never
/// `PATH`, nor (when `loader` says so) the dynamic loader's.
pub(crate) fn step_env(
    params: &Map<String, Value>,
    refuse: impl Fn(&str) -> bool,
) -> Result<Vec<(String, String)>, ToolError> {
    let mut vars = Vec::new();
    if let Some(env) = params.get("env") {
        let env = env
            .as_object()
            .ok_or_else(|| ToolError::invalid("'env' must be an object"))?;
        for (k, v) in env {
            if k == "PATH" || refuse(k) {
                return Err(ToolError::new(
                    ErrorKind::PermissionError,
                    format!("a step cannot set '{k}'"),
                ));
            }
            vars.push((k.clone(), crate::as_text(v)));
        }
    }
    Ok(vars)
}

/// How a child process gets its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inherit {
    /// The server's variables, and the step's on top.
    All,
    /// Only `PATH`, `LANG` and a `HOME` in the workspace, and the step's:
    /// nothing of the server's (keys, tokens) reaches the code.
    Nothing,
}

/// A process that ran to its end.
pub(crate) struct Finished {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Some output was beyond the cap (it went to the log only).
    pub truncated: bool,
}

/// Runs `argv` in `dir` in its own process group (killed, with everything
/// it started, on timeout, cancellation or when done); the first `cap`
/// bytes of stdout and stderr are kept, every line goes to the step's log.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run_process(
    argv: &[String],
    program: &str,
    dir: &std::path::Path,
    inherit: Inherit,
    vars: &[(String, String)],
    timeout: Option<Duration>,
    cap: usize,
    ctx: &ToolContext,
) -> Result<Finished, ToolError> {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    if inherit == Inherit::Nothing {
        cmd.env_clear();
        for keep in ["PATH", "LANG", "LC_ALL", "TZ"] {
            if let Some(v) = std::env::var_os(keep) {
                cmd.env(keep, v);
            }
        }
        cmd.env("HOME", &ctx.workspace);
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::new(
            ErrorKind::FileNotFoundError,
            format!("program '{program}' not found"),
        ),
        _ => ToolError::new(ErrorKind::OSError, format!("cannot start '{program}': {e}")),
    })?;
    let mut guard = GroupGuard {
        pgid: child.id().and_then(|p| i32::try_from(p).ok()),
    };
    let stdout = child.stdout.take().map(|r| {
        tokio::spawn(read_capped(
            r,
            cap,
            ctx.log.clone().map(|l| (l, Stream::Stdout)),
        ))
    });
    let stderr = child.stderr.take().map(|r| {
        tokio::spawn(read_capped(
            r,
            cap,
            ctx.log.clone().map(|l| (l, Stream::Stderr)),
        ))
    });
    let limit = timeout.unwrap_or(Duration::MAX);
    let status = tokio::select! {
        s = tokio::time::timeout(limit, child.wait()) => match s {
            Ok(s) => s.map_err(|e| ToolError::new(ErrorKind::OSError, e.to_string()))?,
            Err(_) => {
                guard.kill();
                let _ = child.wait().await;
                return Err(ToolError::new(ErrorKind::TimeoutError, format!("command timed out after {:.1}s", limit.as_secs_f64())));
            }
        },
        _ = ctx.cancel.cancelled() => {
            guard.kill();
            let _ = child.wait().await;
            return Err(ToolError::new(ErrorKind::CancelledError, "command was stopped"));
        }
    };
    // The command is done; anything it left in its group goes too.
    guard.kill();
    let (stdout, out_cut) = match stdout {
        Some(h) => h.await.unwrap_or_default(),
        None => Default::default(),
    };
    let (stderr, err_cut) = match stderr {
        Some(h) => h.await.unwrap_or_default(),
        None => Default::default(),
    };
    Ok(Finished {
        status,
        stdout,
        stderr,
        truncated: out_cut || err_cut,
    })
}

/// Splits a command line into words as a shell would for plain words and
/// quotes, refusing everything a shell would do beyond that.
fn split_words(line: &str) -> Result<Vec<String>, ToolError> {
    let refuse = |what: &str| {
        ToolError::new(
            ErrorKind::PermissionError,
            format!(
                "shell syntax ({what}) is not allowed when terminal_allowed_programs is set: \
                 commands run without a shell; give the arguments as a list or quote them"
            ),
        )
    };
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(ToolError::invalid("'command' has an unclosed quote")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('$') => return Err(refuse("'$' inside double quotes")),
                        Some('`') => return Err(refuse("'`'")),
                        Some('\\') => return Err(refuse("'\\'")),
                        Some(c) => w.push(c),
                        None => return Err(ToolError::invalid("'command' has an unclosed quote")),
                    }
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '\\' | '*' | '?' | '[' | ']'
            | '{' | '}' | '~' | '#' | '!' | '\n' | '\r' => {
                return Err(refuse(&format!("'{}'", c.escape_default())));
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    if words.is_empty() {
        return Err(ToolError::invalid("'command' is empty"));
    }
    Ok(words)
}

impl Terminal {
    /// The argv to run and the program's name, as the allow-list sees it.
    fn argv_of(&self, command: &Value) -> Result<(Vec<String>, String), ToolError> {
        let Some(allowed) = &self.allowed_programs else {
            return Self::program_of(command);
        };
        let argv = match command {
            Value::String(line) => split_words(line)?,
            _ => Self::program_of(command)?.0,
        };
        let program = argv[0].clone();
        // A bare name found on the server's PATH, or exactly an allowed path:
        // `/tmp/x/ls` is not `ls`.
        if !allowed.contains(&program) {
            return Err(ToolError::new(
                ErrorKind::PermissionError,
                format!(
                    "program '{program}' is not allowed; allowed: {}",
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok((argv, program))
    }

    fn program_of(command: &Value) -> Result<(Vec<String>, String), ToolError> {
        match command {
            Value::String(line) => {
                if line.trim().is_empty() {
                    return Err(ToolError::invalid("'command' is empty"));
                }
                let first = line
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                Ok((vec!["/bin/sh".into(), "-c".into(), line.clone()], first))
            }
            Value::Array(items) => {
                let argv: Vec<String> = items
                    .iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            ToolError::invalid("'command' list items must be strings")
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let first = argv
                    .first()
                    .cloned()
                    .ok_or_else(|| ToolError::invalid("'command' is empty"))?;
                Ok((argv, first))
            }
            other => Err(ToolError::invalid(format!(
                "'command' must be a string or a list, got {}",
                type_name(other)
            ))),
        }
    }
}

#[async_trait]
impl Tool for Terminal {
    fn id(&self) -> &str {
        "terminal"
    }

    fn description(&self) -> &str {
        "Runs a command in the workspace: {return_code, stdout, stderr, command, working_dir, execution_time, success (when it exited 0)}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "run",
            "Run a command (a shell line, or a list of arguments run without a shell); a non-zero exit fails the step",
            json!({"type": "object", "required": ["command"], "properties": {
                "command": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                "working_dir": {"type": "string", "description": "relative to the workspace"},
                "env": {"type": "object", "description": "variables; values other than text are passed as JSON"},
                "timeout": {"type": "number", "description": "seconds"},
                "allow_failure": {"type": "boolean", "description": "a non-zero exit still succeeds"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let command = params
            .get("command")
            .ok_or_else(|| ToolError::invalid("missing parameter 'command'"))?;
        let (argv, program) = self.argv_of(command)?;
        let started = std::time::Instant::now();
        tokio::fs::create_dir_all(&ctx.workspace)
            .await
            .map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))?;
        let dir = match params.get("working_dir") {
            None | Some(Value::Null) => ctx.workspace.clone(),
            Some(_) => resolve(&ctx.workspace, required_str(params, "working_dir")?)?.full,
        };
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_f64() {
                Some(s) if s > 0.0 && s.is_finite() => Some(Duration::from_secs_f64(s)),
                _ => {
                    return Err(ToolError::invalid(
                        "'timeout' must be a positive number of seconds",
                    ));
                }
            },
        };
        let allow_failure = crate::optional_bool(params, "allow_failure")?.unwrap_or(false);
        let cap = self.max_output_bytes.unwrap_or(DEFAULT_MAX_OUTPUT_BYTES);

        let restricted = self.allowed_programs.is_some();
        let vars = step_env(params, |k| {
            restricted && (k.starts_with("LD_") || k.starts_with("DYLD_"))
        })?;
        let Finished {
            status,
            stdout,
            stderr,
            truncated,
        } = run_process(
            &argv,
            &program,
            &dir,
            Inherit::All,
            &vars,
            timeout,
            cap,
            ctx,
        )
        .await?;
        let code = status.code();
        if !status.success() && !allow_failure {
            return Err(exit_error("command", status, &stdout, &stderr));
        }
        // The seed's fields too: what ran, where, how long. (No `success`
        // field for a failed command let through by `allow_failure`: a
        // result saying `success: false` fails its step.)
        let mut out = json!({
            "return_code": code,
            "stdout": stdout,
            "stderr": stderr,
            "truncated": truncated,
            "command": command,
            "working_dir": params.get("working_dir").and_then(Value::as_str).unwrap_or("."),
            "execution_time": started.elapsed().as_secs_f64(),
        });
        if status.success() {
            out["success"] = Value::Bool(true);
        }
        Ok(out)
    }
}
