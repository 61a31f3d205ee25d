//! `echo`: returns its parameters. No side effect (tests, benchmarks, dry runs).

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::{ActionSpec, Tool, ToolContext, ToolError, action};

#[derive(Debug, Clone, Copy, Default)]
pub struct Echo;

#[async_trait]
impl Tool for Echo {
    fn id(&self) -> &str {
        "echo"
    }

    fn description(&self) -> &str {
        "Returns its parameters as its result"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "echo",
            "Return the parameters unchanged",
            json!({"type": "object"}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        parameters: &Map<String, Value>,
        _: &ToolContext,
    ) -> Result<Value, ToolError> {
        Ok(Value::Object(parameters.clone()))
    }
}
