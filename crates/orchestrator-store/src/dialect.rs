//! What a backend supplies: its database, the statements that differ
//! between SQLite and PostgreSQL, its connection pool and its upkeep.
//!
//! Everything else (the [`crate::Store`] methods, their SQL and their
//! transactions) is written once, in the domain modules, generic over a
//! [`Dialect`]. Adding a backend means implementing [`crate::sql::Db`] for
//! its sqlx database and this trait for its store; the compiler lists what
//! is missing. See `docs/ARCHITECTURE.md`.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use tokio::sync::MutexGuard;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::sql::{Db, Sql};

/// A backend's differences from the shared code.
pub(crate) trait Dialect: std::fmt::Debug + Send + Sync + 'static {
    /// The sqlx database.
    type DB: Db;

    /// The name `GET /health` reports.
    const BACKEND: &'static str;

    /// Leases runnable steps (`$1` worker, `$2` now, `$3` lease end, `$4`
    /// limit), returning `ClaimRow`s.
    const CLAIM: &'static str;
    /// Hands back expired leases (`$1` now), returning (execution, step).
    const REAP: &'static str;
    /// Hands back leases by token (`$1` tokens, `$2` now), returning
    /// (execution, step).
    const RELEASE: &'static str;
    /// Held leases (`$1` tokens) whose execution has ended.
    const CANCELLED_LEASES: &'static str;
    /// Ends the leases of a batch of finished steps: `VALUES` rows of
    /// (execution, step, token) go between prefix and suffix; returns the
    /// (execution, step) pairs whose leases were still held.
    const RELEASE_MANY_PREFIX: &'static str;
    const RELEASE_MANY_SUFFIX: &'static str;
    /// The execution's last event number (`$1`), its row locked.
    const LAST_EVENT_SEQ: &'static str;
    /// Extends leases (`$1` lease end, `$2` tokens), returning the tokens
    /// still held.
    const HEARTBEAT: &'static str;
    /// Results of some steps (`$1` execution, `$2` JSON list of step ids).
    const SELECT_RESULTS: &'static str;
    /// One execution (`$1`) without its source, its plan cut down to
    /// `{levels, auto_answers, warnings}`.
    const SELECT_EXECUTION_VIEW: &'static str;
    /// An execution's steps as its view shows them (`$1` execution), as one
    /// JSON text: an array of arrays in `StepSummaryRow`'s order.
    const SELECT_STEP_SUMMARIES: &'static str;
    /// Inserts an event with the execution's next number (`$1` execution,
    /// `$2` kind, `$3` family, `$4` step, `$5` data, `$6` now).
    const INSERT_EVENT: &'static str;
    /// Leases due webhook deliveries (`$1` now, `$2` lease end, `$3` limit).
    const CLAIM_DELIVERIES: &'static str;
    /// Wakes idle workers of other processes (sent at commit), if any.
    const NOTIFY_WORK: Option<&'static str>;
    /// Ending the leases of finished steps and recording their results and
    /// checkpoints in one statement (prefix and suffix around `VALUES`
    /// rows), where the database can; otherwise a statement each.
    const RECORD_RESULTS: Option<(&'static str, &'static str)>;
    /// Queuing a handed-off step leased and starting it in one statement,
    /// where the database can.
    const START_HANDED_OFF: Option<&'static str>;

    fn pool(&self) -> &sqlx::Pool<Self::DB>;

    /// A turn at writing, where the backend needs one taken in-process
    /// (SQLite has one writer at a time).
    fn write_guard(&self) -> impl Future<Output = Option<MutexGuard<'_, ()>>> + Send;

    /// Periodic upkeep (see [`crate::Store::maintain`]).
    fn maintain(&self) -> impl Future<Output = Result<()>> + Send;

    /// See [`crate::Store::listen_for_work`].
    fn listen_for_work(
        &self,
        on_work: Arc<dyn Fn() + Send + Sync>,
        shutdown: CancellationToken,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// A statement on this backend.
    fn q(sql: &'static str) -> Sql<Self::DB> {
        crate::sql::q(sql)
    }
}

/// A write transaction, holding the backend's write turn until it ends
/// (dropped without `commit`, it rolls back).
pub(crate) struct Tx<'s, D: Dialect> {
    // Declared first: dropped (rolled back) before the turn is given up.
    tx: sqlx::Transaction<'static, D::DB>,
    _turn: Option<MutexGuard<'s, ()>>,
}

impl<'s, D: Dialect> Tx<'s, D> {
    /// Takes the write turn, then begins.
    pub(crate) async fn begin(store: &'s D) -> Result<Self> {
        let turn = store.write_guard().await;
        let tx = store.pool().begin().await?;
        Ok(Tx { tx, _turn: turn })
    }

    pub(crate) async fn commit(self) -> Result<()> {
        Ok(self.tx.commit().await?)
    }

    pub(crate) async fn rollback(self) -> Result<()> {
        Ok(self.tx.rollback().await?)
    }

    /// Sends the backend's work notification (at commit), if it has one.
    pub(crate) async fn notify_work(&mut self) -> Result<()> {
        if let Some(sql) = D::NOTIFY_WORK {
            D::q(sql).execute(self).await?;
        }
        Ok(())
    }
}

impl<D: Dialect> Deref for Tx<'_, D> {
    type Target = <D::DB as sqlx::Database>::Connection;
    fn deref(&self) -> &Self::Target {
        &self.tx
    }
}

impl<D: Dialect> DerefMut for Tx<'_, D> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.tx
    }
}

/// A pooled connection, for reads (and single-statement writes, after
/// taking the write turn).
pub(crate) async fn conn<D: Dialect>(store: &D) -> Result<sqlx::pool::PoolConnection<D::DB>> {
    Ok(store.pool().acquire().await?)
}
