//! What the contract cases share: pipelines, results and small helpers.

pub use std::collections::HashSet;
pub use std::sync::Arc;

pub use orchestrator_core::flow::{ExecutionStatus, StepStatus};
pub use orchestrator_core::{CompileOptions, builtin_catalog, compile_yaml};
pub use orchestrator_store::{
    ClaimedStep, ExecutionFilter, Handoff, NewExecution, NewStep, StepResult, Store, StoreError,
    Take, now_ms,
};
pub use serde_json::{Value, json};

pub const CHAIN: &str = "name: chain\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n  - id: c\n    tool: echo\n    depends_on: [b]\noutputs:\n  last: '{{ c.result }}'\n";

pub const FAN: &str = "name: fan\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n  - id: c\n    tool: echo\n    depends_on: [a, b]\n";

pub fn new_execution(yaml: &str, key: Option<&str>, hash: Option<&str>) -> NewExecution {
    let catalog = builtin_catalog();
    let plan = compile_yaml(
        yaml,
        CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: None,
        },
    )
    .expect("compiles")
    .plan;
    NewExecution {
        id: uuid::Uuid::now_v7().to_string(),
        pipeline_id: plan.pipeline.id.clone(),
        pipeline_name: plan.pipeline.name.clone(),
        source: yaml.to_string(),
        inputs: Value::Object(plan.inputs.clone()),
        options: json!({}),
        idempotency_key: key.map(str::to_string),
        token_id: None,
        request_hash: hash.map(str::to_string),
        steps: plan
            .steps
            .iter()
            .map(|s| NewStep {
                planned: s.clone(),
                max_attempts: s.step.retry.max_attempts,
            })
            .collect(),
        plan: serde_json::to_value(&plan).expect("plan json"),
        timeout_ms: None,
        resolving: false,
        parent: None,
    }
}

pub fn done(status: StepStatus, result: Value) -> StepResult {
    StepResult {
        status,
        parameters: Some(json!({})),
        envelope: Some(
            json!({"result": result, "success": status == StepStatus::Succeeded, "error": null}),
        ),
        error: (status == StepStatus::Failed).then(|| "boom".to_string()),
        error_type: (status == StepStatus::Failed).then(|| "ToolError".to_string()),
        reason: None,
        timed_out: false,
        jump_to: None,
        on_failure: None,
        started_at: now_ms(),
        finished_at: now_ms(),
    }
}

pub fn no_outputs(
    _: &orchestrator_store::ExecutionRecord,
    _: &[orchestrator_store::StepRecord],
) -> (Option<Value>, Option<String>) {
    (None, None)
}

/// A stored execution that must exist.
pub async fn execution(store: &Arc<dyn Store>, id: &str) -> orchestrator_store::ExecutionRecord {
    store
        .get_execution(id)
        .await
        .expect("get")
        .expect("the execution exists")
}

/// Records a result for a step this test holds the lease of.
pub async fn finish(store: &Arc<dyn Store>, step: &ClaimedStep, status: StepStatus, result: Value) {
    store
        .finish_step(step, done(status, result), &no_outputs, None)
        .await
        .expect("finish");
}

pub async fn claim_ids(store: &Arc<dyn Store>, limit: u32) -> Vec<ClaimedStep> {
    store.claim_steps("w1", limit, 30_000).await.expect("claim")
}

pub fn assert_gap_free(events: &[orchestrator_store::EventRecord]) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
}
