//! A step attempt's log: lines from its command or tool, written to the
//! store every [`FLUSH_EVERY`] while it runs (so they can be followed live)
//! and once more when it ends.
//!
//! Bounded by `limits.step_log_bytes` per attempt: the first half of the
//! bound is kept as it comes (the head), the last half as a moving window
//! (the tail); the lines between are dropped, and one marker line, placed
//! where they were, says how many. Memory is bounded the same way: a tool
//! that writes faster than the store takes loses the oldest unwritten lines,
//! counted on the marker. Steps that write nothing cost nothing: the writer
//! starts with the first line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_store::{LogLine, LogWrite, Store};
use orchestrator_tools::log::{LogSink, Stream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::warn;

/// How often a running step's new lines are written.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_millis(200);

/// What a line costs against the bound besides its text (its row).
const LINE_OVERHEAD: usize = 32;

/// The sink a tool writes to; [`StepLog::finish`] when the attempt ends.
#[derive(Debug)]
pub(crate) struct StepLog {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn Store>,
    execution_id: String,
    step_id: String,
    attempt: i64,
    cap: usize,
    pending: Mutex<Pending>,
    wake: Notify,
}

#[derive(Debug, Default)]
struct Pending {
    /// Lines of the head not written yet: kept whatever comes after.
    head: Vec<(Stream, i64, String)>,
    /// What the head may still take (half the bound, to start with).
    head_left: usize,
    /// The head is full: every later line is in the tail.
    in_tail: bool,
    /// Lines of the tail not written yet, within half the bound.
    tail: VecDeque<(Stream, i64, String)>,
    tail_bytes: usize,
    /// Tail lines dropped before they were written (the store fell behind).
    lost: u64,
    closed: bool,
    writer: Option<JoinHandle<()>>,
}

/// One batch for the writer: head lines, tail lines, and how many tail
/// lines were lost before it took them.
type Taken = (Vec<(Stream, i64, String)>, Vec<(Stream, i64, String)>, u64);

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl StepLog {
    pub(crate) fn new(
        store: Arc<dyn Store>,
        execution_id: &str,
        step_id: &str,
        attempt: i64,
    ) -> Arc<Self> {
        let cap = orchestrator_core::limits::get().step_log_bytes.max(1024);
        Arc::new(StepLog {
            shared: Arc::new(Shared {
                store,
                execution_id: execution_id.to_string(),
                step_id: step_id.to_string(),
                attempt,
                cap,
                pending: Mutex::new(Pending {
                    head_left: cap / 2,
                    ..Pending::default()
                }),
                wake: Notify::new(),
            }),
        })
    }

    /// Writes what is left and waits for it (call when the attempt ends).
    pub(crate) async fn finish(&self) {
        let writer = {
            let mut p = lock(&self.shared.pending);
            p.closed = true;
            p.writer.take()
        };
        self.shared.wake.notify_one();
        if let Some(w) = writer {
            let _ = w.await;
        }
    }
}

impl LogSink for StepLog {
    fn line(&self, stream: Stream, text: &str) {
        let mut p = lock(&self.shared.pending);
        if p.closed {
            return;
        }
        let bytes = text.len() + LINE_OVERHEAD;
        let line = (stream, orchestrator_store::now_ms(), text.to_string());
        // The head is decided here, as lines come, so a flood before the
        // first write cannot push it out.
        if !p.in_tail && bytes <= p.head_left {
            p.head_left -= bytes;
            p.head.push(line);
        } else {
            p.in_tail = true;
            p.tail_bytes += bytes;
            p.tail.push_back(line);
            while p.tail_bytes > self.shared.cap / 2 {
                let Some((_, _, dropped)) = p.tail.pop_front() else {
                    break;
                };
                p.tail_bytes -= dropped.len() + LINE_OVERHEAD;
                p.lost += 1;
            }
        }
        if p.writer.is_none()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let shared = Arc::clone(&self.shared);
            p.writer = Some(runtime.spawn(async move { shared.write_loop().await }));
        }
    }
}

/// What the writer has stored of this attempt.
#[derive(Debug, Default)]
struct Written {
    next_seq: i64,
    tail: Option<Tail>,
}

#[derive(Debug)]
struct Tail {
    marker_seq: i64,
    rows: VecDeque<(i64, usize)>,
    bytes: usize,
    dropped: u64,
}

impl Shared {
    async fn write_loop(self: Arc<Self>) {
        let mut written = Written::default();
        match self
            .store
            .last_log_seq(&self.execution_id, &self.step_id)
            .await
        {
            Ok(n) => written.next_seq = n + 1,
            Err(e) => {
                warn!(execution.id = %self.execution_id, step.id = %self.step_id, error = ?e, "the step's log cannot be written");
                return;
            }
        }
        loop {
            let ((head, tail, lost), closed) = {
                let mut p = lock(&self.pending);
                p.tail_bytes = 0;
                let taken: Taken = (
                    std::mem::take(&mut p.head),
                    p.tail.drain(..).collect(),
                    std::mem::take(&mut p.lost),
                );
                (taken, p.closed)
            };
            if !head.is_empty() || !tail.is_empty() || lost > 0 {
                let write = self.batch(&mut written, head, tail, lost);
                if let Err(e) = self
                    .store
                    .append_step_log(&self.execution_id, &self.step_id, &write)
                    .await
                {
                    warn!(execution.id = %self.execution_id, step.id = %self.step_id, error = ?e, "writing the step's log failed");
                }
            }
            if closed {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = self.wake.notified() => {}
            }
        }
    }

    /// Turns new lines into a write that keeps the attempt within its bound.
    fn batch(
        &self,
        w: &mut Written,
        head: Vec<(Stream, i64, String)>,
        tail: Vec<(Stream, i64, String)>,
        lost: u64,
    ) -> LogWrite {
        let half = self.cap / 2;
        let mut out = LogWrite::default();
        let mut dropped_range: Option<(i64, i64)> = None;
        let mut marker_changed = false;
        let row = |seq: i64, stream: Stream, at: i64, line: String| LogLine {
            seq,
            attempt: self.attempt,
            stream: stream.as_str().to_string(),
            at,
            line,
        };
        // The head as the sink kept it, in order, before any marker.
        for (stream, at, text) in head {
            out.lines.push(row(w.next_seq, stream, at, text));
            w.next_seq += 1;
        }
        if (lost > 0 || !tail.is_empty()) && w.tail.is_none() {
            w.tail = Some(Tail {
                marker_seq: w.next_seq,
                rows: VecDeque::new(),
                bytes: 0,
                dropped: 0,
            });
            w.next_seq += 1;
        }
        if lost > 0
            && let Some(t) = &mut w.tail
        {
            t.dropped += lost;
            marker_changed = true;
        }
        for (stream, at, text) in tail {
            let bytes = text.len() + LINE_OVERHEAD;
            let seq = w.next_seq;
            w.next_seq += 1;
            out.lines.push(row(seq, stream, at, text));
            let Some(t) = &mut w.tail else { continue };
            t.rows.push_back((seq, bytes));
            t.bytes += bytes;
            while t.bytes > half {
                let Some((gone, b)) = t.rows.pop_front() else {
                    break;
                };
                t.bytes -= b;
                t.dropped += 1;
                marker_changed = true;
                dropped_range = Some(dropped_range.map_or((gone, gone), |(lo, _)| (lo, gone)));
            }
        }
        if let Some((lo, hi)) = dropped_range {
            // Rows of this batch that are already gone are not written.
            out.lines.retain(|l| l.seq > hi || l.seq < lo);
            out.drop = Some((lo, hi));
        }
        if marker_changed && let Some(t) = &w.tail {
            out.marker = Some(LogLine {
                seq: t.marker_seq,
                attempt: self.attempt,
                stream: Stream::Log.as_str().to_string(),
                at: orchestrator_store::now_ms(),
                line: format!(
                    "[{} lines dropped here: each attempt keeps its first and last {} bytes of log (limits.step_log_bytes)]",
                    t.dropped, half
                ),
            });
        }
        out
    }
}
