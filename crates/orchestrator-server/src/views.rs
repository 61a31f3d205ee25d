//! Views of large executions, kept briefly so that clients polling them do
//! not make the server rebuild them on every request.
//!
//! `GET /executions/{id}` first reads the execution's status and last event
//! number (one indexed row). A view kept from an earlier request is served
//! again when the status is the same and either
//! - the execution has ended and nothing happened since (an ended view
//!   does not change), or
//! - it was built less than [`LAG_FACTOR`] times its building time ago
//!   (at most [`MAX_LAG`]): however often clients poll, rebuilding takes at
//!   most about a tenth of the time, and a view lags behind its steps by
//!   at most that long (about 0.3 s for 10,000 steps).
//!
//! Status changes (running, succeeded, failed, cancelled) are never served
//! late. Views cheaper than [`MIN_COST`] are not kept: they are rebuilt
//! every time, as they always were.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use orchestrator_core::flow::ExecutionStatus;

/// A kept view is rebuilt at most once per this many times its cost.
pub const LAG_FACTOR: u32 = 9;
/// The longest a running execution's view is served unchanged.
pub const MAX_LAG: Duration = Duration::from_secs(1);
/// Views built faster than this are not kept.
pub const MIN_COST: Duration = Duration::from_millis(1);
/// The bytes of all kept views together (the least recently used go first).
const MAX_BYTES: usize = 64 << 20;

#[derive(Debug)]
struct Kept {
    status: ExecutionStatus,
    seq: i64,
    body: Bytes,
    built: Instant,
    cost: Duration,
    used: Instant,
}

/// The kept views of one process.
#[derive(Debug, Default)]
pub struct ViewCache {
    kept: Mutex<HashMap<String, Kept>>,
}

impl ViewCache {
    /// A kept view of `id` that still stands for an execution now at
    /// `status` and event `seq`.
    pub fn get(&self, id: &str, status: ExecutionStatus, seq: i64) -> Option<Bytes> {
        let mut kept = lock(&self.kept);
        let entry = kept.get_mut(id)?;
        let unchanged = entry.seq == seq && status.is_terminal();
        let fresh = entry.built.elapsed() < (entry.cost * LAG_FACTOR).min(MAX_LAG);
        if entry.status != status || seq < entry.seq || !(unchanged || fresh) {
            kept.remove(id);
            return None;
        }
        entry.used = Instant::now();
        Some(entry.body.clone())
    }

    /// Keeps a view built from the execution at `status` and event `seq`,
    /// which took `cost` to build.
    pub fn put(&self, id: &str, status: ExecutionStatus, seq: i64, body: Bytes, cost: Duration) {
        if cost < MIN_COST || body.len() > MAX_BYTES / 4 {
            return;
        }
        let mut kept = lock(&self.kept);
        let now = Instant::now();
        kept.insert(
            id.to_string(),
            Kept {
                status,
                seq,
                body,
                built: now,
                cost,
                used: now,
            },
        );
        let mut total: usize = kept.values().map(|k| k.body.len()).sum();
        while total > MAX_BYTES {
            let Some(oldest) = kept
                .iter()
                .min_by_key(|(_, k)| k.used)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(k) = kept.remove(&oldest) {
                total -= k.body.len();
            }
        }
    }

    /// Forgets the view of an execution that is gone.
    pub fn forget(&self, id: &str) {
        lock(&self.kept).remove(id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_view_stands_until_its_lag_or_a_status_change() {
        let cache = ViewCache::default();
        let cost = Duration::from_millis(20);
        cache.put("e", ExecutionStatus::Running, 5, Bytes::from("v5"), cost);
        // Later events within the lag: the kept view is served.
        assert_eq!(
            cache.get("e", ExecutionStatus::Running, 9).as_deref(),
            Some(&b"v5"[..])
        );
        // A status change is never served late.
        assert!(cache.get("e", ExecutionStatus::Succeeded, 9).is_none());
        assert!(
            cache.get("e", ExecutionStatus::Running, 9).is_none(),
            "dropped"
        );
        // Past its lag it is rebuilt.
        cache.put("e", ExecutionStatus::Running, 9, Bytes::from("v9"), cost);
        std::thread::sleep(cost * LAG_FACTOR + Duration::from_millis(5));
        assert!(cache.get("e", ExecutionStatus::Running, 9).is_none());
    }

    #[test]
    fn an_ended_view_stands_while_nothing_happens() {
        let cache = ViewCache::default();
        let cost = Duration::from_millis(1);
        cache.put("e", ExecutionStatus::Failed, 7, Bytes::from("done"), cost);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            cache.get("e", ExecutionStatus::Failed, 7).as_deref(),
            Some(&b"done"[..])
        );
        // Recovered: new events, and a status that is no longer the same.
        assert!(cache.get("e", ExecutionStatus::Running, 8).is_none());
    }

    #[test]
    fn cheap_views_are_not_kept_and_the_bytes_are_bounded() {
        let cache = ViewCache::default();
        cache.put(
            "small",
            ExecutionStatus::Succeeded,
            1,
            Bytes::from("x"),
            Duration::from_micros(300),
        );
        assert!(cache.get("small", ExecutionStatus::Succeeded, 1).is_none());
        let big = Bytes::from(vec![b'x'; MAX_BYTES / 4]);
        for i in 0..6 {
            cache.put(
                &format!("e{i}"),
                ExecutionStatus::Succeeded,
                1,
                big.clone(),
                Duration::from_millis(5),
            );
        }
        let kept = (0..6)
            .filter(|i| {
                cache
                    .get(&format!("e{i}"), ExecutionStatus::Succeeded, 1)
                    .is_some()
            })
            .count();
        assert_eq!(kept, 4, "the least recently used went");
        assert!(cache.get("e5", ExecutionStatus::Succeeded, 1).is_some());
    }
}
