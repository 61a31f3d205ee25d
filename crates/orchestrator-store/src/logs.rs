//! Step logs: the lines a step's command or tool wrote, numbered per step.
//! One writer per step attempt (the engine's) appends them in batches and
//! keeps them within its bound by dropping lines between head and tail.

use crate::dialect::{Dialect, Tx, conn};
use crate::sql::Values;

/// One stored line.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct LogLine {
    /// Numbered from 1 per step, across its attempts.
    pub seq: i64,
    pub attempt: i64,
    /// `stdout`, `stderr`, or `log` (the tool's or the engine's own lines).
    pub stream: String,
    /// Unix ms when the line was written.
    pub at: i64,
    pub line: String,
}

/// One batch of a writer: lines to add, lines to drop (an inclusive range
/// of numbers) and the marker line to (re)write.
#[derive(Debug, Clone, Default)]
pub struct LogWrite {
    pub lines: Vec<LogLine>,
    pub drop: Option<(i64, i64)>,
    pub marker: Option<LogLine>,
}

const INSERT_PREFIX: &str =
    "INSERT INTO step_logs (execution_id, step_id, seq, attempt, stream, at, line) ";

const DROP_RANGE: &str =
    "DELETE FROM step_logs WHERE execution_id = $1 AND step_id = $2 AND seq BETWEEN $3 AND $4";

const UPSERT_MARKER: &str = "INSERT INTO step_logs (execution_id, step_id, seq, attempt, stream, at, line) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (execution_id, step_id, seq) DO UPDATE SET line = excluded.line, at = excluded.at";

const SELECT: &str = "SELECT seq, attempt, stream, at, line FROM step_logs \
    WHERE execution_id = $1 AND step_id = $2 AND seq > $3 ORDER BY seq LIMIT $4";

const STEP_STATUS: &str = "SELECT status FROM steps WHERE execution_id = $1 AND step_id = $2";

const LAST_SEQ: &str =
    "SELECT COALESCE(MAX(seq), 0) FROM step_logs WHERE execution_id = $1 AND step_id = $2";

/// Rows per `INSERT` (7 values each, within SQLite's bound variables).
const ROWS: usize = 500;

pub(crate) async fn append<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
    write: &LogWrite,
) -> crate::Result<()> {
    let mut tx = Tx::begin(s).await?;
    for chunk in write.lines.chunks(ROWS) {
        let mut insert = Values::<D::DB>::new(INSERT_PREFIX);
        for l in chunk {
            insert
                .row()
                .bind(execution_id)
                .bind(step_id)
                .bind(l.seq)
                .bind(l.attempt)
                .bind(l.stream.as_str())
                .bind(l.at)
                .bind(l.line.as_str());
        }
        insert.build().execute(&mut tx).await?;
    }
    if let Some((from, to)) = write.drop {
        D::q(DROP_RANGE)
            .bind(execution_id)
            .bind(step_id)
            .bind(from)
            .bind(to)
            .execute(&mut tx)
            .await?;
    }
    if let Some(m) = &write.marker {
        D::q(UPSERT_MARKER)
            .bind(execution_id)
            .bind(step_id)
            .bind(m.seq)
            .bind(m.attempt)
            .bind(m.stream.as_str())
            .bind(m.at)
            .bind(m.line.as_str())
            .execute(&mut tx)
            .await?;
    }
    tx.commit().await
}

pub(crate) async fn read<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
    after: i64,
    limit: i64,
) -> crate::Result<Vec<LogLine>> {
    D::q(SELECT)
        .bind(execution_id)
        .bind(step_id)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *conn(s).await?)
        .await
}

pub(crate) async fn last_seq<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
) -> crate::Result<i64> {
    D::q(LAST_SEQ)
        .bind(execution_id)
        .bind(step_id)
        .scalar(&mut *conn(s).await?)
        .await
}

/// A step's status, read alone (a log follower asks it often).
pub(crate) async fn step_status<D: Dialect>(
    s: &D,
    execution_id: &str,
    step_id: &str,
) -> crate::Result<Option<orchestrator_core::flow::StepStatus>> {
    let status: Option<String> = D::q(STEP_STATUS)
        .bind(execution_id)
        .bind(step_id)
        .scalar_optional(&mut *conn(s).await?)
        .await?;
    status
        .map(|s| {
            orchestrator_core::flow::StepStatus::parse(&s)
                .ok_or_else(|| crate::StoreError::Corrupt(format!("unknown step status '{s}'")))
        })
        .transpose()
}
