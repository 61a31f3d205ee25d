//! Deleting executions: a tree at once, never while it runs; retention by
//! age and count; one process at a time.

use crate::support::*;
use orchestrator_store::{ChildWait, Deleted, LogLine, LogWrite, ParentLink, PurgeRule};

orchestrator_store::for_each_backend!(
    an_execution_goes_with_its_children_and_everything_they_own,
    retention_deletes_old_roots_and_keeps_the_newest,
    a_named_lease_has_one_holder_at_a_time,
);

const ONE: &str = "name: one\nsteps:\n  - id: a\n    tool: echo\n";

async fn an_execution_goes_with_its_children_and_everything_they_own(store: Arc<dyn Store>) {
    let parent = new_execution(ONE, None, None);
    store
        .create_execution(parent.clone())
        .await
        .expect("parent");
    let a = claim_ids(&store, 1).await.remove(0);
    let mut child = new_execution(ONE, None, None);
    child.parent = Some(ParentLink {
        execution_id: parent.id.clone(),
        step_id: "a".into(),
        root_execution_id: parent.id.clone(),
        depth: 1,
        start_after: None,
        wait: None::<ChildWait>,
    });
    store.create_execution(child.clone()).await.expect("child");
    finish(&store, &a, StepStatus::Succeeded, json!("ok")).await;
    assert_eq!(
        execution(&store, &parent.id).await.status,
        ExecutionStatus::Succeeded
    );
    // The child still runs: nothing goes.
    match store.delete_execution(&parent.id).await.expect("delete") {
        Deleted::Unfinished(open) => {
            assert_eq!(open, vec![(child.id.clone(), ExecutionStatus::Queued)]);
        }
        other => panic!("expected Unfinished, got {other:?}"),
    }
    assert!(
        store
            .get_execution(&parent.id)
            .await
            .expect("get")
            .is_some()
    );
    let x = claim_ids(&store, 1).await.remove(0);
    store
        .append_step_log(
            &child.id,
            "a",
            &LogWrite {
                lines: vec![LogLine {
                    seq: 1,
                    attempt: 1,
                    stream: "stdout".into(),
                    at: now_ms(),
                    line: "hello".into(),
                }],
                ..Default::default()
            },
        )
        .await
        .expect("log");
    finish(&store, &x, StepStatus::Failed, json!(null)).await;
    store
        .memory_put(&parent.id, "ns", "k", &json!(1), None)
        .await
        .expect("memory");
    match store.delete_execution(&parent.id).await.expect("delete") {
        Deleted::Done(ids) => assert_eq!(ids, vec![parent.id.clone(), child.id.clone()]),
        other => panic!("expected Done, got {other:?}"),
    }
    for id in [&parent.id, &child.id] {
        assert!(store.get_execution(id).await.expect("get").is_none());
        assert!(store.list_steps(id).await.expect("steps").is_empty());
        assert!(
            store
                .list_events(id, 0, 100)
                .await
                .expect("events")
                .is_empty()
        );
    }
    assert!(
        store
            .step_log(&child.id, "a", 0, 10)
            .await
            .expect("log")
            .is_empty()
    );
    assert!(
        store
            .memory_list(&parent.id, "ns")
            .await
            .expect("memory")
            .is_empty()
    );
    assert_eq!(
        store.delete_execution(&parent.id).await.expect("again"),
        Deleted::NotFound
    );
}

async fn retention_deletes_old_roots_and_keeps_the_newest(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let e = new_execution(ONE, None, None);
        store.create_execution(e.clone()).await.expect("create");
        let s = claim_ids(&store, 1).await.remove(0);
        finish(&store, &s, StepStatus::Succeeded, json!("ok")).await;
        ids.push(e.id);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let rule = |before: i64, keep: Option<i64>| PurgeRule {
        status: ExecutionStatus::Succeeded,
        finished_before: Some(before),
        keep_newest: keep,
    };
    // None is old enough.
    assert_eq!(
        store
            .purge_executions(&rule(now_ms() - 3_600_000, None), 100)
            .await
            .expect("purge"),
        0
    );
    // Failed ones are another rule's.
    let failed = PurgeRule {
        status: ExecutionStatus::Failed,
        finished_before: None,
        keep_newest: None,
    };
    assert_eq!(
        store.purge_executions(&failed, 100).await.expect("purge"),
        0
    );
    // All old enough, the newest kept.
    assert_eq!(
        store
            .purge_executions(&rule(now_ms() + 1, Some(1)), 100)
            .await
            .expect("purge"),
        2
    );
    for (i, id) in ids.iter().enumerate() {
        let kept = store.get_execution(id).await.expect("get").is_some();
        assert_eq!(kept, i == 2, "execution {i}");
    }
}

async fn a_named_lease_has_one_holder_at_a_time(store: Arc<dyn Store>) {
    let later = now_ms() + 60_000;
    assert!(store.take_lease("retention", "a", later).await.expect("a"));
    assert!(!store.take_lease("retention", "b", later).await.expect("b"));
    assert!(
        store
            .take_lease("retention", "a", later + 1)
            .await
            .expect("renew")
    );
    assert!(
        store
            .take_lease("other", "b", later)
            .await
            .expect("other name")
    );
    // Expired: taken over.
    assert!(
        store
            .take_lease("retention", "a", now_ms() - 1)
            .await
            .expect("expire")
    );
    assert!(
        store
            .take_lease("retention", "b", later)
            .await
            .expect("take over")
    );
    assert!(
        !store
            .take_lease("retention", "a", later)
            .await
            .expect("a again")
    );
}
