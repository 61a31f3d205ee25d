//! Finishing steps: fencing, dependents, batches, hand-offs, final status.

use crate::support::*;

orchestrator_store::for_each_backend!(
    finishing_a_step_readies_its_dependents_and_records_a_checkpoint,
    a_stale_lease_cannot_write_a_result,
    the_last_step_finishes_the_execution_with_its_outputs,
    a_failed_step_cancels_what_has_not_started,
    a_batch_of_results_is_written_together_and_a_stale_one_alone_is_refused,
    a_step_made_ready_is_handed_to_the_finishing_worker_unless_others_wait,
    a_batch_of_one_executions_steps_is_written_set_by_set,
);

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
