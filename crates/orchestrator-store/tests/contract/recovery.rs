//! Retries, recovery from checkpoints, loop expansion.

use crate::support::*;

orchestrator_store::for_each_backend!(
    a_retried_step_waits_for_its_delay_and_counts_attempts,
    recovering_reruns_only_what_did_not_succeed_or_what_follows_a_checkpoint,
    a_loop_expands_into_its_iterations_and_waits_for_them,
);

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
