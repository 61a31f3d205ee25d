//! Steps that wait for a person: asking gives up the lease, an answer (or
//! the deadline) queues the step again, once.

use crate::support::*;

orchestrator_store::for_each_backend!(
    a_waiting_step_holds_nothing_until_answered_once,
    a_question_past_its_deadline_queues_its_step_again,
);

const ONE: &str = "name: one\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n";

async fn a_waiting_step_holds_nothing_until_answered_once(store: Arc<dyn Store>) {
    let new = new_execution(ONE, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 1).await.remove(0);
    let request = json!({"prompt": "ok?"});
    store
        .wait_step(
            &claimed,
            "user-prompt",
            &request,
            Some(&json!({"p": 1})),
            None,
        )
        .await
        .expect("wait");
    // Fenced: the lease is gone, so asking again with it is refused.
    let err = store
        .wait_step(&claimed, "user-prompt", &request, None, None)
        .await
        .expect_err("lease gone");
    assert!(matches!(err, StoreError::LeaseLost { .. }), "{err:?}");
    let steps = store.list_steps(&new.id).await.expect("steps");
    assert_eq!(steps[0].status, StepStatus::Waiting);
    assert_eq!(
        execution(&store, &new.id).await.status,
        ExecutionStatus::Running
    );
    assert!(claim_ids(&store, 10).await.is_empty(), "nothing to run");
    let open = store.list_waits(Some(&new.id), 10).await.expect("waits");
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].request, request);
    assert_eq!(store.list_waits(None, 10).await.expect("all").len(), 1);

    let answered = store
        .answer_step(&new.id, "a", &json!({"value": "yes"}), Some("ops"))
        .await
        .expect("answer")
        .expect("exists");
    assert_eq!(answered.answered_by.as_deref(), Some("ops"));
    let again = store
        .answer_step(&new.id, "a", &json!({"value": "no"}), None)
        .await
        .expect_err("answered already");
    assert!(matches!(again, StoreError::Conflict(_)), "{again:?}");
    assert!(
        store
            .answer_step("no-such-execution", "a", &json!({}), None)
            .await
            .expect("answer")
            .is_none()
    );
    assert!(store.list_waits(None, 10).await.expect("all").is_empty());
    // Queued again, its asking attempt not counted; it sees the answer.
    let back = claim_ids(&store, 10).await;
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].attempt, 1);
    let wait = store
        .get_wait(&new.id, "a")
        .await
        .expect("get")
        .expect("asked");
    assert_eq!(wait.answer, Some(json!({"value": "yes"})));
    finish(&store, &back[0], StepStatus::Succeeded, json!("yes")).await;
    assert_eq!(claim_ids(&store, 10).await[0].step_id, "b");
}

async fn a_question_past_its_deadline_queues_its_step_again(store: Arc<dyn Store>) {
    let new = new_execution(ONE, None, None);
    store.create_execution(new.clone()).await.expect("create");
    let claimed = claim_ids(&store, 1).await.remove(0);
    store
        .wait_step(
            &claimed,
            "approval-gate",
            &json!({}),
            None,
            Some(now_ms() - 1),
        )
        .await
        .expect("wait");
    assert_eq!(store.expire_waits().await.expect("expire"), 1);
    assert_eq!(store.expire_waits().await.expect("expire again"), 0);
    let wait = store
        .get_wait(&new.id, "a")
        .await
        .expect("get")
        .expect("asked");
    assert!(wait.expired && wait.answer.is_none(), "{wait:?}");
    let late = store
        .answer_step(&new.id, "a", &json!({"action": "approve"}), None)
        .await
        .expect_err("too late");
    assert!(matches!(late, StoreError::Conflict(_)), "{late:?}");
    assert_eq!(claim_ids(&store, 10).await.len(), 1);
}
