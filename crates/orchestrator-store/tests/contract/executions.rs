//! Creating, listing and idempotency of executions; deadlines.

use crate::support::*;

orchestrator_store::for_each_backend!(
    creating_an_execution_stores_it_with_its_steps,
    idempotency_keys_return_the_original_or_conflict,
    executions_list_newest_first_with_filters_and_cursor,
    an_execution_past_its_deadline_fails_and_its_leases_stop_counting,
    the_view_reads_only_what_it_shows_of_the_plan,
    step_summaries_say_what_the_full_steps_say,
);

/// The view's execution carries the plan's levels, answers and warnings as
/// the full record has them, and nothing else of the plan or the source.
async fn the_view_reads_only_what_it_shows_of_the_plan(store: Arc<dyn Store>) {
    let mut new = new_execution(FAN, None, None);
    new.plan["auto_answers"] = json!([{"step": "a", "tag": "t", "answer": "x"}]);
    new.plan["warnings"] = json!([{"message": "careful", "line": 3}]);
    store.create_execution(new.clone()).await.expect("create");
    let full = execution(&store, &new.id).await;
    let view = store
        .get_execution_view(&new.id)
        .await
        .expect("view")
        .expect("found");
    let keys: Vec<&String> = view.plan.as_object().expect("object").keys().collect();
    assert_eq!(keys.len(), 3, "{:#}", view.plan);
    for key in ["levels", "auto_answers", "warnings"] {
        assert_eq!(view.plan[key], full.plan[key], "{key}");
    }
    assert_eq!(view.plan["levels"], json!([["a", "b"], ["c"]]));
    assert_eq!(view.source, "");
    assert_eq!(
        (view.status, view.inputs.clone(), view.created_at),
        (full.status, full.inputs.clone(), full.created_at)
    );
    // A plan without them reads as nulls.
    let mut bare = new_execution(CHAIN, None, None);
    if let Some(plan) = bare.plan.as_object_mut() {
        plan.remove("auto_answers");
        plan.remove("warnings");
    }
    store.create_execution(bare.clone()).await.expect("create");
    let view = store
        .get_execution_view(&bare.id)
        .await
        .expect("view")
        .expect("found");
    assert_eq!(view.plan["warnings"], Value::Null);
    assert!(view.plan["levels"].is_array(), "{:#}", view.plan);
    assert!(
        store
            .get_execution_view("no-such-id")
            .await
            .expect("get")
            .is_none()
    );
}

/// The view's steps, read without their definitions, say what the full
/// records say: tool, action and kind out of the definition, parameters and
/// result as stored.
async fn step_summaries_say_what_the_full_steps_say(store: Arc<dyn Store>) {
    let yaml = "name: kinds\nsteps:\n  - id: a\n    tool: echo\n    parameters: {text: 'hé \"q\"', n: [1, 2.5, null]}\n  - id: gen\n    action: generate\n    parameters: {prompt: hi}\n    depends_on: [a]\n  - id: each\n    for_each: '{{ a.result }}'\n    steps:\n      - id: say\n        tool: echo\n";
    let new = new_execution(yaml, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 1).await;
    let mut result = done(StepStatus::Succeeded, json!({"deep": {"x": [1, "two"]}}));
    result.parameters = Some(json!({"text": "hé \"q\"", "n": [1, 2.5, null]}));
    store
        .finish_step(&claimed[0], result, &no_outputs, None)
        .await
        .expect("finish");
    // A failure that timed out, with a message of several lines.
    let second = claim_ids(&store, 1).await;
    let mut failed = done(StepStatus::Failed, Value::Null);
    failed.timed_out = true;
    failed.error = Some("line one\n\tline \"two\" \u{1F600}".into());
    store
        .finish_step(&second[0], failed, &no_outputs, None)
        .await
        .expect("finish");
    let full = store.list_steps(&new.id).await.expect("steps");
    assert!(full.iter().any(|s| s.timed_out), "{full:#?}");
    let summaries = store.list_step_summaries(&new.id).await.expect("summaries");
    assert_eq!(summaries.len(), full.len());
    let raw = |v: &Option<Box<serde_json::value::RawValue>>| {
        v.as_ref()
            .map(|r| serde_json::from_str::<Value>(r.get()).expect("JSON"))
    };
    for (s, f) in summaries.iter().zip(&full) {
        assert_eq!(s.step_id, f.step_id);
        assert_eq!(s.status, f.status);
        assert_eq!(s.tool, f.definition.step.tool, "{}", s.step_id);
        assert_eq!(s.action, f.definition.step.action, "{}", s.step_id);
        assert_eq!(
            Value::String(s.kind.clone()),
            serde_json::to_value(f.definition.kind).expect("kind"),
            "{}",
            s.step_id
        );
        assert_eq!(s.depends_on, f.depends_on);
        assert_eq!((s.attempt, s.max_attempts), (f.attempt, f.max_attempts));
        assert_eq!(raw(&s.parameters), f.parameters, "{}", s.step_id);
        assert_eq!(raw(&s.result), f.result, "{}", s.step_id);
        assert_eq!(
            (&s.error, &s.error_type, &s.reason, s.timed_out),
            (&f.error, &f.error_type, &f.reason, f.timed_out)
        );
        assert_eq!((s.started_at, s.finished_at), (f.started_at, f.finished_at));
    }
    let kinds: Vec<(&str, Option<&str>, &str, &str)> = summaries
        .iter()
        .map(|s| {
            (
                s.step_id.as_str(),
                s.tool.as_deref(),
                s.action.as_str(),
                s.kind.as_str(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("a", Some("echo"), "echo", "task"),
            ("gen", None, "generate", "task"),
            ("each", None, "", "for_each"),
        ]
    );
    assert!(
        store
            .list_step_summaries("no-such-id")
            .await
            .expect("summaries")
            .is_empty()
    );
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
