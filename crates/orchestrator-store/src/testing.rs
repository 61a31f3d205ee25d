//! Fresh databases for tests: a new SQLite file, or a new PostgreSQL database
//! on the server named by `ORCHESTRATOR_TEST_POSTGRES_URL`.
//!
//! When that variable is unset, PostgreSQL tests are skipped, unless
//! `ORCHESTRATOR_REQUIRE_POSTGRES=1` (as in CI), where they fail instead.

use std::path::PathBuf;
use std::sync::Arc;

use sqlx::Connection;

use crate::Store;

/// A folder removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// URL of a new, empty SQLite database in `dir`.
pub fn sqlite_url(dir: &TempDir) -> String {
    format!("sqlite://{}", dir.path().join("orchestrator.db").display())
}

/// URL of a new, empty PostgreSQL database, or `None` when PostgreSQL tests
/// are not configured (panics when they are required).
pub async fn postgres_url() -> Option<String> {
    let admin = match std::env::var("ORCHESTRATOR_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            if std::env::var("ORCHESTRATOR_REQUIRE_POSTGRES").as_deref() == Ok("1") {
                panic!(
                    "ORCHESTRATOR_REQUIRE_POSTGRES=1 but ORCHESTRATOR_TEST_POSTGRES_URL is not set"
                );
            }
            eprintln!("skipping PostgreSQL test: ORCHESTRATOR_TEST_POSTGRES_URL is not set");
            return None;
        }
    };
    let name = format!(
        "orch_test_{}_{}",
        crate::now_ms(),
        uuid::Uuid::new_v4().simple()
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot reach PostgreSQL at {}: {e}",
                crate::redact_url(&admin)
            )
        });
    sweep_old_databases(&mut conn).await;
    // The name is generated here (hex only); identifiers cannot be bound.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("create database: {e}"));
    let _ = conn.close().await;
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// Test databases are never dropped by their tests (a pool may still be
/// open when a test ends). Once per process, those made more than an hour
/// ago (their name says when) are dropped, so a long-lived development
/// server does not fill its disk. Ones still in use refuse, and stay.
async fn sweep_old_databases(conn: &mut sqlx::PgConnection) {
    static SWEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if SWEPT.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    let cutoff = crate::now_ms() - 3600 * 1000;
    let names: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'orch\\_test\\_%'")
            .fetch_all(&mut *conn)
            .await
            .unwrap_or_default();
    for name in names {
        let made = name
            .strip_prefix("orch_test_")
            .and_then(|rest| rest.split_once('_'))
            .and_then(|(ms, _)| ms.parse::<i64>().ok());
        // Names without a time are from before names had one: old.
        if made.is_some_and(|ms| ms > cutoff) {
            continue;
        }
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            continue;
        }
        // Checked above: letters, digits and underscores only.
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name}"
        )))
        .execute(&mut *conn)
        .await;
    }
}

/// Opens the store at `url` (for [`for_each_backend!`]).
pub async fn open_store(url: String) -> Arc<dyn Store> {
    crate::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {}: {e:?}", crate::redact_url(&url)))
}

/// Runs each named `async fn(T)` as two tests, one on a fresh SQLite
/// database and one on a fresh PostgreSQL database (see [`postgres_url`]).
/// `T` is what `with` makes of the database's URL: by default the store
/// itself ([`open_store`]); the server's tests pass a function that starts a
/// server on it.
///
/// ```ignore
/// orchestrator_store::for_each_backend!(creates_an_execution, claims_once);
/// orchestrator_store::for_each_backend!(with Server::start; hello_runs, lists);
/// ```
#[macro_export]
macro_rules! for_each_backend {
    (with $setup:path; $($name:ident),* $(,)?) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = $crate::testing::TempDir::new("orchestrator-test");
                    let url = $crate::testing::sqlite_url(&dir);
                    super::$name($setup(url).await).await;
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(url) = $crate::testing::postgres_url().await {
                        super::$name($setup(url).await).await;
                    }
                }
            )*
        }
    };
    ($($name:ident),* $(,)?) => {
        $crate::for_each_backend!(with $crate::testing::open_store; $($name),*);
    };
}
