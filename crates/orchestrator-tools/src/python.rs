//! `python-executor`: runs Python code in a separate process, as the seed's
//! tool does, with the terminal's protections: off unless the operator
//! enables it, its own process group (killed on timeout, cancellation or
//! when done), output caps, the workspace as its folder and `HOME`, and
//! none of the server's environment (keys, tokens, database URLs).

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::terminal::{DEFAULT_MAX_OUTPUT_BYTES, Inherit, exit_error, run_process, step_env};
use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, required_str};

/// The seed's default timeout, in seconds.
const DEFAULT_TIMEOUT: f64 = 30.0;

#[derive(Debug, Clone)]
pub struct PythonExecutor {
    /// The interpreter (default `python3`, found on `PATH`).
    pub interpreter: String,
    pub max_output_bytes: usize,
}

impl Default for PythonExecutor {
    fn default() -> Self {
        PythonExecutor {
            interpreter: "python3".into(),
            max_output_bytes: DEFAULT_MAX_OUTPUT_BYTES,
        }
    }
}

#[async_trait]
impl Tool for PythonExecutor {
    fn id(&self) -> &str {
        "python-executor"
    }

    fn description(&self) -> &str {
        "Runs Python code in a separate process in the workspace: {code, return_code, stdout, stderr, success, execution_time}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Run the code with the server's Python (none of the server's environment); a non-zero exit fails the step unless allow_failure",
            json!({"type": "object", "required": ["code"], "properties": {
                "code": {"type": "string"},
                "timeout": {"type": "number", "description": "seconds (default 30)"},
                "capture_output": {"type": "boolean", "description": "accepted; output is always captured (and logged)"},
                "args": {"type": "array", "items": {"type": "string"}, "description": "sys.argv[1:]"},
                "env": {"type": "object", "description": "variables for the code; values other than text are passed as JSON"},
                "allow_failure": {"type": "boolean", "description": "a non-zero exit still succeeds (its result has no success field)"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let code = required_str(params, "code")?.to_string();
        let timeout = match params.get("timeout") {
            None | Some(Value::Null) => DEFAULT_TIMEOUT,
            Some(v) => v
                .as_f64()
                .filter(|s| *s > 0.0 && s.is_finite())
                .ok_or_else(|| {
                    ToolError::invalid("'timeout' must be a positive number of seconds")
                })?,
        };
        let args: Vec<String> = match params.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.iter().map(crate::as_text).collect(),
            Some(_) => return Err(ToolError::invalid("'args' must be a list")),
        };
        let vars = step_env(params, |k| {
            k.starts_with("LD_") || k.starts_with("DYLD_") || k.starts_with("PYTHON")
        })?;
        let allow_failure = crate::optional_bool(params, "allow_failure")?.unwrap_or(false);
        tokio::fs::create_dir_all(&ctx.workspace)
            .await
            .map_err(|e| ToolError::new(ErrorKind::IOError, e.to_string()))?;
        // The code goes in through `-c`: nothing is left on disk, and the
        // workspace holds only what the code writes.
        let mut argv = vec![
            self.interpreter.clone(),
            "-I".to_string(),
            "-c".to_string(),
            code.clone(),
        ];
        argv.extend(args);
        let started = std::time::Instant::now();
        let done = run_process(
            &argv,
            &self.interpreter,
            &ctx.workspace,
            Inherit::Nothing,
            &vars,
            Some(Duration::from_secs_f64(timeout)),
            self.max_output_bytes,
            ctx,
        )
        .await
        .map_err(|e| match e.kind {
            ErrorKind::TimeoutError => ToolError::new(
                ErrorKind::TimeoutError,
                format!("Code execution timed out after {timeout} seconds"),
            ),
            _ => e,
        })?;
        let code_out = done.status.code();
        if !done.status.success() && !allow_failure {
            return Err(exit_error(
                "python",
                done.status,
                &done.stdout,
                &done.stderr,
            ));
        }
        // As the terminal's: no `success` field for a failure let through
        // by `allow_failure` (a result saying `success: false` fails its step).
        let mut out = json!({
            "code": code,
            "return_code": code_out,
            "stdout": done.stdout,
            "stderr": done.stderr,
            "truncated": done.truncated,
            "execution_time": started.elapsed().as_secs_f64(),
        });
        if done.status.success() {
            out["success"] = Value::Bool(true);
        }
        Ok(out)
    }
}
