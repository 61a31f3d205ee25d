//! The model registry and model calls.

use crate::support::*;

orchestrator_store::for_each_backend!(
    models_are_registered_listed_replaced_and_deleted,
    model_calls_add_up_per_model_and_per_execution,
);

async fn models_are_registered_listed_replaced_and_deleted(store: Arc<dyn Store>) {
    let spec =
        json!({"id": "m1", "provider": "openai", "model": "gpt", "capabilities": ["generate"]});
    assert!(
        store
            .insert_model("m1", &spec, "api")
            .await
            .expect("insert")
    );
    assert!(
        !store
            .insert_model("m1", &spec, "api")
            .await
            .expect("duplicate"),
        "the id is taken"
    );
    // Creation times are in milliseconds (equal ones list by id): m0 must
    // come a millisecond later to be the newer one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .upsert_model(
            "m0",
            &json!({"id": "m0", "provider": "anthropic", "model": "claude"}),
            "file",
        )
        .await
        .expect("upsert");
    let replaced = json!({"id": "m1", "provider": "openai", "model": "gpt-2"});
    store
        .upsert_model("m1", &replaced, "file")
        .await
        .expect("replace");
    let models = store.list_models().await.expect("list");
    let ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["m1", "m0"], "oldest first");
    assert_eq!(
        (models[0].spec.clone(), models[0].source.as_str()),
        (replaced, "file")
    );
    assert!(store.delete_model("m1").await.expect("delete"));
    assert!(!store.delete_model("m1").await.expect("gone"));
    assert_eq!(store.list_models().await.expect("list").len(), 1);
}

async fn model_calls_add_up_per_model_and_per_execution(store: Arc<dyn Store>) {
    let call = |model: &str, step: &str, ok: bool, latency: i64, cost: f64| {
        orchestrator_store::ModelCall {
            model_id: model.into(),
            execution_id: Some("e1".into()),
            step_id: Some(step.into()),
            attempt: 1,
            started_at: now_ms(),
            latency_ms: latency,
            success: ok,
            input_tokens: 100,
            output_tokens: 20,
            cost,
            reward: if ok { 0.75 } else { 0.0 },
            error_type: (!ok).then(|| "ModelProviderError".to_string()),
        }
    };
    for c in [
        call("a", "s1", true, 100, 0.5),
        call("a", "s1", false, 300, 0.0),
        call("b", "s2", true, 50, 0.25),
        orchestrator_store::ModelCall {
            execution_id: Some("e2".into()),
            ..call("b", "s9", true, 70, 1.0)
        },
    ] {
        store.record_model_call(&c).await.expect("record");
    }
    let stats = store.model_call_stats().await.expect("stats");
    assert_eq!(stats.len(), 2);
    let a = &stats[0];
    assert_eq!(
        (
            a.model_id.as_str(),
            a.calls,
            a.successes,
            a.input_tokens,
            a.output_tokens
        ),
        ("a", 2, 1, 200, 40)
    );
    assert!((a.cost - 0.5).abs() < 1e-9 && (a.reward_sum - 0.75).abs() < 1e-9);
    let mut lat = a.recent_latencies_ms.clone();
    lat.sort_unstable();
    assert_eq!(lat, [100, 300]);
    let usage = store.execution_usage("e1").await.expect("usage");
    assert_eq!(usage.len(), 2);
    assert_eq!(
        (
            usage[0].step_id.as_str(),
            usage[0].model_id.as_str(),
            usage[0].calls
        ),
        ("s1", "a", 2)
    );
    assert!((usage[1].cost - 0.25).abs() < 1e-9);
    assert!(
        store
            .execution_usage("none")
            .await
            .expect("empty")
            .is_empty()
    );
}
