//! Both backends have the same migrations, by version and name.

fn versions(backend: &str) -> Vec<String> {
    let dir = format!("{}/../../migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    names
}

#[test]
fn sqlite_and_postgres_migrations_match() {
    let sqlite = versions("sqlite");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, versions("postgres"));
}

/// Migrates to version `upto` only, writes an execution the way that schema
/// stored it, then opens the store (running the rest): nothing is lost.
async fn upgrade_keeps_an_execution(url: &str, backend: &str) {
    use sqlx::migrate::Migrator;
    let dir = format!("{}/../../migrations/{backend}", env!("CARGO_MANIFEST_DIR"));
    let mut migrator = Migrator::new(std::path::Path::new(&dir))
        .await
        .expect("migrations");
    migrator.migrations = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= 10)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    let insert = "INSERT INTO executions (id, pipeline_id, pipeline_name, status, source, plan, inputs, options, \
        created_at, updated_at) VALUES ('e1', 'p', 'p', 'succeeded', 'name: p', '{\"steps\": []}', '{}', '{}', 1, 1)";
    if backend == "sqlite" {
        let pool = sqlx::SqlitePool::connect(&format!("{url}?mode=rwc"))
            .await
            .expect("pool");
        migrator.run(&pool).await.expect("to version 10");
        sqlx::query(insert).execute(&pool).await.expect("insert");
        pool.close().await;
    } else {
        let pool = sqlx::PgPool::connect(url).await.expect("pool");
        migrator.run(&pool).await.expect("to version 10");
        sqlx::query(insert).execute(&pool).await.expect("insert");
        pool.close().await;
    }
    let store = orchestrator_store::connect(url).await.expect("upgraded");
    let e = store
        .get_execution("e1")
        .await
        .expect("read")
        .expect("kept");
    assert_eq!(e.source, "name: p");
    assert_eq!(e.plan, serde_json::json!({"steps": []}));
}

#[tokio::test]
async fn sqlite_upgrade_keeps_sources_and_plans() {
    let dir = orchestrator_store::testing::TempDir::new("orch-migrate");
    upgrade_keeps_an_execution(&orchestrator_store::testing::sqlite_url(&dir), "sqlite").await;
}

#[tokio::test]
async fn postgres_upgrade_keeps_sources_and_plans() {
    if let Some(url) = orchestrator_store::testing::postgres_url().await {
        upgrade_keeps_an_execution(&url, "postgres").await;
    }
}
