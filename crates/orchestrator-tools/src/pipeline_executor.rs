//! `pipeline-executor`: runs another pipeline from a step. The tool holds
//! what a catalogue needs (its action and parameter schema); the engine
//! runs the step (`engine/src/subpipeline.rs`).

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action};

/// `pipeline-executor`: runs another pipeline from a step (the engine
/// creates the child execution and makes the step wait for it).
#[derive(Debug, Default)]
pub struct PipelineExecutor;

#[async_trait]
impl Tool for PipelineExecutor {
    fn id(&self) -> &str {
        orchestrator_core::catalog::PIPELINE_EXECUTOR
    }

    fn description(&self) -> &str {
        "Run another pipeline (inline, stored by name, or a workspace file) as a child execution, and take its outputs"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Start the child execution and, with wait_for_completion (the default), wait for it: its outputs become the step's result",
            json!({"type": "object", "required": ["pipeline"], "properties": {
                "pipeline": {"type": ["string", "object"], "description": "inline YAML (or an object), a stored pipeline's name (`name` or `name@version`), or a workspace .yaml file"},
                "inputs": {"type": "object"},
                "inherit_context": {"type": "boolean"},
                "wait_for_completion": {"type": "boolean"},
                "timeout": {"type": "number", "minimum": 0},
                "output_mapping": {"type": "object", "additionalProperties": {"type": "string"}},
                "error_handling": {"type": "string", "enum": ["fail", "continue", "retry"]},
                "retry_count": {"type": "integer", "minimum": 0},
                "retry_delay": {"type": "number", "minimum": 0}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        _: &Map<String, Value>,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        Err(ToolError::new(
            ErrorKind::ExecutionError,
            "'pipeline-executor' starts a child execution; it runs as a pipeline step",
        ))
    }
}
