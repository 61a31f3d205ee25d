//! The events of an execution, numbered per execution and written in the
//! transaction of the change they describe (triggers feed the webhook outbox).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::dialect::{Dialect, Tx, conn};
use crate::rows::EventRow;
use crate::sql::Values;

/// One state change of an execution or one of its steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    /// Numbered from 1 per execution, without gaps.
    pub seq: i64,
    /// `execution.queued`, `execution.started`, `execution.succeeded`, …,
    /// `step.ready`, `step.started`, `step.succeeded`, `step.retrying`, …
    pub kind: String,
    pub step_id: Option<String>,
    pub data: Value,
    /// Unix milliseconds.
    pub created_at: i64,
}

/// Events numbered by the caller, who holds the execution's row.
const INSERT_EVENTS_PREFIX: &str =
    "INSERT INTO events (execution_id, seq, kind, family, step_id, data, created_at) ";

const SELECT_EVENTS: &str = "SELECT seq, kind, step_id, data, created_at FROM events \
    WHERE execution_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// Records an event of the execution in the transaction of the
/// change it describes.
pub(crate) async fn emit<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    kind: &str,
    step_id: Option<&str>,
    data: serde_json::Value,
    now: i64,
) -> crate::Result<()> {
    // One statement: the number comes from the execution's row
    // (locked on PostgreSQL); triggers move the counter and write
    // the webhook outbox.
    let family = format!("{}.*", kind.split('.').next().unwrap_or(kind));
    D::q(D::INSERT_EVENT)
        .bind(execution_id)
        .bind(kind)
        .bind(family)
        .bind(step_id)
        .json(&data)
        .bind(now)
        .execute(tx)
        .await?;
    Ok(())
}

/// Step events of one execution: one statement for one event,
/// two for many (the execution's row locked, then all of them).
pub(crate) async fn emit_steps<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    mut events: Vec<(String, String, serde_json::Value)>,
    now: i64,
) -> crate::Result<()> {
    if events.len() <= 1 {
        if let Some((kind, step_id, data)) = events.pop() {
            emit(tx, execution_id, &kind, Some(&step_id), data, now).await?;
        }
        return Ok(());
    }
    let last: i64 = D::q(D::LAST_EVENT_SEQ)
        .bind(execution_id)
        .scalar(tx)
        .await?;
    insert_events(tx, execution_id, last + 1, events, now).await
}

/// Inserts events of one execution numbered from `first_seq` on, in
/// one statement; the caller holds the execution's row.
pub(crate) async fn insert_events<D: Dialect>(
    tx: &mut Tx<'_, D>,
    execution_id: &str,
    first_seq: i64,
    events: Vec<(String, String, serde_json::Value)>,
    now: i64,
) -> crate::Result<()> {
    // Rows per statement: far below either backend's limit on
    // bound values.
    const ROWS: usize = 500;
    let mut events = events.into_iter().enumerate().peekable();
    while events.peek().is_some() {
        let mut insert = Values::<D::DB>::new(INSERT_EVENTS_PREFIX);
        for (n, (kind, step_id, data)) in events.by_ref().take(ROWS) {
            let family = format!("{}.*", kind.split('.').next().unwrap_or(&kind));
            insert
                .row()
                .bind(execution_id.to_string())
                .bind(first_seq + n as i64)
                .bind(kind)
                .bind(family)
                .bind(step_id)
                .json(&data)
                .bind(now);
        }
        insert.build().execute(tx).await?;
    }
    Ok(())
}

pub(crate) async fn list_events<D: Dialect>(
    s: &D,
    execution_id: &str,
    after_seq: i64,
    limit: u32,
) -> crate::Result<Vec<crate::EventRecord>> {
    let rows: Vec<EventRow> = D::q(SELECT_EVENTS)
        .bind(execution_id)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&mut *conn(s).await?)
        .await?;
    Ok(rows.into_iter().map(crate::EventRecord::from).collect())
}
