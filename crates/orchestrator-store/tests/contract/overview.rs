//! The overview counts.

use crate::support::*;

orchestrator_store::for_each_backend!(the_overview_counts_executions_steps_and_the_queue,);

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
