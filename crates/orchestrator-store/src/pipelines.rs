//! Pipelines stored by name, each `PUT` a new version.

use crate::dialect::{Dialect, Tx, conn};

/// One stored version of a pipeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct PipelineRecord {
    pub name: String,
    pub version: i64,
    /// The text as sent (YAML, or JSON for a pipeline sent as an object).
    pub source: String,
    /// `yaml` or `json`.
    pub format: String,
    pub created_at: i64,
    /// The name of the token that stored it.
    pub created_by: Option<String>,
}

/// A stored pipeline: its newest version.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct PipelineSummary {
    pub name: String,
    pub latest_version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

const NEXT_VERSION: &str = "SELECT COALESCE(MAX(version), 0) + 1 FROM pipelines WHERE name = $1";

const INSERT: &str = "INSERT INTO pipelines (name, version, source, format, created_at, created_by) \
    VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, version) DO NOTHING";

const SELECT_VERSION: &str = "SELECT name, version, source, format, created_at, created_by \
    FROM pipelines WHERE name = $1 AND version = $2";

const SELECT_LATEST: &str = "SELECT name, version, source, format, created_at, created_by \
    FROM pipelines WHERE name = $1 ORDER BY version DESC LIMIT 1";

const LIST: &str = "SELECT name, MAX(version) AS latest_version, MIN(created_at) AS created_at, \
    MAX(created_at) AS updated_at FROM pipelines GROUP BY name ORDER BY name";

pub(crate) async fn put_pipeline<D: Dialect>(
    s: &D,
    name: &str,
    source: &str,
    format: &str,
    created_by: Option<&str>,
) -> crate::Result<PipelineRecord> {
    // Two processes storing the same name at once: the second one's
    // version is taken, and it tries the next.
    for _ in 0..5 {
        let now = crate::now_ms();
        let mut tx = Tx::begin(s).await?;
        let version: i64 = D::q(NEXT_VERSION).bind(name).scalar(&mut tx).await?;
        let inserted = D::q(INSERT)
            .bind(name)
            .bind(version)
            .bind(source)
            .bind(format)
            .bind(now)
            .bind(created_by)
            .execute(&mut tx)
            .await?;
        if inserted == 1 {
            tx.commit().await?;
            return Ok(PipelineRecord {
                name: name.to_string(),
                version,
                source: source.to_string(),
                format: format.to_string(),
                created_at: now,
                created_by: created_by.map(str::to_string),
            });
        }
        tx.rollback().await?;
    }
    Err(crate::StoreError::Conflict(format!(
        "pipeline '{name}' is being stored by others at the same time; try again"
    )))
}

pub(crate) async fn get_pipeline<D: Dialect>(
    s: &D,
    name: &str,
    version: Option<i64>,
) -> crate::Result<Option<PipelineRecord>> {
    let mut c = conn(s).await?;
    Ok(match version {
        Some(v) => {
            D::q(SELECT_VERSION)
                .bind(name)
                .bind(v)
                .fetch_optional(&mut c)
                .await?
        }
        None => {
            D::q(SELECT_LATEST)
                .bind(name)
                .fetch_optional(&mut c)
                .await?
        }
    })
}

pub(crate) async fn list_pipelines<D: Dialect>(s: &D) -> crate::Result<Vec<PipelineSummary>> {
    D::q(LIST).fetch_all(&mut *conn(s).await?).await
}
