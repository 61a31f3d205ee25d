//! Durable state a tool keeps between runs, shared by every process: the
//! engine binds it to the execution's tree (see `Store::memory_*`).

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use crate::ToolError;

/// What an update does with an entry: the new value, or a refusal that
/// leaves it as it was.
pub type Change<'a> = &'a (dyn Fn(Option<&Value>) -> Result<Value, String> + Send + Sync);

/// Who sees an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reach {
    /// The execution tree: the root execution and every child it starts
    /// (what one run of a seed pipeline sees).
    #[default]
    Tree,
    /// Every execution on the server.
    Server,
}

/// Where the running step's execution sits among the executions that
/// `pipeline-executor` steps started from one root.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tree {
    /// The tree's root execution.
    pub root_execution_id: String,
    /// 0 for a root execution, 1 for its children, …
    pub depth: i64,
    /// Pipeline names from the root down to this execution.
    pub call_stack: Vec<String>,
    /// How many child executions of each pipeline the tree has started.
    pub executions: BTreeMap<String, i64>,
}

/// One live entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub value: Value,
    /// Unix ms of the last write.
    pub updated_at: i64,
    /// Unix ms after which the entry is gone; `None` keeps it.
    pub expires_at: Option<i64>,
}

/// Entries of JSON under (namespace, key), scoped by [`Reach`].
#[async_trait]
pub trait Memory: Send + Sync + std::fmt::Debug {
    async fn get(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Entry>, ToolError>;

    /// A namespace's live entries, by key.
    async fn list(&self, reach: Reach, namespace: &str) -> Result<Vec<Entry>, ToolError>;

    /// Writes an entry; `expires_at` in Unix ms (`None` keeps it).
    async fn put(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Option<i64>,
    ) -> Result<(), ToolError>;

    /// Changes an entry atomically, even against other processes.
    async fn update(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
        change: Change<'_>,
    ) -> Result<Result<Value, String>, ToolError>;

    /// Removes one key, or the whole namespace; how many entries went.
    async fn clear(
        &self,
        reach: Reach,
        namespace: &str,
        key: Option<&str>,
    ) -> Result<u64, ToolError>;

    /// The execution's place in its tree.
    async fn tree(&self) -> Result<Tree, ToolError>;
}
