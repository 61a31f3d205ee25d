//! Durable state a tool keeps between runs, shared by every process: the
//! engine binds it to the execution's tree (see `Store::memory_*`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::ToolError;

/// What an update does with an entry: the new value, or a refusal that
/// leaves it as it was.
pub type Change<'a> = &'a (dyn Fn(Option<&Value>) -> Result<Value, String> + Send + Sync);

/// Where the running step's execution sits among the executions that
/// `pipeline-executor` steps started from one root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    /// 0 for a root execution, 1 for its children, …
    pub depth: i64,
    /// Pipeline names from the root down to this execution.
    pub call_stack: Vec<String>,
    /// How many child executions of each pipeline the tree has started.
    pub executions: BTreeMap<String, i64>,
}

/// Entries of JSON under (namespace, key), scoped to the execution tree.
#[async_trait]
pub trait Memory: Send + Sync + std::fmt::Debug {
    async fn get(&self, namespace: &str, key: &str) -> Result<Option<Value>, ToolError>;

    /// Changes an entry atomically, even against other processes.
    async fn update(
        &self,
        namespace: &str,
        key: &str,
        change: Change<'_>,
    ) -> Result<Result<Value, String>, ToolError>;

    /// Removes one key, or the whole namespace; how many entries went.
    async fn clear(&self, namespace: &str, key: Option<&str>) -> Result<u64, ToolError>;

    /// The execution's place in its tree.
    async fn tree(&self) -> Result<Tree, ToolError>;
}
