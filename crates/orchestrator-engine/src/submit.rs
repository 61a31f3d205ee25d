//! Submission: compiling a pipeline (AUTO tags answered) and storing its
//! execution with all its steps.

use crate::{Engine, PipelineSource, Submission, SubmitError, models};
use orchestrator_core::{CompileError, CompileOptions, Compiled};
use orchestrator_store::{ExecutionRecord, NewExecution, NewStep, StoreError};
use serde_json::{Map, Value, json};
use tracing::info;

impl Engine {
    pub(crate) fn compile_with(
        &self,
        source: &PipelineSource,
        context: Option<&Map<String, Value>>,
        auto_resolver: Option<&dyn orchestrator_core::AutoResolver>,
    ) -> Result<Compiled, CompileError> {
        let options = CompileOptions {
            catalog: self.inner.tools.as_ref(),
            context,
            auto_resolver,
        };
        match source {
            PipelineSource::Yaml(text) => orchestrator_core::compile_yaml(text, options),
            PipelineSource::Json(value) => orchestrator_core::compile_json(value, options),
        }
    }

    /// Compiles on a blocking thread: a large pipeline takes CPU time that
    /// would otherwise hold up every request served by this worker thread.
    pub async fn compile_blocking(
        &self,
        source: PipelineSource,
        context: Option<Map<String, Value>>,
        answers: Option<orchestrator_core::auto::Answers>,
    ) -> Result<Compiled, CompileError> {
        let engine = self.clone();
        let compiled = tokio::task::spawn_blocking(move || {
            engine.compile_with(
                &source,
                context.as_ref(),
                answers
                    .as_ref()
                    .map(|a| a as &dyn orchestrator_core::AutoResolver),
            )
        })
        .await;
        match compiled {
            Ok(compiled) => compiled,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// Compiles and stores a new execution. Returns it and whether it is new
    /// (`false`: an idempotent replay of an earlier submission).
    pub async fn submit(
        &self,
        submission: Submission,
    ) -> Result<(ExecutionRecord, bool), SubmitError> {
        if submission.options.max_retries == Some(0) {
            return Err(SubmitError::InvalidOption(
                "max_retries is the total number of attempts, at least 1".into(),
            ));
        }
        let execution_id = uuid::Uuid::now_v7().to_string();
        let (answers, answered) = self
            .answer_auto_tags(&submission.source, &execution_id)
            .await;
        let compiled = self
            .compile_blocking(
                submission.source.clone(),
                Some(submission.context.clone()),
                Some(answers),
            )
            .await?;
        let warnings = compiled.warnings;
        let mut plan = compiled.plan;
        // A model step that names neither a model nor requirements runs on
        // the pipeline's model, when it has one.
        if let Some(model) = plan.pipeline.model.clone() {
            for s in plan.steps.iter_mut() {
                if s.step.is_model_action()
                    && s.step.model.is_none()
                    && s.step.requires_model.is_none()
                {
                    s.step.model = Some(model.clone());
                }
            }
        }
        let source_text = match &submission.source {
            PipelineSource::Yaml(t) => t.clone(),
            PipelineSource::Json(v) => v.to_string(),
        };
        let request_hash = submission.idempotency_key.as_ref().map(|_| {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            h.update(source_text.as_bytes());
            h.update(
                Value::Object(submission.context.clone())
                    .to_string()
                    .as_bytes(),
            );
            h.update(
                serde_json::to_string(&submission.options)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hex::encode(h.finalize())
        });
        let steps = plan
            .steps
            .iter()
            .map(|s| NewStep {
                max_attempts: match (s.step.retry_explicit, submission.options.max_retries) {
                    (false, Some(n)) => n,
                    _ => s.step.retry.max_attempts,
                },
                planned: s.clone(),
            })
            .collect();
        let new = NewExecution {
            id: execution_id,
            pipeline_id: plan.pipeline.id.clone(),
            pipeline_name: plan.pipeline.name.clone(),
            source: source_text,
            inputs: Value::Object(plan.inputs.clone()),
            options: serde_json::to_value(&submission.options).unwrap_or_default(),
            idempotency_key: submission.idempotency_key,
            token_id: submission.token_id,
            request_hash,
            steps,
            plan: {
                let mut value =
                    serde_json::to_value(&plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
                // What the models answered, kept with the execution: a
                // recovery runs the stored plan and never asks again.
                if !answered.is_empty()
                    && let Some(obj) = value.as_object_mut()
                {
                    obj.insert("auto_answers".into(), Value::Array(answered));
                }
                // What the compiler warned about (keys it ignored, …), kept
                // with the execution so every reader sees it.
                if !warnings.is_empty()
                    && let Some(obj) = value.as_object_mut()
                {
                    obj.insert(
                        "warnings".into(),
                        serde_json::to_value(&warnings).unwrap_or_default(),
                    );
                }
                value
            },
            timeout_ms: submission
                .options
                .timeout_seconds
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let (record, created) = self.inner.store.create_execution(new).await?;
        if created {
            self.inner.touched(&record.id);
            info!(execution.id = %record.id, pipeline = %record.pipeline_name, "execution {} queued", record.id);
            self.inner.wake.notify_one();
        }
        Ok((record, created))
    }

    /// Asks models for the pipeline's `<AUTO>` tags. Failures are kept as
    /// answers too, so the compiler reports them at the tag's line.
    pub(crate) async fn answer_auto_tags(
        &self,
        source: &PipelineSource,
        execution_id: &str,
    ) -> (orchestrator_core::auto::Answers, Vec<Value>) {
        let mut answers = orchestrator_core::auto::Answers::default();
        let mut record = Vec::new();
        let root = match source {
            // Most pipelines have no tags: they are not parsed twice.
            PipelineSource::Yaml(text) if !text.contains("AUTO") => return (answers, record),
            PipelineSource::Yaml(text) => match orchestrator_core::yaml::parse(text) {
                Ok(node) => node,
                Err(_) => return (answers, record),
            },
            PipelineSource::Json(value) => orchestrator_core::yaml::Node::from_json(value),
        };
        for tag in orchestrator_core::find_auto_tags(&root) {
            if answers.contains(&tag) {
                continue;
            }
            // A tag in a model slot picks a registered model (no model
            // call); any other tag asks one.
            if models::is_model_slot(&tag) {
                match models::select_for_slot(&self.inner.models, &tag).await {
                    Ok((id, why)) => {
                        record.push(json!({
                            "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                            "answer": id, "selected": why,
                        }));
                        answers.insert(&tag, Ok(Value::String(id)));
                    }
                    Err(e) => answers.insert(&tag, Err(e)),
                }
                continue;
            }
            match models::answer_tag(&self.inner.models, &tag, execution_id).await {
                Ok((answer, model)) => {
                    record.push(json!({
                        "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                        "answer": answer, "model": model,
                    }));
                    answers.insert(&tag, Ok(Value::String(answer)));
                }
                Err(e) => answers.insert(&tag, Err(e)),
            }
        }
        (answers, record)
    }
}
