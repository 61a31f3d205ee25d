//! One contract, both backends: every case runs on SQLite and on PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;

use orchestrator_core::flow::{ExecutionStatus, StepStatus};
use orchestrator_core::{CompileOptions, builtin_catalog, compile_yaml};
use orchestrator_store::{
    ClaimedStep, ExecutionFilter, Handoff, NewExecution, NewStep, StepResult, Store, StoreError,
    now_ms,
};
use serde_json::{Value, json};

orchestrator_store::for_each_backend!(
    creating_an_execution_stores_it_with_its_steps,
    only_ready_steps_are_claimed_and_each_only_once,
    finishing_a_step_readies_its_dependents_and_records_a_checkpoint,
    a_stale_lease_cannot_write_a_result,
    the_last_step_finishes_the_execution_with_its_outputs,
    a_failed_step_cancels_what_has_not_started,
    a_retried_step_waits_for_its_delay_and_counts_attempts,
    idempotency_keys_return_the_original_or_conflict,
    executions_list_newest_first_with_filters_and_cursor,
    concurrent_claims_never_hand_out_a_step_twice,
    heartbeats_extend_only_held_leases,
    released_leases_are_claimable_at_once_without_using_an_attempt,
    models_are_registered_listed_replaced_and_deleted,
    model_calls_add_up_per_model_and_per_execution,
    a_batch_of_results_is_written_together_and_a_stale_one_alone_is_refused,
    a_step_made_ready_is_handed_to_the_finishing_worker_unless_others_wait,
    a_batch_of_one_executions_steps_is_written_set_by_set,
    a_claim_larger_than_one_statement_starts_every_step,
    recovering_reruns_only_what_did_not_succeed_or_what_follows_a_checkpoint,
    tokens_are_stored_hashed_listed_touched_and_revoked,
    webhooks_are_created_listed_and_deleted,
    the_overview_counts_executions_steps_and_the_queue,
    an_execution_past_its_deadline_fails_and_its_leases_stop_counting,
    events_become_deliveries_that_are_claimed_once_finished_and_cancelled,
    a_loop_expands_into_its_iterations_and_waits_for_them,
);

const CHAIN: &str = "name: chain\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n  - id: c\n    tool: echo\n    depends_on: [b]\noutputs:\n  last: '{{ c.result }}'\n";
const FAN: &str = "name: fan\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n  - id: c\n    tool: echo\n    depends_on: [a, b]\n";

fn new_execution(yaml: &str, key: Option<&str>, hash: Option<&str>) -> NewExecution {
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
    }
}

fn done(status: StepStatus, result: Value) -> StepResult {
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
        started_at: now_ms(),
        finished_at: now_ms(),
    }
}

fn no_outputs(
    _: &orchestrator_store::ExecutionRecord,
    _: &[orchestrator_store::StepRecord],
) -> (Option<Value>, Option<String>) {
    (None, None)
}

/// A stored execution that must exist.
async fn execution(store: &Arc<dyn Store>, id: &str) -> orchestrator_store::ExecutionRecord {
    store
        .get_execution(id)
        .await
        .expect("get")
        .expect("the execution exists")
}

/// Records a result for a step this test holds the lease of.
async fn finish(store: &Arc<dyn Store>, step: &ClaimedStep, status: StepStatus, result: Value) {
    store
        .finish_step(step, done(status, result), &no_outputs, None)
        .await
        .expect("finish");
}

async fn claim_ids(store: &Arc<dyn Store>, limit: u32) -> Vec<ClaimedStep> {
    store.claim_steps("w1", limit, 30_000).await.expect("claim")
}

async fn creating_an_execution_stores_it_with_its_steps(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    let (created, inserted) = store.create_execution(new.clone()).await.expect("create");
    assert!(inserted);
    assert_eq!(created.status, ExecutionStatus::Queued);
    assert_eq!(created.pipeline_name, "chain");
    let fetched = execution(&store, &new.id).await;
    assert_eq!(fetched, created);
    let steps = store.list_steps(&new.id).await.expect("steps");
    let view: Vec<(&str, StepStatus)> = steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status))
        .collect();
    assert_eq!(
        view,
        vec![
            ("a", StepStatus::Ready),
            ("b", StepStatus::Pending),
            ("c", StepStatus::Pending)
        ]
    );
    assert_eq!(steps[1].depends_on, vec!["a"]);
    assert!(
        store
            .get_execution("no-such-id")
            .await
            .expect("get")
            .is_none()
    );
    store.ping().await.expect("ping");
}

async fn only_ready_steps_are_claimed_and_each_only_once(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 10).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a"]
    );
    assert_eq!(claimed[0].attempt, 1);
    assert!(
        claim_ids(&store, 10).await.is_empty(),
        "a leased step is not claimable"
    );
    let exec = execution(&store, &new.id).await;
    assert_eq!(exec.status, ExecutionStatus::Running);
    assert!(exec.started_at.is_some());
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Running);
}

async fn finishing_a_step_readies_its_dependents_and_records_a_checkpoint(store: Arc<dyn Store>) {
    let new = new_execution(FAN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 10).await;
    assert_eq!(claimed.len(), 2);
    let first = store
        .finish_step(
            &claimed[0],
            done(StepStatus::Succeeded, json!("A")),
            &no_outputs,
            None,
        )
        .await
        .expect("finish");
    assert!(first.ready.is_empty(), "c still waits for the other");
    let second = store
        .finish_step(
            &claimed[1],
            done(StepStatus::Succeeded, json!("B")),
            &no_outputs,
            None,
        )
        .await
        .expect("finish");
    assert_eq!(second.ready, vec!["c"]);
    let next = claim_ids(&store, 10).await;
    assert_eq!(
        next.iter().map(|c| c.step_id.as_str()).collect::<Vec<_>>(),
        vec!["c"]
    );
    let ctx = store
        .step_context(&new.id, &["a".into(), "c".into()])
        .await
        .expect("ctx")
        .expect("exists");
    assert_eq!(ctx.results.len(), 2);
    assert_eq!(ctx.results[0].0, "a");
    assert_eq!(
        ctx.results[0].2.as_ref().map(|r| r["result"].clone()),
        Some(json!("A"))
    );
    assert_eq!(ctx.results[1].1, StepStatus::Running);
    let checkpoints = store.list_checkpoints(&new.id).await.expect("checkpoints");
    assert_eq!(checkpoints.len(), 2);
    assert_eq!(checkpoints[0].status, StepStatus::Succeeded);
    assert_eq!(
        checkpoints[0].result.as_ref().map(|r| r["result"].clone()),
        Some(json!("A"))
    );
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(
        steps[0].result.as_ref().map(|r| r["result"].clone()),
        Some(json!("A"))
    );
}

async fn a_stale_lease_cannot_write_a_result(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let mut claimed = claim_ids(&store, 10).await.remove(0);
    claimed.lease_token = "not-the-token".into();
    let err = store
        .finish_step(
            &claimed,
            done(StepStatus::Succeeded, json!(1)),
            &no_outputs,
            None,
        )
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let err = store
        .retry_step(&claimed, done(StepStatus::Failed, json!(null)), 0)
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Running);
    assert!(steps[0].result.is_none());
    assert!(
        store
            .list_checkpoints(&new.id)
            .await
            .expect("cps")
            .is_empty()
    );
}

async fn the_last_step_finishes_the_execution_with_its_outputs(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let render = |_: &orchestrator_store::ExecutionRecord,
                  steps: &[orchestrator_store::StepRecord]|
     -> (Option<Value>, Option<String>) {
        let last = steps
            .iter()
            .find(|s| s.step_id == "c")
            .and_then(|s| s.result.clone());
        (
            Some(json!({"last": last.map(|r| r["result"].clone())})),
            None,
        )
    };
    for id in ["a", "b", "c"] {
        let claimed = claim_ids(&store, 10).await;
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].step_id, id);
        let outcome = store
            .finish_step(
                &claimed[0],
                done(StepStatus::Succeeded, json!(id)),
                &render,
                None,
            )
            .await
            .expect("finish");
        assert_eq!(outcome.execution_finished.is_some(), id == "c");
    }
    let exec = execution(&store, &new.id).await;
    assert_eq!(exec.status, ExecutionStatus::Succeeded);
    assert_eq!(exec.outputs, Some(json!({"last": "c"})));
    assert!(exec.finished_at.is_some());
    assert!(claim_ids(&store, 10).await.is_empty());
}

async fn a_failed_step_cancels_what_has_not_started(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 10).await.remove(0);
    let outcome = store
        .finish_step(
            &claimed,
            done(StepStatus::Failed, json!(null)),
            &no_outputs,
            None,
        )
        .await
        .expect("finish");
    assert_eq!(outcome.execution_finished, Some(ExecutionStatus::Failed));
    let steps = store.list_steps(&new.id).await.expect("steps");
    let statuses: Vec<StepStatus> = steps.iter().map(|s| s.status).collect();
    assert_eq!(
        statuses,
        vec![
            StepStatus::Failed,
            StepStatus::Cancelled,
            StepStatus::Cancelled
        ]
    );
    assert_eq!(steps[0].error_type.as_deref(), Some("ToolError"));
    let exec = execution(&store, &new.id).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert!(
        exec.error
            .as_deref()
            .unwrap_or_default()
            .contains("step 'a' failed"),
        "{:?}",
        exec.error
    );
}

async fn a_retried_step_waits_for_its_delay_and_counts_attempts(store: Arc<dyn Store>) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 10).await.remove(0);
    store
        .retry_step(&claimed, done(StepStatus::Failed, json!(null)), 60_000)
        .await
        .expect("retry");
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Retrying);
    assert!(
        claim_ids(&store, 10).await.is_empty(),
        "not before its delay"
    );
    let wait = store
        .next_run_in_ms()
        .await
        .expect("next")
        .expect("something queued");
    assert!(wait > 50_000 && wait <= 60_000, "{wait}");

    let claimed = claim_ids(&store, 10).await;
    assert!(claimed.is_empty());
    // A zero delay is claimable at once, as attempt 2.
    let other = new_execution(CHAIN, None, None);
    store.create_execution(other.clone()).await.expect("create");
    let c = claim_ids(&store, 10).await.remove(0);
    store
        .retry_step(&c, done(StepStatus::Failed, json!(null)), 0)
        .await
        .expect("retry");
    let again = claim_ids(&store, 10).await.remove(0);
    assert_eq!((again.step_id.as_str(), again.attempt), ("a", 2));
    let checkpoints = store.list_checkpoints(&other.id).await.expect("cps");
    assert_eq!(checkpoints.len(), 1);
    assert_eq!(
        (checkpoints[0].attempt, checkpoints[0].status),
        (1, StepStatus::Failed)
    );
}

async fn idempotency_keys_return_the_original_or_conflict(store: Arc<dyn Store>) {
    let first = new_execution(CHAIN, Some("key-1"), Some("hash-1"));
    let (created, inserted) = store.create_execution(first.clone()).await.expect("create");
    assert!(inserted);
    let again = new_execution(CHAIN, Some("key-1"), Some("hash-1"));
    let (replayed, inserted) = store.create_execution(again).await.expect("replay");
    assert!(!inserted);
    assert_eq!(replayed.id, created.id);
    let different = new_execution(CHAIN, Some("key-1"), Some("hash-2"));
    let err = store
        .create_execution(different)
        .await
        .expect_err("conflict");
    assert!(matches!(err, StoreError::IdempotencyConflict(_)), "{err:?}");
    assert_eq!(
        store
            .list_executions(&ExecutionFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("list")
            .len(),
        1
    );
    // After the retention, the key is forgotten and may be used again.
    assert_eq!(
        store
            .expire_idempotency_keys(now_ms() - 3_600_000)
            .await
            .expect("expire"),
        0
    );
    assert_eq!(
        store
            .expire_idempotency_keys(now_ms() + 1)
            .await
            .expect("expire"),
        1
    );
    let reused = new_execution(CHAIN, Some("key-1"), Some("hash-2"));
    let (fresh, inserted) = store.create_execution(reused).await.expect("reuse");
    assert!(inserted);
    assert_ne!(fresh.id, created.id);
}

async fn executions_list_newest_first_with_filters_and_cursor(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for yaml in [CHAIN, FAN, CHAIN, FAN, CHAIN] {
        let new = new_execution(yaml, None, None);
        ids.push(new.id.clone());
        store.create_execution(new).await.expect("create");
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let all = store
        .list_executions(&ExecutionFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    let listed: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.reverse();
    assert_eq!(listed, expected);

    let chains = store
        .list_executions(&ExecutionFilter {
            pipeline: Some("chain".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(chains.len(), 3);
    let page1 = store
        .list_executions(&ExecutionFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .expect("list");
    let last = page1.last().expect("two");
    let page2 = store
        .list_executions(&ExecutionFilter {
            limit: 2,
            before: Some((last.created_at, last.id.clone())),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(
        page2.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        expected[2..4].to_vec()
    );
    let queued = store
        .list_executions(&ExecutionFilter {
            status: Some(ExecutionStatus::Running),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert!(queued.is_empty());
}

async fn concurrent_claims_never_hand_out_a_step_twice(store: Arc<dyn Store>) {
    let mut yaml = String::from("name: wide\nsteps:\n");
    for i in 0..60 {
        yaml.push_str(&format!("  - id: s{i}\n    tool: echo\n"));
    }
    for _ in 0..3 {
        store
            .create_execution(new_execution(&yaml, None, None))
            .await
            .expect("create");
    }
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let claimed = store
                    .claim_steps(&format!("w{w}"), 7, 30_000)
                    .await
                    .expect("claim");
                if claimed.is_empty() {
                    break;
                }
                got.extend(claimed.into_iter().map(|c| (c.execution_id, c.step_id)));
            }
            got
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for item in t.await.expect("task") {
            total += 1;
            assert!(seen.insert(item.clone()), "{item:?} claimed twice");
        }
    }
    assert_eq!(total, 180);
}

async fn heartbeats_extend_only_held_leases(store: Arc<dyn Store>) {
    store
        .create_execution(new_execution(FAN, None, None))
        .await
        .expect("create");
    let claimed = store.claim_steps("w1", 10, 1).await.expect("claim");
    assert_eq!(claimed.len(), 2);
    let tokens: Vec<String> = claimed.iter().map(|c| c.lease_token.clone()).collect();
    let beat = store
        .heartbeat(&[tokens[0].clone(), "unknown".into()], 60_000)
        .await
        .expect("beat");
    assert_eq!(beat.held, vec![tokens[0].clone()]);
    assert!(beat.cancelled.is_empty());
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        store
            .claim_steps("w2", 10, 30_000)
            .await
            .expect("claim")
            .is_empty(),
        "expired, not yet reaped"
    );
    // The step whose lease was not extended has expired: the reaper hands it back.
    assert_eq!(store.reap_expired_leases().await.expect("reap"), 1);
    let again = store.claim_steps("w2", 10, 30_000).await.expect("claim");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].step_id, claimed[1].step_id);
    assert_eq!((again[0].attempt, again[0].lost), (2, 1));
    // The first worker's late result is refused (fencing).
    let late = store
        .finish_step(
            &claimed[1],
            done(StepStatus::Succeeded, json!("late")),
            &no_outputs,
            None,
        )
        .await;
    assert!(
        matches!(late, Err(StoreError::LeaseLost { .. })),
        "{late:?}"
    );
    assert_eq!(store.queue_depth().await.expect("depth"), 2);
}

async fn released_leases_are_claimable_at_once_without_using_an_attempt(store: Arc<dyn Store>) {
    let new = new_execution(FAN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 10).await;
    let tokens: Vec<String> = claimed.iter().map(|c| c.lease_token.clone()).collect();
    assert_eq!(store.release_leases(&tokens).await.expect("release"), 2);
    let again = claim_ids(&store, 10).await;
    assert_eq!(
        again
            .iter()
            .map(|c| (c.attempt, c.lost))
            .collect::<Vec<_>>(),
        vec![(1, 0), (1, 0)]
    );
    // Cancelling reports the running steps' leases to their heartbeat.
    store
        .cancel_execution(&new.id)
        .await
        .expect("cancel")
        .expect("exists");
    let tokens: Vec<String> = again.iter().map(|c| c.lease_token.clone()).collect();
    let beat = store.heartbeat(&tokens, 30_000).await.expect("beat");
    assert_eq!(beat.cancelled.len(), 2);
    let exec = execution(&store, &new.id).await;
    assert_eq!(exec.status, ExecutionStatus::Cancelled);
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[2].status, StepStatus::Cancelled, "c never started");
    assert_eq!(
        steps[0].status,
        StepStatus::Running,
        "a still runs until its worker stops it"
    );
}

async fn models_are_registered_listed_replaced_and_deleted(store: Arc<dyn Store>) {
    let spec =
        json!({"id": "m1", "provider": "openai", "model": "gpt", "capabilities": ["generate"]});
    assert!(
        store
            .insert_model("m1", &spec, "api")
            .await
            .expect("insert")
    );
    assert!(
        !store
            .insert_model("m1", &spec, "api")
            .await
            .expect("duplicate"),
        "the id is taken"
    );
    // Creation times are in milliseconds (equal ones list by id): m0 must
    // come a millisecond later to be the newer one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .upsert_model(
            "m0",
            &json!({"id": "m0", "provider": "anthropic", "model": "claude"}),
            "file",
        )
        .await
        .expect("upsert");
    let replaced = json!({"id": "m1", "provider": "openai", "model": "gpt-2"});
    store
        .upsert_model("m1", &replaced, "file")
        .await
        .expect("replace");
    let models = store.list_models().await.expect("list");
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m0"], "oldest first");
    assert_eq!(
        (models[0].spec.clone(), models[0].source.as_str()),
        (replaced, "file")
    );
    assert!(store.delete_model("m1").await.expect("delete"));
    assert!(!store.delete_model("m1").await.expect("gone"));
    assert_eq!(store.list_models().await.expect("list").len(), 1);
}

async fn model_calls_add_up_per_model_and_per_execution(store: Arc<dyn Store>) {
    let call = |model: &str, step: &str, ok: bool, latency: i64, cost: f64| {
        orchestrator_store::ModelCall {
            model_id: model.into(),
            execution_id: Some("e1".into()),
            step_id: Some(step.into()),
            attempt: 1,
            started_at: now_ms(),
            latency_ms: latency,
            success: ok,
            input_tokens: 100,
            output_tokens: 20,
            cost,
            reward: if ok { 0.75 } else { 0.0 },
            error_type: (!ok).then(|| "ModelProviderError".to_string()),
        }
    };
    for c in [
        call("a", "s1", true, 100, 0.5),
        call("a", "s1", false, 300, 0.0),
        call("b", "s2", true, 50, 0.25),
        orchestrator_store::ModelCall {
            execution_id: Some("e2".into()),
            ..call("b", "s9", true, 70, 1.0)
        },
    ] {
        store.record_model_call(&c).await.expect("record");
    }
    let stats = store.model_call_stats().await.expect("stats");
    assert_eq!(stats.len(), 2);
    let a = &stats[0];
    assert_eq!(
        (
            a.model_id.as_str(),
            a.calls,
            a.successes,
            a.input_tokens,
            a.output_tokens
        ),
        ("a", 2, 1, 200, 40)
    );
    assert!((a.cost - 0.5).abs() < 1e-9 && (a.reward_sum - 0.75).abs() < 1e-9);
    let mut lat = a.recent_latencies_ms.clone();
    lat.sort_unstable();
    assert_eq!(lat, [100, 300]);
    let usage = store.execution_usage("e1").await.expect("usage");
    assert_eq!(usage.len(), 2);
    assert_eq!(
        (
            usage[0].step_id.as_str(),
            usage[0].model_id.as_str(),
            usage[0].calls
        ),
        ("s1", "a", 2)
    );
    assert!((usage[1].cost - 0.25).abs() < 1e-9);
    assert!(
        store
            .execution_usage("none")
            .await
            .expect("empty")
            .is_empty()
    );
}

async fn a_batch_of_results_is_written_together_and_a_stale_one_alone_is_refused(
    store: Arc<dyn Store>,
) {
    // Two executions: a fan-in (a, b -> c) and a one-step one; a's lease is stale.
    let fan = new_execution(FAN, None, None);
    store.create_execution(fan.clone()).await.expect("create");
    let one = new_execution("name: one\nsteps:\n  - id: x\n    tool: echo\n", None, None);
    store.create_execution(one.clone()).await.expect("create");
    let mut claimed = claim_ids(&store, 10).await;
    assert_eq!(claimed.len(), 3);
    claimed.sort_by(|p, q| p.step_id.cmp(&q.step_id));
    let mut stale = claimed[0].clone();
    assert_eq!(stale.step_id, "a");
    stale.lease_token = "not-the-token".into();
    let batch = vec![
        (stale, done(StepStatus::Succeeded, json!("A"))),
        (claimed[1].clone(), done(StepStatus::Succeeded, json!("B"))),
        (claimed[2].clone(), done(StepStatus::Succeeded, json!("X"))),
    ];
    let results = store
        .finish_steps(batch, &no_outputs, None)
        .await
        .expect("batch");
    assert_eq!(results.len(), 3);
    assert!(
        matches!(results[0], Err(StoreError::LeaseLost { .. })),
        "{:?}",
        results[0]
    );
    let b = results[1].as_ref().expect("b");
    assert!(b.ready.is_empty(), "c still waits for a");
    let x = results[2].as_ref().expect("x");
    assert_eq!(x.execution_finished, Some(ExecutionStatus::Succeeded));
    let steps = store.list_steps(&fan.id).await.expect("steps");
    let status = |id: &str| steps.iter().find(|s| s.step_id == id).map(|s| s.status);
    assert_eq!(
        status("a"),
        Some(StepStatus::Running),
        "the stale write left nothing"
    );
    assert_eq!(status("b"), Some(StepStatus::Succeeded));
    let checkpoints = store.list_checkpoints(&fan.id).await.expect("checkpoints");
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"]
    );
    // The real holder of a's lease still finishes it, and c becomes ready.
    let a = store
        .finish_steps(
            vec![(claimed[0].clone(), done(StepStatus::Succeeded, json!("A")))],
            &no_outputs,
            None,
        )
        .await
        .expect("batch")
        .remove(0)
        .expect("a");
    assert_eq!(a.ready, vec!["c"]);
    let done_one = execution(&store, &one.id).await;
    assert_eq!(done_one.status, ExecutionStatus::Succeeded);
}

async fn a_step_made_ready_is_handed_to_the_finishing_worker_unless_others_wait(
    store: Arc<dyn Store>,
) {
    let handoff = Some(Handoff { lease_ms: 30_000 });
    let chain = new_execution(CHAIN, None, None);
    store.create_execution(chain.clone()).await.expect("create");
    let a = claim_ids(&store, 10).await.remove(0);
    // Nothing else waits: b comes back leased to a's worker and started.
    let outcome = store
        .finish_step(
            &a,
            done(StepStatus::Succeeded, json!("A")),
            &no_outputs,
            handoff,
        )
        .await
        .expect("finish a");
    assert!(outcome.ready.is_empty(), "{:?}", outcome.ready);
    let b = outcome.next.expect("b handed off");
    assert_eq!(
        (b.step_id.as_str(), b.attempt, b.worker.as_str(), b.lost),
        ("b", 1, "w1", 0)
    );
    assert_eq!(b.definition.id, "b");
    assert_ne!(b.lease_token, a.lease_token);
    assert!(
        claim_ids(&store, 10).await.is_empty(),
        "a handed-off step is leased like a claimed one"
    );
    let steps = store.list_steps(&chain.id).await.expect("steps");
    assert_eq!(steps[1].status, StepStatus::Running);
    assert_eq!(steps[1].attempt, 1);
    let beat = store
        .heartbeat(std::slice::from_ref(&b.lease_token), 30_000)
        .await
        .expect("heartbeat");
    assert_eq!(beat.held, vec![b.lease_token.clone()]);
    let events = store.list_events(&chain.id, 0, 100).await.expect("events");
    let of_b: Vec<&str> = events
        .iter()
        .filter(|e| e.step_id.as_deref() == Some("b"))
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(of_b, vec!["step.ready", "step.started"]);
    assert!(
        events.windows(2).all(|w| w[1].seq == w[0].seq + 1),
        "events stay numbered without gaps"
    );

    // Another execution's steps wait in the queue: they were ready first,
    // so c is queued behind them, not handed over.
    let fan = new_execution(FAN, None, None);
    store.create_execution(fan.clone()).await.expect("create");
    let outcome = store
        .finish_step(
            &b,
            done(StepStatus::Succeeded, json!("B")),
            &no_outputs,
            handoff,
        )
        .await
        .expect("finish b");
    assert!(outcome.next.is_none());
    assert_eq!(outcome.ready, vec!["c"]);
    let claimed = claim_ids(&store, 10).await;
    let mut ids: Vec<(&str, &str)> = claimed
        .iter()
        .map(|c| (c.execution_id.as_str(), c.step_id.as_str()))
        .collect();
    ids.sort();
    let mut want = vec![
        (fan.id.as_str(), "a"),
        (fan.id.as_str(), "b"),
        (chain.id.as_str(), "c"),
    ];
    want.sort();
    assert_eq!(ids, want);
    // The handed-off lease ended with b's result.
    let err = store
        .finish_step(
            &b,
            done(StepStatus::Succeeded, json!("B")),
            &no_outputs,
            None,
        )
        .await
        .expect_err("b is finished");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");

    // Without a hand-off nothing changes: c's dependents are queued.
    let c = claimed.iter().find(|c| c.step_id == "c").expect("c");
    let outcome = store
        .finish_step(
            c,
            done(StepStatus::Succeeded, json!("C")),
            &no_outputs,
            handoff,
        )
        .await
        .expect("finish c");
    assert!(outcome.next.is_none());
    assert_eq!(outcome.execution_finished, Some(ExecutionStatus::Succeeded));
}

fn assert_gap_free(events: &[orchestrator_store::EventRecord]) {
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
}

async fn a_batch_of_one_executions_steps_is_written_set_by_set(store: Arc<dyn Store>) {
    const FAN3: &str = "name: fan3\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n  - id: d\n    tool: echo\n  - id: c\n    tool: echo\n    depends_on: [a, b]\n";
    let handoff = Some(Handoff { lease_ms: 30_000 });
    let fan = new_execution(FAN3, None, None);
    store.create_execution(fan.clone()).await.expect("create");
    let mut claimed = claim_ids(&store, 10).await;
    claimed.sort_by(|p, q| p.step_id.cmp(&q.step_id));
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b", "d"]
    );
    let batch: Vec<(ClaimedStep, StepResult)> = claimed
        .iter()
        .map(|c| (c.clone(), done(StepStatus::Succeeded, json!(c.step_id))))
        .collect();
    let results = store
        .finish_steps(batch, &no_outputs, handoff)
        .await
        .expect("batch");
    let results: Vec<_> = results.into_iter().map(|r| r.expect("held")).collect();
    // c's dependencies both finished here: made ready once, handed to a.
    let c = results[0].next.clone().expect("c handed to a's slot");
    assert_eq!(c.step_id, "c");
    assert!(results.iter().all(|r| r.ready.is_empty()));
    assert!(results[1].next.is_none() && results[2].next.is_none());
    assert!(results.iter().all(|r| r.execution_finished.is_none()));
    let steps = store.list_steps(&fan.id).await.expect("steps");
    let view: Vec<(&str, StepStatus, Option<Value>)> = steps
        .iter()
        .map(|s| {
            (
                s.step_id.as_str(),
                s.status,
                s.result.as_ref().map(|r| r["result"].clone()),
            )
        })
        .collect();
    assert_eq!(
        view,
        vec![
            ("a", StepStatus::Succeeded, Some(json!("a"))),
            ("b", StepStatus::Succeeded, Some(json!("b"))),
            ("d", StepStatus::Succeeded, Some(json!("d"))),
            ("c", StepStatus::Running, None),
        ]
    );
    let checkpoints = store.list_checkpoints(&fan.id).await.expect("checkpoints");
    let mut of: Vec<&str> = checkpoints.iter().map(|c| c.step_id.as_str()).collect();
    of.sort();
    assert_eq!(of, vec!["a", "b", "d"]);
    assert!(
        checkpoints
            .iter()
            .all(|c| c.worker.as_deref() == Some("w1"))
    );
    let events = store.list_events(&fan.id, 0, 100).await.expect("events");
    assert_gap_free(&events);
    let kinds: Vec<(&str, Option<&str>)> = events
        .iter()
        .skip_while(|e| e.kind != "step.succeeded")
        .map(|e| (e.kind.as_str(), e.step_id.as_deref()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("step.succeeded", Some("a")),
            ("step.succeeded", Some("b")),
            ("step.succeeded", Some("d")),
            ("step.ready", Some("c")),
            ("step.started", Some("c")),
        ]
    );
    // The last step, alone, ends the execution; numbering goes on unbroken.
    let render =
        |_: &orchestrator_store::ExecutionRecord,
         steps: &[orchestrator_store::StepRecord]|
         -> (Option<Value>, Option<String>) { (Some(json!({"steps": steps.len()})), None) };
    let last = store
        .finish_step(
            &c,
            done(StepStatus::Succeeded, json!("c")),
            &render,
            handoff,
        )
        .await
        .expect("finish c");
    assert_eq!(last.execution_finished, Some(ExecutionStatus::Succeeded));
    let exec = execution(&store, &fan.id).await;
    assert_eq!(exec.outputs, Some(json!({"steps": 4})));
    let events = store.list_events(&fan.id, 0, 100).await.expect("events");
    assert_gap_free(&events);
    assert_eq!(
        events.last().map(|e| e.kind.as_str()),
        Some("execution.succeeded")
    );

    // A batch that finishes an execution names it on its last step; one
    // cancelled meanwhile keeps the results and starts nothing.
    let two = new_execution(FAN, None, None);
    store.create_execution(two.clone()).await.expect("create");
    let mut claimed = claim_ids(&store, 10).await;
    claimed.sort_by(|p, q| p.step_id.cmp(&q.step_id));
    store.cancel_execution(&two.id).await.expect("cancel");
    let results = store
        .finish_steps(
            claimed
                .iter()
                .map(|c| (c.clone(), done(StepStatus::Succeeded, json!(1))))
                .collect(),
            &no_outputs,
            handoff,
        )
        .await
        .expect("batch");
    for r in results {
        let r = r.expect("held");
        assert!(r.ready.is_empty() && r.next.is_none() && r.execution_finished.is_none());
    }
    let steps = store.list_steps(&two.id).await.expect("steps");
    let view: Vec<(&str, StepStatus)> = steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.status))
        .collect();
    assert_eq!(
        view,
        vec![
            ("a", StepStatus::Succeeded),
            ("b", StepStatus::Succeeded),
            ("c", StepStatus::Cancelled)
        ]
    );
    let exec = execution(&store, &two.id).await;
    assert_eq!(exec.status, ExecutionStatus::Cancelled);
    assert_gap_free(&store.list_events(&two.id, 0, 100).await.expect("events"));
}

async fn a_claim_larger_than_one_statement_starts_every_step(store: Arc<dyn Store>) {
    // More steps than one multi-row statement takes (500 rows).
    let mut yaml = String::from("name: wide\nsteps:\n");
    for i in 0..1_200 {
        yaml.push_str(&format!("  - id: s{i}\n    tool: echo\n"));
    }
    let wide = new_execution(&yaml, None, None);
    store.create_execution(wide.clone()).await.expect("create");
    let claimed = store.claim_steps("w1", 2_000, 30_000).await.expect("claim");
    assert_eq!(claimed.len(), 1_200);
    assert!(claimed.iter().all(|c| c.attempt == 1));
    let steps = store.list_steps(&wide.id).await.expect("steps");
    assert!(steps.iter().all(|s| s.status == StepStatus::Running));
    let events = store.list_events(&wide.id, 0, 5_000).await.expect("events");
    assert_gap_free(&events);
    let started = events.iter().filter(|e| e.kind == "step.started").count();
    assert_eq!(started, 1_200);
}

async fn recovering_reruns_only_what_did_not_succeed_or_what_follows_a_checkpoint(
    store: Arc<dyn Store>,
) {
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let a = claim_ids(&store, 10).await.remove(0);
    finish(&store, &a, StepStatus::Succeeded, json!("a")).await;
    let b = claim_ids(&store, 10).await.remove(0);
    assert_eq!(b.step_id, "b");
    finish(&store, &b, StepStatus::Failed, json!(null)).await;
    assert_eq!(
        execution(&store, &new.id).await.status,
        ExecutionStatus::Failed
    );

    // Without a checkpoint: the failed step and what it cancelled.
    let again = store
        .recover_execution(&new.id, None)
        .await
        .expect("recover")
        .expect("exists");
    assert_eq!(again, vec!["b".to_string(), "c".to_string()]);
    let recovered = execution(&store, &new.id).await;
    assert!(!recovered.status.is_terminal(), "{:?}", recovered.status);
    let claimed = claim_ids(&store, 10).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"],
        "a kept its result"
    );
    // While it runs, recovering is a conflict.
    assert!(matches!(
        store.recover_execution(&new.id, None).await,
        Err(StoreError::Conflict(_))
    ));
    let b = claimed.into_iter().next().expect("b");
    finish(&store, &b, StepStatus::Succeeded, json!("b")).await;
    let c = claim_ids(&store, 10).await.remove(0);
    finish(&store, &c, StepStatus::Succeeded, json!("c")).await;
    assert_eq!(
        execution(&store, &new.id).await.status,
        ExecutionStatus::Succeeded
    );

    // From a checkpoint: that step and everything after it.
    let again = store
        .recover_execution(&new.id, Some("b"))
        .await
        .expect("recover")
        .expect("exists");
    assert_eq!(again, vec!["b".to_string(), "c".to_string()]);
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    let checkpoints = store.list_checkpoints(&new.id).await.expect("checkpoints");
    assert_eq!(
        checkpoints
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["a", "b", "b", "c"],
        "every finished attempt keeps its checkpoint"
    );
    assert!(
        store
            .recover_execution("nope", None)
            .await
            .expect("recover")
            .is_none()
    );
}

async fn tokens_are_stored_hashed_listed_touched_and_revoked(store: Arc<dyn Store>) {
    let token = |id: &str, scope: &str| orchestrator_store::TokenRecord {
        id: id.to_string(),
        name: format!("{id}-name"),
        scope: scope.to_string(),
        hash: format!("hash-of-{id}"),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    store.create_token(&token("t1", "read")).await.expect("t1");
    store.create_token(&token("t2", "admin")).await.expect("t2");
    let got = store.get_token("t1").await.expect("get").expect("t1");
    assert_eq!(
        (got.scope.as_str(), got.hash.as_str()),
        ("read", "hash-of-t1")
    );
    assert!(store.get_token("nope").await.expect("get").is_none());
    let listed: Vec<String> = store
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec!["t1", "t2"]);
    let now = now_ms();
    store.touch_token("t1", now).await.expect("touch");
    let touched = store.get_token("t1").await.expect("get").expect("t1");
    assert!(touched.last_used_at.is_some_and(|t| t >= now - 60_000));
    assert!(store.revoke_token("t1", now).await.expect("revoke"));
    assert!(
        !store.revoke_token("t1", now).await.expect("again"),
        "already revoked"
    );
    assert!(!store.revoke_token("nope", now).await.expect("unknown"));
    let revoked = store.get_token("t1").await.expect("get").expect("kept");
    assert_eq!(revoked.revoked_at, Some(now));

    // Active executions are counted per token.
    let mut mine = new_execution(CHAIN, None, None);
    mine.token_id = Some("t2".into());
    store.create_execution(mine).await.expect("create");
    store
        .create_execution(new_execution(CHAIN, None, None))
        .await
        .expect("create");
    assert_eq!(
        store.active_executions_of_token("t2").await.expect("count"),
        1
    );
    assert_eq!(
        store.active_executions_of_token("t1").await.expect("count"),
        0
    );
}

async fn webhooks_are_created_listed_and_deleted(store: Arc<dyn Store>) {
    let hook = |id: &str| orchestrator_store::WebhookRecord {
        id: id.to_string(),
        url: format!("https://example.com/{id}"),
        events: vec!["execution.finished".into()],
        secret: format!("secret-{id}"),
        created_at: now_ms(),
    };
    store
        .create_webhook(
            &hook("h1"),
            &["execution.succeeded".into(), "execution.failed".into()],
        )
        .await
        .expect("h1");
    store
        .create_webhook(&hook("h2"), &["step.failed".into()])
        .await
        .expect("h2");
    let listed = store.list_webhooks().await.expect("list");
    assert_eq!(listed.len(), 2);
    let h1 = listed.iter().find(|h| h.id == "h1").expect("h1");
    assert_eq!(h1.events, vec!["execution.finished"]);
    assert_eq!(h1.secret, "secret-h1");
    assert!(store.delete_webhook("h1").await.expect("delete"));
    assert!(!store.delete_webhook("h1").await.expect("again"));
    let listed = store.list_webhooks().await.expect("list");
    assert_eq!(
        listed.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(),
        vec!["h2"]
    );
    assert!(
        store
            .list_deliveries("h2", 10)
            .await
            .expect("deliveries")
            .is_empty()
    );
}

async fn the_overview_counts_executions_steps_and_the_queue(store: Arc<dyn Store>) {
    let empty = store.overview().await.expect("overview");
    assert_eq!((empty.ready_steps, empty.leased_steps), (0, 0));
    assert_eq!(empty.oldest_ready_age_ms, None);
    let new = new_execution(FAN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let before = store.overview().await.expect("overview");
    assert_eq!((before.ready_steps, before.leased_steps), (2, 0));
    assert!(before.oldest_ready_age_ms.is_some());
    let count = |rows: &[(String, i64)], key: &str| {
        rows.iter().find(|(k, _)| k == key).map_or(0, |(_, n)| *n)
    };
    assert_eq!(count(&before.executions_by_status, "queued"), 1);
    let claimed = claim_ids(&store, 1).await;
    assert_eq!(claimed.len(), 1);
    let after = store.overview().await.expect("overview");
    assert_eq!((after.ready_steps, after.leased_steps), (1, 1));
    assert_eq!(count(&after.executions_by_status, "running"), 1);
    assert_eq!(count(&after.active_steps_by_status, "running"), 1);
}

async fn an_execution_past_its_deadline_fails_and_its_leases_stop_counting(store: Arc<dyn Store>) {
    let mut late = new_execution(CHAIN, None, None);
    late.timeout_ms = Some(1);
    let mut on_time = new_execution(CHAIN, None, None);
    on_time.timeout_ms = Some(3_600_000);
    store.create_execution(late.clone()).await.expect("late");
    store
        .create_execution(on_time.clone())
        .await
        .expect("on time");
    let claimed = claim_ids(&store, 10).await;
    let late_step = claimed
        .iter()
        .find(|c| c.execution_id == late.id)
        .expect("late step claimed")
        .clone();
    // The deadline is a time, not a state: wait until it has passed.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let expired = store.expire_deadlines().await.expect("expire");
    assert_eq!(expired, vec![late.id.clone()]);
    assert!(
        store.expire_deadlines().await.expect("again").is_empty(),
        "once"
    );
    let exec = execution(&store, &late.id).await;
    assert_eq!(exec.status, ExecutionStatus::Failed);
    assert_eq!(
        execution(&store, &on_time.id).await.status,
        ExecutionStatus::Running
    );
    // The running step of the late execution is told to stop.
    let heartbeat = store
        .heartbeat(std::slice::from_ref(&late_step.lease_token), 30_000)
        .await
        .expect("heartbeat");
    assert!(
        heartbeat.cancelled.contains(&late_step.lease_token),
        "{heartbeat:?}"
    );
}

async fn events_become_deliveries_that_are_claimed_once_finished_and_cancelled(
    store: Arc<dyn Store>,
) {
    let hook = |id: &str| orchestrator_store::WebhookRecord {
        id: id.to_string(),
        url: format!("https://example.com/{id}"),
        events: vec!["*".into()],
        secret: format!("secret-{id}"),
        created_at: now_ms(),
    };
    store
        .create_webhook(&hook("all"), &["*".into()])
        .await
        .expect("all");
    store
        .create_webhook(&hook("none"), &["model.never".into()])
        .await
        .expect("none");
    let new = new_execution(CHAIN, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let a = claim_ids(&store, 10).await.remove(0);
    finish(&store, &a, StepStatus::Succeeded, json!("a")).await;
    let events = store.list_events(&new.id, 0, 100).await.expect("events");
    assert!(events.len() >= 2, "{events:?}");

    // Every event of the execution, once, for the webhook that wants it.
    let jobs = store.claim_deliveries(100, 30_000).await.expect("claim");
    assert_eq!(jobs.len(), events.len(), "{jobs:?}");
    assert!(jobs.iter().all(|j| j.webhook_id == "all"
        && j.url.as_deref() == Some("https://example.com/all")
        && j.secret == "secret-all"));
    assert!(
        store
            .claim_deliveries(100, 30_000)
            .await
            .expect("again")
            .is_empty(),
        "a claimed delivery is locked"
    );
    let first = &jobs[0];
    store
        .finish_delivery(
            first.id,
            &orchestrator_store::DeliveryUpdate {
                status: "delivered".into(),
                attempts: 1,
                next_attempt_at: now_ms(),
                last_status_code: Some(204),
                last_error: None,
                log: json!([{"status_code": 204}]),
                delivered_at: Some(now_ms()),
            },
        )
        .await
        .expect("delivered");
    let second = &jobs[1];
    store
        .finish_delivery(
            second.id,
            &orchestrator_store::DeliveryUpdate {
                status: "pending".into(),
                attempts: 1,
                next_attempt_at: now_ms() + 3_600_000,
                last_status_code: Some(500),
                last_error: Some("server error".into()),
                log: json!([{"status_code": 500}]),
                delivered_at: None,
            },
        )
        .await
        .expect("retry later");
    let listed = store.list_deliveries("all", 100).await.expect("list");
    let status_of = |id: i64| {
        listed
            .iter()
            .find(|d| d.id == id)
            .map(|d| (d.status.clone(), d.attempts))
    };
    assert_eq!(status_of(first.id), Some(("delivered".into(), 1)));
    assert_eq!(status_of(second.id), Some(("pending".into(), 1)));
    assert!(
        store
            .list_deliveries("none", 100)
            .await
            .expect("list")
            .is_empty()
    );

    // Deleting the webhook cancels what it still had pending.
    assert!(store.delete_webhook("all").await.expect("delete"));
    let listed = store.list_deliveries("all", 100).await.expect("list");
    assert!(
        listed
            .iter()
            .filter(|d| d.id != first.id)
            .all(|d| d.status == "cancelled"),
        "{listed:?}"
    );
    assert_eq!(
        listed
            .iter()
            .find(|d| d.id == first.id)
            .map(|d| d.status.as_str()),
        Some("delivered")
    );
}

async fn a_loop_expands_into_its_iterations_and_waits_for_them(store: Arc<dyn Store>) {
    const LOOP: &str = "name: loop\nsteps:\n  - id: list\n    tool: echo\n  - id: each\n    for_each: '{{ list.result }}'\n    max_parallel: 2\n    steps:\n      - id: say\n        tool: echo\n";
    let new = new_execution(LOOP, None, None);
    let each = new
        .steps
        .iter()
        .find(|s| s.planned.id == "each")
        .expect("the loop step")
        .planned
        .clone();
    store.create_execution(new.clone()).await.expect("create");
    let list = claim_ids(&store, 10).await.remove(0);
    finish(&store, &list, StepStatus::Succeeded, json!(["x", "y"])).await;
    let claimed = claim_ids(&store, 10).await;
    assert_eq!(
        claimed
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["each"]
    );
    let expansion = orchestrator_core::plan::expand_for_each(
        &each,
        &[json!("x"), json!("y")],
        &Default::default(),
    )
    .expect("expands");
    let mut container = each.clone();
    container.kind = orchestrator_core::StepKind::Join;
    container.iterations = 2;
    let steps: Vec<NewStep> = expansion
        .steps
        .iter()
        .map(|p| NewStep {
            planned: p.clone(),
            max_attempts: 1,
        })
        .collect();
    let ready = store
        .expand_step(&claimed[0], &container, steps, &expansion.join_deps)
        .await
        .expect("expand");
    assert_eq!(ready.len(), 2, "both iterations may run at once: {ready:?}");
    // The iterations run; the loop step waits for them.
    let iterations = claim_ids(&store, 10).await;
    let mut ids: Vec<&str> = iterations.iter().map(|c| c.step_id.as_str()).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec!["each_0_say", "each_1_say"]);
    for (i, step) in iterations.iter().enumerate() {
        finish(&store, step, StepStatus::Succeeded, json!(i)).await;
    }
    let again = claim_ids(&store, 10).await;
    assert_eq!(
        again.iter().map(|c| c.step_id.as_str()).collect::<Vec<_>>(),
        vec!["each"],
        "the loop step runs again to join its iterations"
    );
    let events = store.list_events(&new.id, 0, 100).await.expect("events");
    assert!(
        events.iter().any(|e| e.kind == "step.expanded"),
        "{events:?}"
    );
    assert_gap_free(&events);
    // A stale lease cannot expand.
    let stale = store
        .expand_step(&claimed[0], &container, vec![], &[])
        .await;
    assert!(
        matches!(stale, Err(StoreError::LeaseLost { .. })),
        "{stale:?}"
    );
}
