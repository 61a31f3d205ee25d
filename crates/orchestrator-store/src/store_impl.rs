//! [`Store`] for every backend: each method is its domain module's
//! function, run on the backend's [`Dialect`].

use async_trait::async_trait;
use orchestrator_core::flow::{ExecutionStatus, StepStatus};
use orchestrator_core::plan::PlannedStep;
use serde_json::Value;

use crate::dialect::Dialect;
use crate::{
    CheckpointRecord, ClaimedStep, DeliveryJob, DeliveryRecord, DeliveryUpdate, EventRecord,
    ExecutionFilter, ExecutionRecord, FinishOutcome, Handoff, Heartbeat, ModelCall, ModelCallStats,
    ModelRecord, NewExecution, NewStep, OutputRenderer, Overview, Result, StepContext, StepRecord,
    StepResult, StepSummary, StepUsage, Store, Take, TokenRecord, WebhookRecord,
};
use crate::{
    LogLine, LogWrite, MemoryEntry, PipelineRecord, PipelineSummary, ResolveJob, Resolved,
    WaitRecord,
};
use crate::{
    events, executions, finish, logs, memory, models, overview, pipelines, queue, recovery,
    resolve, retention, tokens, waits, webhooks,
};

#[async_trait]
impl<D: Dialect> Store for D {
    fn backend(&self) -> &'static str {
        D::BACKEND
    }

    async fn ping(&self) -> Result<()> {
        executions::ping(self).await
    }

    async fn create_and_take(
        &self,
        new: NewExecution,
        take: Option<Take>,
    ) -> Result<(ExecutionRecord, bool, Vec<ClaimedStep>)> {
        executions::create_execution(self, new, take).await
    }

    async fn execution_version(&self, id: &str) -> Result<Option<(ExecutionStatus, i64)>> {
        executions::execution_version(self, id).await
    }

    async fn get_execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        executions::get_execution(self, id).await
    }

    async fn get_execution_view(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        executions::get_execution_view(self, id).await
    }

    async fn list_executions(&self, filter: &ExecutionFilter) -> Result<Vec<ExecutionRecord>> {
        executions::list_executions(self, filter).await
    }

    async fn list_steps(&self, execution_id: &str) -> Result<Vec<StepRecord>> {
        executions::list_steps(self, execution_id).await
    }

    async fn list_step_summaries(&self, execution_id: &str) -> Result<Vec<StepSummary>> {
        executions::list_step_summaries(self, execution_id).await
    }

    async fn list_checkpoints(&self, execution_id: &str) -> Result<Vec<CheckpointRecord>> {
        executions::list_checkpoints(self, execution_id).await
    }

    async fn claim_steps(
        &self,
        worker: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ClaimedStep>> {
        queue::claim_steps(self, worker, limit, lease_ms).await
    }

    async fn heartbeat(&self, tokens: &[String], lease_ms: i64) -> Result<Heartbeat> {
        queue::heartbeat(self, tokens, lease_ms).await
    }

    async fn reap_expired_leases(&self) -> Result<u64> {
        queue::reap_expired_leases(self).await
    }

    async fn release_leases(&self, tokens: &[String]) -> Result<u64> {
        queue::release_leases(self, tokens).await
    }

    async fn expire_idempotency_keys(&self, before_ms: i64) -> Result<u64> {
        executions::expire_idempotency_keys(self, before_ms).await
    }

    async fn expire_deadlines(&self) -> Result<Vec<String>> {
        executions::expire_deadlines(self).await
    }

    async fn maintain(&self) -> Result<()> {
        Dialect::maintain(self).await
    }

    async fn queue_depth(&self) -> Result<i64> {
        queue::queue_depth(self).await
    }

    async fn finish_step(
        &self,
        step: &ClaimedStep,
        result: StepResult,
        outputs: OutputRenderer<'_>,
        handoff: Option<Handoff>,
    ) -> Result<FinishOutcome> {
        finish::finish_step(self, step, result, outputs, handoff).await
    }

    async fn finish_steps(
        &self,
        batch: Vec<(ClaimedStep, StepResult)>,
        outputs: OutputRenderer<'_>,
        handoff: Option<Handoff>,
    ) -> Result<Vec<Result<FinishOutcome>>> {
        finish::finish_steps(self, batch, outputs, handoff).await
    }

    async fn expand_step(
        &self,
        step: &ClaimedStep,
        container: &PlannedStep,
        new_steps: Vec<NewStep>,
        wait_for: &[String],
    ) -> Result<Vec<String>> {
        recovery::expand_step(self, step, container, new_steps, wait_for).await
    }

    async fn cancel_execution(&self, id: &str) -> Result<Option<ExecutionRecord>> {
        executions::cancel_execution(self, id).await
    }

    async fn claim_resolving(
        &self,
        worker: &str,
        limit: u32,
        lease_ms: i64,
    ) -> Result<Vec<ResolveJob>> {
        resolve::claim_resolving(self, worker, limit, lease_ms).await
    }

    async fn renew_resolving(
        &self,
        execution_id: &str,
        lease_token: &str,
        lease_ms: i64,
    ) -> Result<bool> {
        resolve::renew_resolving(self, execution_id, lease_token, lease_ms).await
    }

    async fn release_resolving(&self, execution_id: &str, lease_token: &str) -> Result<()> {
        resolve::release_resolving(self, execution_id, lease_token).await
    }

    async fn finish_resolving(
        &self,
        execution_id: &str,
        lease_token: &str,
        outcome: Resolved,
    ) -> Result<bool> {
        resolve::finish_resolving(self, execution_id, lease_token, outcome).await
    }

    async fn wait_step(
        &self,
        step: &ClaimedStep,
        kind: &str,
        request: &Value,
        parameters: Option<&Value>,
        deadline: Option<i64>,
    ) -> Result<()> {
        waits::wait_step(self, step, kind, request, parameters, deadline).await
    }

    async fn get_wait(&self, execution_id: &str, step_id: &str) -> Result<Option<WaitRecord>> {
        waits::get_wait(self, execution_id, step_id).await
    }

    async fn list_waits(&self, execution_id: Option<&str>, limit: u32) -> Result<Vec<WaitRecord>> {
        waits::list_waits(self, execution_id, limit).await
    }

    async fn answer_step(
        &self,
        execution_id: &str,
        step_id: &str,
        answer: &Value,
        answered_by: Option<&str>,
    ) -> Result<Option<WaitRecord>> {
        waits::answer_step(self, execution_id, step_id, answer, answered_by).await
    }

    async fn expire_waits(&self) -> Result<u64> {
        waits::expire_waits(self).await
    }

    async fn put_pipeline(
        &self,
        name: &str,
        source: &str,
        format: &str,
        created_by: Option<&str>,
    ) -> Result<PipelineRecord> {
        pipelines::put_pipeline(self, name, source, format, created_by).await
    }

    async fn get_pipeline(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<Option<PipelineRecord>> {
        pipelines::get_pipeline(self, name, version).await
    }

    async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>> {
        pipelines::list_pipelines(self).await
    }

    async fn delete_execution(&self, id: &str) -> Result<crate::Deleted> {
        retention::delete_execution(self, id).await
    }

    async fn purge_executions(&self, rule: &crate::PurgeRule, limit: i64) -> Result<u64> {
        retention::purge(self, rule, limit).await
    }

    async fn take_lease(&self, name: &str, holder: &str, until: i64) -> Result<bool> {
        retention::take_lease(self, name, holder, until).await
    }

    async fn append_step_log(
        &self,
        execution_id: &str,
        step_id: &str,
        write: &LogWrite,
    ) -> Result<()> {
        logs::append(self, execution_id, step_id, write).await
    }

    async fn step_log(
        &self,
        execution_id: &str,
        step_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LogLine>> {
        logs::read(self, execution_id, step_id, after, limit).await
    }

    async fn step_status(&self, execution_id: &str, step_id: &str) -> Result<Option<StepStatus>> {
        logs::step_status(self, execution_id, step_id).await
    }

    async fn last_log_seq(&self, execution_id: &str, step_id: &str) -> Result<i64> {
        logs::last_seq(self, execution_id, step_id).await
    }

    async fn memory_get(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
    ) -> Result<Option<MemoryEntry>> {
        memory::get(self, scope, namespace, key).await
    }

    async fn memory_list(&self, scope: &str, namespace: &str) -> Result<Vec<MemoryEntry>> {
        memory::list(self, scope, namespace).await
    }

    async fn memory_put(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
        value: &Value,
        expires_at: Option<i64>,
    ) -> Result<()> {
        memory::put(self, scope, namespace, key, value, expires_at).await
    }

    async fn memory_update(
        &self,
        scope: &str,
        namespace: &str,
        key: &str,
        change: memory::Change<'_>,
    ) -> Result<std::result::Result<Value, String>> {
        memory::update(self, scope, namespace, key, change).await
    }

    async fn memory_clear(&self, scope: &str, namespace: &str, key: Option<&str>) -> Result<u64> {
        memory::clear(self, scope, namespace, key).await
    }

    async fn purge_expired_memory(&self) -> Result<u64> {
        memory::purge_expired(self).await
    }

    async fn tree_counts(&self, root: &str) -> Result<Vec<(String, i64)>> {
        memory::tree_counts(self, root).await
    }

    async fn recover_execution(&self, id: &str, from: Option<&str>) -> Result<Option<Vec<String>>> {
        recovery::recover_execution(self, id, from).await
    }

    async fn retry_step(
        &self,
        step: &ClaimedStep,
        result: StepResult,
        delay_ms: i64,
    ) -> Result<()> {
        recovery::retry_step(self, step, result, delay_ms).await
    }

    async fn step_context(
        &self,
        execution_id: &str,
        step_ids: &[String],
    ) -> Result<Option<StepContext>> {
        executions::step_context(self, execution_id, step_ids).await
    }

    async fn step_results(
        &self,
        execution_id: &str,
        step_ids: &[String],
    ) -> Result<Vec<(String, StepStatus, Option<Value>)>> {
        executions::step_results(self, execution_id, step_ids).await
    }

    async fn listen_for_work(
        &self,
        on_work: std::sync::Arc<dyn Fn() + Send + Sync>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<bool> {
        Dialect::listen_for_work(self, on_work, shutdown).await
    }

    async fn next_run_in_ms(&self) -> Result<Option<i64>> {
        queue::next_run_in_ms(self).await
    }

    async fn insert_model(&self, id: &str, spec: &Value, source: &str) -> Result<bool> {
        models::insert_model(self, id, spec, source).await
    }

    async fn upsert_model(&self, id: &str, spec: &Value, source: &str) -> Result<()> {
        models::upsert_model(self, id, spec, source).await
    }

    async fn delete_model(&self, id: &str) -> Result<bool> {
        models::delete_model(self, id).await
    }

    async fn list_models(&self) -> Result<Vec<ModelRecord>> {
        models::list_models(self).await
    }

    async fn record_model_call(&self, call: &ModelCall) -> Result<()> {
        models::record_model_call(self, call).await
    }

    async fn model_call_stats(&self) -> Result<Vec<ModelCallStats>> {
        models::model_call_stats(self).await
    }

    async fn execution_usage(&self, execution_id: &str) -> Result<Vec<StepUsage>> {
        models::execution_usage(self, execution_id).await
    }

    async fn list_events(
        &self,
        execution_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<EventRecord>> {
        events::list_events(self, execution_id, after_seq, limit).await
    }

    async fn create_webhook(&self, webhook: &WebhookRecord, kinds: &[String]) -> Result<()> {
        webhooks::create_webhook(self, webhook, kinds).await
    }

    async fn list_webhooks(&self) -> Result<Vec<WebhookRecord>> {
        webhooks::list_webhooks(self).await
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        webhooks::delete_webhook(self, id).await
    }

    async fn claim_deliveries(&self, limit: u32, lock_ms: i64) -> Result<Vec<DeliveryJob>> {
        webhooks::claim_deliveries(self, limit, lock_ms).await
    }

    async fn finish_delivery(&self, id: i64, update: &DeliveryUpdate) -> Result<()> {
        webhooks::finish_delivery(self, id, update).await
    }

    async fn list_deliveries(&self, webhook_id: &str, limit: u32) -> Result<Vec<DeliveryRecord>> {
        webhooks::list_deliveries(self, webhook_id, limit).await
    }

    async fn create_token(&self, token: &TokenRecord) -> Result<()> {
        tokens::create_token(self, token).await
    }

    async fn get_token(&self, id: &str) -> Result<Option<TokenRecord>> {
        tokens::get_token(self, id).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        tokens::list_tokens(self).await
    }

    async fn revoke_token(&self, id: &str, now: i64) -> Result<bool> {
        tokens::revoke_token(self, id, now).await
    }

    async fn touch_token(&self, id: &str, now: i64) -> Result<()> {
        tokens::touch_token(self, id, now).await
    }

    async fn active_executions_of_token(&self, token_id: &str) -> Result<i64> {
        tokens::active_executions_of_token(self, token_id).await
    }

    async fn overview(&self) -> Result<Overview> {
        overview::overview(self).await
    }
}
