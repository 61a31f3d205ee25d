//! Tools' durable memory, bound to the running step's execution tree: the
//! scope of every entry is the tree's root execution.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use orchestrator_store::MemoryEntry;
use orchestrator_store::{ExecutionRecord, Store, StoreError};
use orchestrator_tools::memory::{Change, Entry, Memory, Reach, Tree};
use orchestrator_tools::{ErrorKind, ToolError};
use serde_json::Value;
use tokio::sync::OnceCell;

/// The scope of entries every execution sees (execution ids never take
/// this form).
const SERVER_SCOPE: &str = "server";

/// Parents a call stack may climb (beyond `limits.max_pipeline_depth`,
/// which bounds real trees, this only guards a damaged chain).
const MAX_CLIMB: usize = 1_000;

#[derive(Debug)]
pub(crate) struct TreeMemory {
    store: Arc<dyn Store>,
    execution_id: String,
    execution: OnceCell<ExecutionRecord>,
}

impl TreeMemory {
    pub(crate) fn new(store: Arc<dyn Store>, execution_id: &str) -> Self {
        TreeMemory {
            store,
            execution_id: execution_id.to_string(),
            execution: OnceCell::new(),
        }
    }

    async fn execution(&self) -> Result<&ExecutionRecord, ToolError> {
        self.execution
            .get_or_try_init(|| async {
                self.store
                    .get_execution(&self.execution_id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| {
                        ToolError::new(ErrorKind::ExecutionError, "the execution no longer exists")
                    })
            })
            .await
    }

    async fn scope(&self, reach: Reach) -> Result<String, ToolError> {
        if reach == Reach::Server {
            return Ok(SERVER_SCOPE.to_string());
        }
        let e = self.execution().await?;
        Ok(e.root_execution_id.clone().unwrap_or_else(|| e.id.clone()))
    }
}

fn store_error(e: StoreError) -> ToolError {
    ToolError::new(ErrorKind::StoreError, e.to_string())
}

fn entry(e: MemoryEntry) -> Entry {
    Entry {
        key: e.key,
        value: e.value,
        updated_at: e.updated_at,
        expires_at: e.expires_at,
    }
}

#[async_trait]
impl Memory for TreeMemory {
    async fn get(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
    ) -> Result<Option<Entry>, ToolError> {
        let scope = self.scope(reach).await?;
        Ok(self
            .store
            .memory_get(&scope, namespace, key)
            .await
            .map_err(store_error)?
            .map(entry))
    }

    async fn list(&self, reach: Reach, namespace: &str) -> Result<Vec<Entry>, ToolError> {
        let scope = self.scope(reach).await?;
        Ok(self
            .store
            .memory_list(&scope, namespace)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(entry)
            .collect())
    }

    async fn put(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Option<i64>,
    ) -> Result<(), ToolError> {
        let scope = self.scope(reach).await?;
        self.store
            .memory_put(&scope, namespace, key, value, expires_at)
            .await
            .map_err(store_error)
    }

    async fn update(
        &self,
        reach: Reach,
        namespace: &str,
        key: &str,
        change: Change<'_>,
    ) -> Result<Result<Value, String>, ToolError> {
        let scope = self.scope(reach).await?;
        self.store
            .memory_update(&scope, namespace, key, change)
            .await
            .map_err(store_error)
    }

    async fn clear(
        &self,
        reach: Reach,
        namespace: &str,
        key: Option<&str>,
    ) -> Result<u64, ToolError> {
        let scope = self.scope(reach).await?;
        self.store
            .memory_clear(&scope, namespace, key)
            .await
            .map_err(store_error)
    }

    async fn tree(&self) -> Result<Tree, ToolError> {
        let here = self.execution().await?;
        let mut call_stack = vec![here.pipeline_name.clone()];
        let mut parent = here.parent_execution_id.clone();
        while let Some(id) = parent.take() {
            if call_stack.len() > MAX_CLIMB {
                break;
            }
            if let Some(p) = self.store.get_execution(&id).await.map_err(store_error)? {
                call_stack.push(p.pipeline_name.clone());
                parent = p.parent_execution_id;
            }
        }
        call_stack.reverse();
        let root = here
            .root_execution_id
            .clone()
            .unwrap_or_else(|| here.id.clone());
        let executions: BTreeMap<String, i64> = self
            .store
            .tree_counts(&root)
            .await
            .map_err(store_error)?
            .into_iter()
            .collect();
        Ok(Tree {
            root_execution_id: root,
            depth: here.depth,
            call_stack,
            executions,
        })
    }
}
