//! A throwaway workspace for tool tests.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio_util::sync::CancellationToken;

use crate::ToolContext;

/// A fresh workspace folder and a context pointing at it; removed on drop.
#[derive(Debug)]
pub struct TestWorkspace {
    pub ctx: ToolContext,
    dir: PathBuf,
}

impl Drop for TestWorkspace {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates a new, empty workspace under the system temp folder.
pub fn test_workspace() -> TestWorkspace {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "orch-tool-{}-{nanos}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    TestWorkspace {
        ctx: ToolContext {
            workspace: dir.clone(),
            cancel: CancellationToken::new(),
            execution_id: "test-execution".into(),
            step_id: "test-step".into(),
            attempt: 1,
            http: crate::net::default_client(),
            memory: None,
            log: None,
            models: None,
        },
        dir,
    }
}

/// Local HTTP services for tests.
#[cfg(feature = "test-services")]
pub mod services;
