//! Child executions: created with their parent's step waiting in one
//! commit, the step woken with how the child ended, a tree's step budget.

use crate::support::*;
use orchestrator_store::{ChildWait, ParentLink};

orchestrator_store::for_each_backend!(
    a_child_wakes_its_waiting_parent_step_when_it_ends,
    a_child_beyond_the_trees_step_budget_is_refused_and_changes_nothing,
);

fn child_of(parent: &str, step: &ClaimedStep, wait: bool) -> NewExecution {
    let mut child = new_execution(
        "name: leaf\nsteps:\n  - id: x\n    tool: echo\n",
        None,
        None,
    );
    child.parent = Some(ParentLink {
        execution_id: parent.to_string(),
        step_id: step.step_id.clone(),
        root_execution_id: parent.to_string(),
        depth: 1,
        start_after: None,
        wait: wait.then(|| ChildWait {
            lease_token: step.lease_token.clone(),
            request: json!({"execution_id": child.id, "tries": 1}),
            parameters: None,
        }),
    });
    child
}

async fn a_child_wakes_its_waiting_parent_step_when_it_ends(store: Arc<dyn Store>) {
    let parent = new_execution(CHAIN, None, None);
    store
        .create_execution(parent.clone())
        .await
        .expect("parent");
    let a = claim_ids(&store, 1).await.remove(0);
    let child = child_of(&parent.id, &a, true);
    let (created, _) = store.create_execution(child.clone()).await.expect("child");
    assert_eq!(
        created.parent_execution_id.as_deref(),
        Some(parent.id.as_str())
    );
    assert_eq!(created.parent_step_id.as_deref(), Some("a"));
    assert_eq!(created.depth, 1);
    let steps = store.list_steps(&parent.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Waiting);
    let listed = store
        .list_executions(&ExecutionFilter {
            parent: Some(parent.id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("children");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, child.id);

    // The child runs and ends: the parent's step is queued with the outcome.
    let x = claim_ids(&store, 1).await.remove(0);
    assert_eq!(x.execution_id, child.id);
    finish(&store, &x, StepStatus::Succeeded, json!("done")).await;
    assert_eq!(
        execution(&store, &child.id).await.status,
        ExecutionStatus::Succeeded
    );
    let wait = store
        .get_wait(&parent.id, "a")
        .await
        .expect("get")
        .expect("wait");
    assert_eq!(
        wait.answer.as_ref().map(|a| a["status"].clone()),
        Some(json!("succeeded"))
    );
    assert_eq!(
        wait.answer.as_ref().map(|a| a["execution_id"].clone()),
        Some(json!(child.id))
    );
    let again = claim_ids(&store, 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].execution_id.as_str(), again[0].step_id.as_str()),
        (parent.id.as_str(), "a")
    );

    // A lease no longer held creates no child.
    let stale = child_of(&parent.id, &a, true);
    let err = store
        .create_execution(stale.clone())
        .await
        .expect_err("fenced");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    assert!(store.get_execution(&stale.id).await.expect("get").is_none());
}

async fn a_child_beyond_the_trees_step_budget_is_refused_and_changes_nothing(
    store: Arc<dyn Store>,
) {
    let parent = new_execution(CHAIN, None, None);
    store
        .create_execution(parent.clone())
        .await
        .expect("parent");
    let a = claim_ids(&store, 1).await.remove(0);
    let mut child = child_of(&parent.id, &a, true);
    let one = child.steps[0].clone();
    child.steps = (0..10_000)
        .map(|i| {
            let mut s = one.clone();
            s.planned.id = format!("x{i}");
            s
        })
        .collect();
    let err = store
        .create_execution(child.clone())
        .await
        .expect_err("too many");
    assert!(matches!(err, StoreError::LimitExceeded(_)), "{err:?}");
    assert!(store.get_execution(&child.id).await.expect("get").is_none());
    let steps = store.list_steps(&parent.id).await.expect("steps");
    assert_eq!(
        steps[0].status,
        StepStatus::Running,
        "the parent's step did not wait"
    );
}
