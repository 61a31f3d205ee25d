//! The worker pool of one process: the dispatch loop that claims ready
//! steps, the heartbeat loop that extends their leases, and the reaper that
//! takes back steps of dead workers and expires executions past their deadline.

use crate::step::run_step;
use crate::{Engine, Inner, lock, resolve, webhooks};
use orchestrator_store::ClaimedStep;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

impl Engine {
    /// Runs the worker pool until `shutdown` is cancelled, then lets running
    /// steps finish (up to `drain`) before returning.
    pub fn start(
        &self,
        shutdown: CancellationToken,
        drain: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move { engine.dispatch(shutdown, drain).await })
    }

    pub(crate) async fn dispatch(&self, shutdown: CancellationToken, drain: Duration) {
        let inner = &self.inner;
        let mut tasks: JoinSet<()> = JoinSet::new();
        let heartbeat = tokio::spawn(heartbeat_loop(self.inner.clone(), shutdown.clone()));
        let reaper = tokio::spawn(reap_loop(self.inner.clone(), shutdown.clone()));
        let deliveries = tokio::spawn(webhooks::deliver_loop(self.inner.clone(), shutdown.clone()));
        let resolver = tokio::spawn(resolve::resolve_loop(self.clone(), shutdown.clone()));
        let retention = tokio::spawn(crate::retention::retention_loop(
            self.inner.clone(),
            shutdown.clone(),
        ));
        let waker = self.inner.clone();
        let on_work: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
            waker.wake.notify_one();
            waker.resolve_wake.notify_one();
        });
        match inner.store.listen_for_work(on_work, shutdown.clone()).await {
            Ok(true) => debug!("listening for work from other processes"),
            Ok(false) => {}
            Err(e) => {
                warn!(error = ?e, "cannot listen for work from other processes; polling instead")
            }
        }
        info!(worker = %inner.config.worker_id, slots = inner.config.max_concurrent, "worker pool started");
        inner.metrics.slots.store(
            i64::try_from(inner.config.max_concurrent).unwrap_or(i64::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut failures = 0u32;
        inner
            .taking
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let max = inner.config.max_concurrent.max(1);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            // Steps whose results are written are done with.
            while tasks.try_join_next().is_some() {}
            // Steps taken as their executions were submitted here.
            let taken = std::mem::take(&mut *lock(&inner.taken));
            for (step, permit) in taken {
                spawn_step(&mut tasks, inner, step, Some(permit));
            }
            // Claim in batches: while most slots are busy, let a few more free
            // up (briefly) so one claim serves several slots.
            let batch = (max / 4).max(1);
            let available = inner.slots.available_permits();
            if available < batch && available < max {
                let _ = tokio::time::timeout(
                    Duration::from_millis(2),
                    inner.slots.acquire_many(batch as u32),
                )
                .await;
            }
            let free = inner.slots.available_permits();
            let mut claimed_count = 0usize;
            // Slots are not held while the claim is out (a submit may take
            // one meanwhile); a claimed step that finds none waits for one,
            // its lease kept by the heartbeat, as a handed-off step does.
            if free > 0 {
                match inner
                    .store
                    .claim_steps(&inner.config.worker_id, free as u32, inner.config.lease_ms)
                    .await
                {
                    Ok(claimed) => {
                        failures = 0;
                        claimed_count = claimed.len();
                        for step in claimed {
                            let permit = Arc::clone(&inner.slots).try_acquire_owned().ok();
                            spawn_step(&mut tasks, inner, step, permit);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        error!(error = ?e, "claiming steps failed");
                    }
                }
            }
            if claimed_count > 0 && claimed_count == free {
                // Slots are full; wait for one to free below.
            } else if claimed_count > 0 {
                continue;
            }
            let idle = Duration::from_millis(inner.config.idle_poll_ms);
            let wait = if failures > 0 {
                Duration::from_millis((100u64 << failures.min(6)).min(5_000))
            } else if free == 0 || claimed_count == free {
                idle
            } else {
                match inner.store.next_run_in_ms().await {
                    Ok(Some(ms)) => Duration::from_millis(u64::try_from(ms).unwrap_or(0)).min(idle),
                    _ => idle,
                }
            };
            // Work may be left in the queue when there was no slot for it or
            // the claim filled every slot it had: look again as soon as a
            // slot is free (at once if one freed meanwhile). Otherwise the
            // queue is drained, and new work comes with a wake.
            let more = free == 0 || claimed_count == free;
            tokio::select! {
                _ = inner.wake.notified() => {}
                _ = inner.slots.acquire(), if more => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {}
            }
        }
        // No more steps are taken at submit; those taken meanwhile go back.
        let untaken: Vec<String> = {
            let mut taken = lock(&inner.taken);
            inner
                .taking
                .store(false, std::sync::atomic::Ordering::Relaxed);
            taken.drain(..).map(|(step, _)| step.lease_token).collect()
        };
        if !untaken.is_empty()
            && let Err(e) = inner.store.release_leases(&untaken).await
        {
            warn!(error = ?e, "handing back steps taken at submit failed; their leases will expire");
        }
        info!(running = tasks.len(), "worker pool stopping");
        let deadline = tokio::time::sleep(drain);
        tokio::pin!(deadline);
        while !tasks.is_empty() {
            tokio::select! {
                _ = tasks.join_next() => {}
                _ = &mut deadline => {
                    warn!(running = tasks.len(), "drain deadline passed; handing running steps back");
                    let tokens: Vec<String> = lock(&inner.running).keys().cloned().collect();
                    tasks.shutdown().await;
                    match inner.store.release_leases(&tokens).await {
                        Ok(n) => info!(steps = n, "handed back {n} steps for another worker"),
                        Err(e) => warn!(error = ?e, "handing back steps failed; their leases will expire"),
                    }
                    break;
                }
            }
        }
        heartbeat.abort();
        reaper.abort();
        deliveries.abort();
        retention.abort();
        // Hands back the leases of executions it was resolving.
        if tokio::time::timeout(Duration::from_secs(5), resolver)
            .await
            .is_err()
        {
            warn!("handing back executions being resolved took too long; their leases will expire");
        }
    }
}

/// Runs a leased step in its slot (without one, once one frees), then each
/// step handed to that slot as the last one finished.
fn spawn_step(
    tasks: &mut JoinSet<()>,
    inner: &Arc<Inner>,
    step: ClaimedStep,
    permit: Option<OwnedSemaphorePermit>,
) {
    inner.touched(&step.execution_id);
    let inner = inner.clone();
    let slot = permit.map(|permit| Slot::new(&inner, permit));
    tasks.spawn(async move {
        let mut step = Some(step);
        let mut slot = slot;
        while let Some(now) = step {
            let token = now.lease_token.clone();
            let cancel = CancellationToken::new();
            lock(&inner.running).insert(token.clone(), (now.execution_id.clone(), cancel.clone()));
            // A handed-off step waits for a slot (its lease kept by the
            // heartbeat meanwhile).
            let held = match slot.take() {
                Some(held) => held,
                None => Slot::acquire(&inner).await,
            };
            step = run_step(&inner, now, cancel, held).await;
            lock(&inner.running).remove(&token);
        }
    });
}

impl Inner {
    /// Up to `wanted` free slots, while the pool takes work.
    pub(crate) fn free_slots(&self, wanted: usize) -> Option<OwnedSemaphorePermit> {
        if wanted == 0 || !self.taking.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        let n = wanted.min(self.slots.available_permits());
        if n == 0 {
            return None;
        }
        Arc::clone(&self.slots)
            .try_acquire_many_owned(u32::try_from(n).ok()?)
            .ok()
    }

    /// Gives steps leased at submit, with their slots, to the dispatch
    /// loop; if the pool has stopped meanwhile, hands their leases back.
    pub(crate) fn run_taken(
        self: &Arc<Self>,
        steps: Vec<ClaimedStep>,
        mut slots: OwnedSemaphorePermit,
    ) {
        let mut taken = lock(&self.taken);
        if self.taking.load(std::sync::atomic::Ordering::Relaxed) {
            for step in steps {
                let Some(permit) = slots.split(1) else {
                    error!("more steps were taken at submit than there were slots");
                    break;
                };
                taken.push((step, permit));
            }
            drop(taken);
            self.wake.notify_one();
            return;
        }
        drop(taken);
        let tokens: Vec<String> = steps.into_iter().map(|s| s.lease_token).collect();
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(e) = inner.store.release_leases(&tokens).await {
                warn!(error = ?e, "handing back steps taken at submit failed; their leases will expire");
            }
        });
    }
}

/// A worker slot, held while a step runs (counted in the busy-slots gauge).
pub(crate) struct Slot {
    _permit: tokio::sync::OwnedSemaphorePermit,
    inner: Arc<Inner>,
}

impl Slot {
    fn new(inner: &Arc<Inner>, permit: tokio::sync::OwnedSemaphorePermit) -> Slot {
        inner
            .metrics
            .busy
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Slot {
            _permit: permit,
            inner: Arc::clone(inner),
        }
    }

    /// Waits for a free slot.
    pub(crate) async fn acquire(inner: &Arc<Inner>) -> Slot {
        let permit = Arc::clone(&inner.slots)
            .acquire_owned()
            .await
            .expect("the slots are never closed");
        Slot::new(inner, permit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.inner
            .metrics
            .busy
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

pub(crate) async fn heartbeat_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(inner.config.heartbeat_ms.max(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => {}
        }
        let tokens: Vec<String> = lock(&inner.running).keys().cloned().collect();
        if !tokens.is_empty() {
            match inner.store.heartbeat(&tokens, inner.config.lease_ms).await {
                Ok(beat) => {
                    let running = lock(&inner.running);
                    for token in &tokens {
                        let lost = !beat.held.contains(token);
                        if (lost || beat.cancelled.contains(token))
                            && let Some((execution, cancel)) = running.get(token)
                        {
                            if lost {
                                warn!(execution.id = %execution, "a lease was lost; stopping its step");
                            }
                            cancel.cancel();
                        }
                    }
                }
                Err(e) => warn!(error = ?e, "heartbeat failed"),
            }
        }
        if shutdown.is_cancelled() && lock(&inner.running).is_empty() {
            return;
        }
    }
}

/// Hands back steps whose worker was lost (in every process; the store makes
/// that safe).
pub(crate) async fn reap_loop(inner: Arc<Inner>, shutdown: CancellationToken) {
    // Execution deadlines are looked at every 250 ms (an indexed query that
    // finds nothing most of the time), so an execution's `timeout_seconds`
    // holds to within a quarter second; the rest every `reap_ms`.
    let deadline_ms = inner.config.reap_ms.clamp(50, 250);
    let every = (inner.config.reap_ms.max(50) / deadline_ms).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(deadline_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        match inner.store.expire_deadlines().await {
            Ok(ids) => {
                for id in ids {
                    warn!(execution.id = %id, "execution {id} timed out");
                    for (execution, cancel) in lock(&inner.running).values() {
                        if *execution == id {
                            cancel.cancel();
                        }
                    }
                    let engine = Engine {
                        inner: Arc::clone(&inner),
                    };
                    if let Err(e) = engine.cancel_children(&id).await {
                        warn!(execution.id = %id, error = ?e, "cancelling the children of a timed-out execution failed");
                    }
                }
            }
            Err(e) => warn!(error = ?e, "looking for timed-out executions failed"),
        }
        match inner.store.expire_waits().await {
            Ok(0) => {}
            Ok(n) => {
                info!(steps = n, "{n} waiting steps passed their deadline");
                inner.wake.notify_one();
            }
            Err(e) => warn!(error = ?e, "looking for waits past their deadline failed"),
        }
        // Database upkeep (SQLite's checkpoints) often, so its log stays
        // small under load without a checkpoint on the commit path.
        if let Err(e) = inner.store.maintain().await {
            warn!(error = ?e, "database upkeep failed");
        }
        ticks += 1;
        if ticks % every != 1 % every {
            continue;
        }
        match inner.store.reap_expired_leases().await {
            Ok(0) => {}
            Ok(n) => {
                inner.metrics.lease_expiries.add(&[], n as f64);
                warn!(steps = n, "{n} steps lost their worker; they run again");
                inner.wake.notify_one();
            }
            Err(e) => warn!(error = ?e, "looking for lost workers failed"),
        }
        if let Err(e) = inner.store.purge_expired_memory().await {
            warn!(error = ?e, "dropping expired memory entries failed");
        }
        let cutoff = orchestrator_store::now_ms() - inner.config.idempotency_ttl_ms;
        if let Err(e) = inner.store.expire_idempotency_keys(cutoff).await {
            warn!(error = ?e, "forgetting old idempotency keys failed");
        }
    }
}
