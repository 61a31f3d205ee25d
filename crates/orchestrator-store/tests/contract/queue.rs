//! Claims, leases, heartbeats and releases.

use crate::support::*;

orchestrator_store::for_each_backend!(
    only_ready_steps_are_claimed_and_each_only_once,
    concurrent_claims_never_hand_out_a_step_twice,
    heartbeats_extend_only_held_leases,
    released_leases_are_claimable_at_once_without_using_an_attempt,
    a_claim_larger_than_one_statement_starts_every_step,
    a_submitting_worker_takes_first_steps_as_the_execution_is_created,
);

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

async fn a_submitting_worker_takes_first_steps_as_the_execution_is_created(store: Arc<dyn Store>) {
    let take = |limit| {
        Some(Take {
            worker: "submitter".into(),
            limit,
            lease_ms: 30_000,
        })
    };
    // Two first steps, one free slot: one is taken, the other is queued.
    let new = new_execution(FAN, None, None);
    let (record, created, taken) = store
        .create_and_take(new.clone(), take(1))
        .await
        .expect("create");
    assert!(created);
    assert_eq!(
        record.status,
        ExecutionStatus::Running,
        "started in the same commit"
    );
    assert_eq!(taken.len(), 1);
    let step = &taken[0];
    assert_eq!(
        (step.step_id.as_str(), step.attempt, step.lost),
        ("a", 1, 0)
    );
    assert_eq!(step.worker, "submitter");
    let context = step
        .context
        .as_ref()
        .expect("the context comes with the step");
    assert_eq!(context.pipeline_id, record.pipeline_id);
    let others = claim_ids(&store, 10).await;
    assert_eq!(
        others
            .iter()
            .map(|c| c.step_id.as_str())
            .collect::<Vec<_>>(),
        vec!["b"],
        "the taken step is leased; the other is anyone's"
    );
    let beat = store
        .heartbeat(std::slice::from_ref(&step.lease_token), 30_000)
        .await
        .expect("beat");
    assert_eq!(beat.held, vec![step.lease_token.clone()]);
    // A taken step finishes as a claimed one does.
    finish(&store, step, StepStatus::Succeeded, json!(1)).await;
    finish(&store, &others[0], StepStatus::Succeeded, json!(2)).await;
    let last = claim_ids(&store, 10).await;
    assert_eq!(last.len(), 1);
    finish(&store, &last[0], StepStatus::Succeeded, json!(3)).await;
    assert_eq!(
        execution(&store, &new.id).await.status,
        ExecutionStatus::Succeeded
    );
    let events = store.list_events(&new.id, 0, 100).await.expect("events");
    assert_gap_free(&events);
    // The version a view is checked against: status and last event.
    assert_eq!(
        store.execution_version(&new.id).await.expect("version"),
        Some((ExecutionStatus::Succeeded, events.len() as i64))
    );
    assert_eq!(
        store
            .execution_version("00000000-0000-0000-0000-000000000000")
            .await
            .expect("version"),
        None
    );
    let kinds: Vec<&str> = events.iter().take(3).map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["execution.queued", "execution.started", "step.started"]
    );

    // A step taken and handed back (the pool stopped) has not used an attempt.
    let new = new_execution(CHAIN, None, None);
    let (_, _, taken) = store
        .create_and_take(new.clone(), take(8))
        .await
        .expect("create");
    assert_eq!(taken.len(), 1, "only the first step is runnable");
    let tokens = vec![taken[0].lease_token.clone()];
    assert_eq!(store.release_leases(&tokens).await.expect("release"), 1);
    let again = claim_ids(&store, 10).await;
    assert_eq!((again[0].step_id.as_str(), again[0].attempt), ("a", 1));

    // Nothing is taken for an execution created before (same key), nor
    // with no free slot.
    let keyed = new_execution(FAN, Some("take-key"), Some("h"));
    let (_, _, first) = store
        .create_and_take(keyed.clone(), take(0))
        .await
        .expect("create");
    assert!(first.is_empty());
    let mut replay = keyed.clone();
    replay.id = uuid::Uuid::now_v7().to_string();
    let (existing, created, taken) = store
        .create_and_take(replay, take(4))
        .await
        .expect("replay");
    assert!(!created);
    assert_eq!(existing.id, keyed.id);
    assert!(taken.is_empty());
    assert_eq!(claim_ids(&store, 10).await.len(), 2, "both still queued");
}
