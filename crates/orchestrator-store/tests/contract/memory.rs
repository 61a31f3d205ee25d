//! Memory entries: scoped JSON values with expiry, changed atomically.

use crate::support::*;

orchestrator_store::for_each_backend!(
    memory_entries_are_scoped_listed_and_cleared,
    memory_updates_from_many_tasks_lose_nothing,
    expired_memory_entries_are_gone,
);

async fn memory_entries_are_scoped_listed_and_cleared(store: Arc<dyn Store>) {
    store
        .memory_put("tree-a", "ctx", "n", &json!(3), None)
        .await
        .expect("put");
    store
        .memory_put("tree-a", "ctx", "name", &json!({"x": [1, "two"]}), None)
        .await
        .expect("put");
    store
        .memory_put("tree-b", "ctx", "n", &json!(9), None)
        .await
        .expect("put other scope");
    let got = store.memory_get("tree-a", "ctx", "n").await.expect("get");
    assert_eq!(got.map(|e| e.value), Some(json!(3)));
    let keys: Vec<_> = store
        .memory_list("tree-a", "ctx")
        .await
        .expect("list")
        .into_iter()
        .map(|e| (e.key, e.value))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("n".to_string(), json!(3)),
            ("name".to_string(), json!({"x": [1, "two"]}))
        ]
    );
    // Overwrite keeps one entry.
    store
        .memory_put("tree-a", "ctx", "n", &json!("three"), None)
        .await
        .expect("overwrite");
    assert_eq!(
        store
            .memory_get("tree-a", "ctx", "n")
            .await
            .expect("get")
            .map(|e| e.value),
        Some(json!("three"))
    );
    assert_eq!(
        store
            .memory_clear("tree-a", "ctx", Some("n"))
            .await
            .expect("clear"),
        1
    );
    assert_eq!(
        store
            .memory_clear("tree-a", "ctx", None)
            .await
            .expect("clear"),
        1
    );
    assert!(
        store
            .memory_list("tree-a", "ctx")
            .await
            .expect("list")
            .is_empty()
    );
    // The other scope is untouched.
    assert_eq!(
        store
            .memory_get("tree-b", "ctx", "n")
            .await
            .expect("get")
            .map(|e| e.value),
        Some(json!(9))
    );
}

async fn memory_updates_from_many_tasks_lose_nothing(store: Arc<dyn Store>) {
    let add = |v: Option<&Value>| -> Result<Value, String> {
        match v {
            None => Ok(json!(1)),
            Some(Value::Number(n)) => Ok(json!(n.as_i64().unwrap_or(0) + 1)),
            Some(other) => Err(format!("not a number: {other}")),
        }
    };
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                store
                    .memory_update("tree", "ctx", "count", &add)
                    .await
                    .expect("update")
                    .expect("a number");
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(
        store
            .memory_get("tree", "ctx", "count")
            .await
            .expect("get")
            .map(|e| e.value),
        Some(json!(80))
    );
    // A refusal changes nothing.
    store
        .memory_put("tree", "ctx", "word", &json!("hi"), None)
        .await
        .expect("put");
    let refused = store
        .memory_update("tree", "ctx", "word", &add)
        .await
        .expect("update");
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(
        store
            .memory_get("tree", "ctx", "word")
            .await
            .expect("get")
            .map(|e| e.value),
        Some(json!("hi"))
    );
}

async fn expired_memory_entries_are_gone(store: Arc<dyn Store>) {
    let past = orchestrator_store::now_ms() - 1;
    store
        .memory_put("s", "ns", "old", &json!(1), Some(past))
        .await
        .expect("put");
    store
        .memory_put("s", "ns", "kept", &json!(2), Some(past + 3_600_000))
        .await
        .expect("put");
    assert!(
        store
            .memory_get("s", "ns", "old")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(store.memory_list("s", "ns").await.expect("list").len(), 1);
    // Updating an expired entry starts from nothing and drops the expiry.
    let v = store
        .memory_update("s", "ns", "old", &|v: Option<&Value>| {
            Ok(json!(v.is_none()))
        })
        .await
        .expect("update");
    assert_eq!(v, Ok(json!(true)));
    let e = store
        .memory_get("s", "ns", "old")
        .await
        .expect("get")
        .expect("live again");
    assert_eq!(e.expires_at, None);
    store
        .memory_put("s", "ns", "gone", &json!(3), Some(past))
        .await
        .expect("put");
    assert_eq!(store.purge_expired_memory().await.expect("purge"), 1);
}
