//! API tokens.

use crate::support::*;

orchestrator_store::for_each_backend!(tokens_are_stored_hashed_listed_touched_and_revoked,);

async fn tokens_are_stored_hashed_listed_touched_and_revoked(store: Arc<dyn Store>) {
    let token = |id: &str, scope: &str| orchestrator_store::TokenRecord {
        id: id.to_string(),
        name: format!("{id}-name"),
        scope: scope.to_string(),
        hash: format!("hash-of-{id}"),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    };
    store.create_token(&token("t1", "read")).await.expect("t1");
    store.create_token(&token("t2", "admin")).await.expect("t2");
    let got = store.get_token("t1").await.expect("get").expect("t1");
    assert_eq!(
        (got.scope.as_str(), got.hash.as_str()),
        ("read", "hash-of-t1")
    );
    assert!(store.get_token("nope").await.expect("get").is_none());
    let listed: Vec<String> = store
        .list_tokens()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(listed, vec!["t1", "t2"]);
    let now = now_ms();
    store.touch_token("t1", now).await.expect("touch");
    let touched = store.get_token("t1").await.expect("get").expect("t1");
    assert!(touched.last_used_at.is_some_and(|t| t >= now - 60_000));
    assert!(store.revoke_token("t1", now).await.expect("revoke"));
    assert!(
        !store.revoke_token("t1", now).await.expect("again"),
        "already revoked"
    );
    assert!(!store.revoke_token("nope", now).await.expect("unknown"));
    let revoked = store.get_token("t1").await.expect("get").expect("kept");
    assert_eq!(revoked.revoked_at, Some(now));

    // Active executions are counted per token.
    let mut mine = new_execution(CHAIN, None, None);
    mine.token_id = Some("t2".into());
    store.create_execution(mine).await.expect("create");
    store
        .create_execution(new_execution(CHAIN, None, None))
        .await
        .expect("create");
    assert_eq!(
        store.active_executions_of_token("t2").await.expect("count"),
        1
    );
    assert_eq!(
        store.active_executions_of_token("t1").await.expect("count"),
        0
    );
}
