//! The resolving phase: executions stored before their `<AUTO>` tags are
//! answered, leased to one process at a time, then planned or failed.

use crate::support::*;
use orchestrator_store::Resolved;

orchestrator_store::for_each_backend!(
    a_resolving_execution_is_leased_once_then_planned,
    a_resolving_lease_is_fenced_and_taken_over_when_it_expires,
    cancelling_or_failing_a_resolving_execution_ends_it_and_recovery_asks_again,
);

/// A resolving execution of `CHAIN`: stored without steps.
fn resolving() -> NewExecution {
    let mut new = new_execution(CHAIN, None, None);
    new.steps = Vec::new();
    new.plan = json!({});
    new.resolving = true;
    new
}

fn planned() -> Resolved {
    let full = new_execution(CHAIN, None, None);
    Resolved::Planned {
        pipeline_id: "chain".into(),
        pipeline_name: "chain answered".into(),
        plan: full.plan,
        inputs: json!({"answered": true}),
        steps: full.steps,
    }
}

async fn a_resolving_execution_is_leased_once_then_planned(store: Arc<dyn Store>) {
    let new = resolving();
    let (created, inserted) = store.create_execution(new.clone()).await.expect("create");
    assert!(inserted);
    assert_eq!(created.status, ExecutionStatus::Resolving);
    assert!(store.list_steps(&new.id).await.expect("steps").is_empty());
    // No step is claimable while it resolves.
    assert!(claim_ids(&store, 10).await.is_empty());

    let jobs = store.claim_resolving("w1", 4, 30_000).await.expect("claim");
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].execution.id, new.id);
    assert_eq!(jobs[0].execution.source, new.source);
    assert_eq!(jobs[0].attempts, 1);
    // Leased: nobody else gets it.
    assert!(
        store
            .claim_resolving("w2", 4, 30_000)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .renew_resolving(&new.id, &jobs[0].lease_token, 30_000)
            .await
            .expect("renew")
    );

    let done = store
        .finish_resolving(&new.id, &jobs[0].lease_token, planned())
        .await
        .expect("finish");
    assert!(done);
    let after = execution(&store, &new.id).await;
    assert_eq!(after.status, ExecutionStatus::Queued);
    assert_eq!(after.pipeline_name, "chain answered");
    assert_eq!(after.inputs, json!({"answered": true}));
    assert_eq!(after.plan["pipeline"]["name"], "chain");
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps.len(), 3);
    // Its first step runs like any other.
    let claimed = claim_ids(&store, 10).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step_id, "a");
    // The lease is gone with the phase: a second finish writes nothing.
    assert!(
        !store
            .finish_resolving(
                &new.id,
                &jobs[0].lease_token,
                Resolved::Failed("late".into())
            )
            .await
            .expect("finish again")
    );
    let kinds: Vec<String> = store
        .list_events(&new.id, 0, 100)
        .await
        .expect("events")
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds[..2], ["execution.resolving", "execution.queued"]);
}

async fn a_resolving_lease_is_fenced_and_taken_over_when_it_expires(store: Arc<dyn Store>) {
    let new = resolving();
    store.create_execution(new.clone()).await.expect("create");
    // A lease that has already run out: the process holding it died.
    let first = store.claim_resolving("w1", 1, -1).await.expect("claim");
    assert_eq!(first.len(), 1);
    let second = store
        .claim_resolving("w2", 1, 30_000)
        .await
        .expect("claim again");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].attempts, 2);
    assert_ne!(first[0].lease_token, second[0].lease_token);
    // The first holder can neither renew nor finish.
    assert!(
        !store
            .renew_resolving(&new.id, &first[0].lease_token, 30_000)
            .await
            .expect("renew")
    );
    assert!(
        !store
            .finish_resolving(
                &new.id,
                &first[0].lease_token,
                Resolved::Failed("stale".into())
            )
            .await
            .expect("finish")
    );
    assert_eq!(
        execution(&store, &new.id).await.status,
        ExecutionStatus::Resolving
    );
    // Handed back at shutdown: due again at once.
    store
        .release_resolving(&new.id, &second[0].lease_token)
        .await
        .expect("release");
    let third = store.claim_resolving("w3", 1, 30_000).await.expect("claim");
    assert_eq!(third.len(), 1);
    assert_eq!(third[0].attempts, 3);
}

async fn cancelling_or_failing_a_resolving_execution_ends_it_and_recovery_asks_again(
    store: Arc<dyn Store>,
) {
    // Cancelled while a process asks the models: its lease ends with it.
    let new = resolving();
    store.create_execution(new.clone()).await.expect("create");
    let jobs = store.claim_resolving("w1", 1, 30_000).await.expect("claim");
    let cancelled = store
        .cancel_execution(&new.id)
        .await
        .expect("cancel")
        .expect("exists");
    assert_eq!(cancelled.status, ExecutionStatus::Cancelled);
    assert!(
        !store
            .renew_resolving(&new.id, &jobs[0].lease_token, 30_000)
            .await
            .expect("renew")
    );
    assert!(
        !store
            .finish_resolving(&new.id, &jobs[0].lease_token, planned())
            .await
            .expect("finish")
    );
    assert!(store.list_steps(&new.id).await.expect("steps").is_empty());

    // A tag that cannot be answered fails the execution with its reason.
    let other = resolving();
    store.create_execution(other.clone()).await.expect("create");
    let jobs = store.claim_resolving("w1", 1, 30_000).await.expect("claim");
    assert_eq!(jobs.len(), 1);
    assert!(
        store
            .finish_resolving(
                &other.id,
                &jobs[0].lease_token,
                Resolved::Failed("line 4: <AUTO> tag 'x' could not be answered".into()),
            )
            .await
            .expect("finish")
    );
    let failed = execution(&store, &other.id).await;
    assert_eq!(failed.status, ExecutionStatus::Failed);
    assert_eq!(
        failed.error.as_deref(),
        Some("line 4: <AUTO> tag 'x' could not be answered")
    );

    // Recovering either asks the models again.
    for id in [&new.id, &other.id] {
        let rerun = store
            .recover_execution(id, None)
            .await
            .expect("recover")
            .expect("exists");
        assert!(rerun.is_empty());
        let again = execution(&store, id).await;
        assert_eq!(again.status, ExecutionStatus::Resolving);
        assert_eq!(again.error, None);
    }
    let jobs = store.claim_resolving("w2", 4, 30_000).await.expect("claim");
    assert_eq!(jobs.len(), 2);
}
