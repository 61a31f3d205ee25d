//! Submission: compiling a pipeline (AUTO tags answered) and storing its
//! execution with all its steps.

use crate::{Engine, PipelineSource, Submission, SubmitError, models};
use orchestrator_core::{AutoTag, CompileError, CompileOptions, Compiled};
use orchestrator_store::{ExecutionRecord, NewExecution, NewStep, StoreError, Take};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::info;

/// Runs `f` on a blocking thread; a panic in it is the caller's.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(value) => value,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

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
        match answers {
            Some(answers) => self.compile_with_resolver(source, context, answers).await,
            None => {
                let engine = self.clone();
                blocking(move || engine.compile_with(&source, context.as_ref(), None)).await
            }
        }
    }

    /// [`Engine::compile_blocking`] with tags answered by `resolver`.
    pub(crate) async fn compile_with_resolver<R>(
        &self,
        source: PipelineSource,
        context: Option<Map<String, Value>>,
        resolver: R,
    ) -> Result<Compiled, CompileError>
    where
        R: orchestrator_core::AutoResolver + Send + 'static,
    {
        let engine = self.clone();
        blocking(move || engine.compile_with(&source, context.as_ref(), Some(&resolver))).await
    }

    /// Compiles and stores a new execution. Returns it and whether it is new
    /// (`false`: an idempotent replay of an earlier submission).
    ///
    /// A pipeline whose `<AUTO>` tags ask a model is checked (everything but
    /// the tags) and stored at once as `resolving`: the tags are answered
    /// after the answer is sent, by the resolving phase (`resolve.rs`).
    /// Tags in model slots are answered here, from the registry.
    pub async fn submit(
        &self,
        submission: Submission,
    ) -> Result<(ExecutionRecord, bool), SubmitError> {
        self.submit_linked(submission, None).await
    }

    /// [`Engine::submit`] for a child execution started by a step; the
    /// child's id goes into its parent's wait request (`execution_id`).
    pub(crate) async fn submit_linked(
        &self,
        submission: Submission,
        mut parent: Option<orchestrator_store::ParentLink>,
    ) -> Result<(ExecutionRecord, bool), SubmitError> {
        if submission.options.max_retries == Some(0) {
            return Err(SubmitError::InvalidOption(
                "max_retries is the total number of attempts, at least 1".into(),
            ));
        }
        let execution_id = uuid::Uuid::now_v7().to_string();
        if let Some(wait) = parent.as_mut().and_then(|p| p.wait.as_mut())
            && let Some(request) = wait.request.as_object_mut()
        {
            request.insert("execution_id".into(), Value::String(execution_id.clone()));
        }
        let tags = auto_tags_of(&submission.source);
        let source_text = match &submission.source {
            PipelineSource::Yaml(t) => t.clone(),
            PipelineSource::Json(v) => v.to_string(),
        };
        let request_hash = submission
            .idempotency_key
            .as_ref()
            .map(|_| request_hash(&source_text, &submission));
        let resolving = tags.iter().any(|t| !models::is_model_slot(t));
        let (planned, resolving) = if resolving {
            (self.check_deferred(&submission, &tags).await?, true)
        } else {
            let (answers, answered) = self
                .answer_auto_tags(
                    &tags,
                    None,
                    &Default::default(),
                    &execution_id,
                    &CancellationToken::new(),
                )
                .await;
            let compiled = self
                .compile_blocking(
                    submission.source.clone(),
                    Some(submission.context.clone()),
                    Some(answers),
                )
                .await?;
            (
                planned_execution(compiled, answered, &submission.options)?,
                false,
            )
        };
        // Free slots of this process take the first steps at once, in the
        // transaction that creates the execution (no claim to wait for).
        let roots = if resolving {
            0
        } else {
            planned
                .steps
                .iter()
                .filter(|s| s.planned.depends_on.is_empty())
                .count()
        };
        let slots = self.inner.free_slots(roots);
        let take = slots.as_ref().map(|p| Take {
            worker: self.inner.config.worker_id.clone(),
            limit: u32::try_from(p.num_permits()).unwrap_or(u32::MAX),
            lease_ms: self.inner.config.lease_ms,
        });
        let new = NewExecution {
            id: execution_id,
            pipeline_id: planned.pipeline_id,
            pipeline_name: planned.pipeline_name,
            source: source_text,
            inputs: planned.inputs,
            options: serde_json::to_value(&submission.options).unwrap_or_default(),
            idempotency_key: submission.idempotency_key,
            token_id: submission.token_id,
            request_hash,
            steps: planned.steps,
            plan: planned.plan,
            timeout_ms: submission
                .options
                .timeout_seconds
                .map(|s| i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
            resolving,
            parent,
        };
        let (record, created, taken) = self.inner.store.create_and_take(new, take).await?;
        if let Some(slots) = slots
            && !taken.is_empty()
        {
            self.inner.run_taken(taken, slots);
        }
        if created {
            self.inner.touched(&record.id);
            if resolving {
                info!(execution.id = %record.id, pipeline = %record.pipeline_name, "execution {} resolving its <AUTO> tags", record.id);
                self.inner.resolve_wake.notify_one();
            } else {
                info!(execution.id = %record.id, pipeline = %record.pipeline_name, "execution {} queued", record.id);
                self.inner.wake.notify_one();
            }
        }
        Ok((record, created))
    }

    /// Checks a pipeline whose tags are answered later: compiled with its
    /// tags left in place, problems at a tag's place set aside (the answer
    /// may mend them; the resolving phase compiles again). The stored plan
    /// stands in until then, with the source's format and the warnings.
    async fn check_deferred(
        &self,
        submission: &Submission,
        tags: &[AutoTag],
    ) -> Result<Planned, SubmitError> {
        let checked = self
            .compile_with_resolver(
                submission.source.clone(),
                Some(submission.context.clone()),
                orchestrator_core::auto::Deferred,
            )
            .await;
        let (name, id, inputs, warnings) = match checked {
            Ok(compiled) => (
                compiled.plan.pipeline.name.clone(),
                compiled.plan.pipeline.id.clone(),
                Value::Object(compiled.plan.inputs.clone()),
                compiled.warnings,
            ),
            Err(mut e) => {
                e.errors.retain(|d| {
                    !orchestrator_core::auto::Deferred::at_tag(tags, d.pointer.as_deref())
                });
                if !e.errors.is_empty() {
                    return Err(SubmitError::Compile(e));
                }
                let root = source_root(&submission.source);
                let text = |key: &str| {
                    root.as_ref()
                        .and_then(|r| r.get(key))
                        .and_then(orchestrator_core::yaml::Node::as_str)
                        .map(str::to_string)
                };
                let name = text("name").or_else(|| text("id")).unwrap_or_default();
                let id = text("id").unwrap_or_else(|| name.clone());
                (
                    name,
                    id,
                    Value::Object(submission.context.clone()),
                    e.warnings,
                )
            }
        };
        let format = match submission.source {
            PipelineSource::Yaml(_) => "yaml",
            PipelineSource::Json(_) => "json",
        };
        let mut plan = json!({"resolving": {"format": format, "tags": tags.len()}});
        if !warnings.is_empty() {
            plan["warnings"] = serde_json::to_value(&warnings).unwrap_or_default();
        }
        Ok(Planned {
            pipeline_id: id,
            pipeline_name: name,
            inputs,
            plan,
            steps: Vec::new(),
        })
    }

    /// Asks models for `<AUTO>` tags, each question rendered over `scope`
    /// first when given (inputs and execution globals; a question that
    /// names what does not exist yet, such as a step's result, is asked as
    /// written). Failures are kept as answers too, so the compiler reports
    /// them at the tag's line. Tags in model slots are answered from the
    /// registry, without a model call. A tag in a step's parameters or
    /// condition whose question reads one of `steps` is left for that step
    /// to answer when it runs.
    pub(crate) async fn answer_auto_tags(
        &self,
        tags: &[AutoTag],
        scope: Option<&orchestrator_core::template::Scope>,
        steps: &std::collections::BTreeSet<String>,
        execution_id: &str,
        cancel: &CancellationToken,
    ) -> (orchestrator_core::auto::Answers, Vec<Value>) {
        use orchestrator_core::auto::{answerable_by_step, reads_steps};
        let mut answers = orchestrator_core::auto::Answers::default();
        let mut record = Vec::new();
        for tag in tags {
            if answers.contains(tag) {
                continue;
            }
            if !models::is_model_slot(tag) && answerable_by_step(tag) && reads_steps(tag, steps) {
                answers.later(tag);
                record.push(json!({
                    "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                    "answered_by_step": true,
                }));
                continue;
            }
            if models::is_model_slot(tag) {
                match models::select_for_slot(&self.inner.models, tag).await {
                    Ok((id, why)) => {
                        record.push(json!({
                            "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                            "answer": id, "selected": why,
                        }));
                        answers.insert(tag, Ok(Value::String(id)));
                    }
                    Err(e) => answers.insert(tag, Err(e)),
                }
                continue;
            }
            let question = scope
                .filter(|_| orchestrator_core::template::is_template(&tag.question))
                .and_then(|scope| {
                    orchestrator_core::template::render_str(&tag.question, scope).ok()
                })
                .unwrap_or_else(|| tag.question.clone());
            match models::answer_tag(&self.inner.models, tag, &question, execution_id, cancel).await
            {
                Ok((answer, model)) => {
                    let mut entry = json!({
                        "step": tag.step, "pointer": tag.pointer, "question": tag.question,
                        "answer": answer, "model": model,
                    });
                    if question != tag.question {
                        entry["asked"] = Value::String(question);
                    }
                    record.push(entry);
                    answers.insert(tag, Ok(Value::String(answer)));
                }
                Err(e) => answers.insert(tag, Err(e)),
            }
        }
        (answers, record)
    }
}

/// What a compiled pipeline stores: its plan (with the answers and the
/// warnings) and its step rows.
pub(crate) struct Planned {
    pub pipeline_id: String,
    pub pipeline_name: String,
    pub inputs: Value,
    pub plan: Value,
    pub steps: Vec<NewStep>,
}

pub(crate) fn planned_execution(
    compiled: Compiled,
    answered: Vec<Value>,
    options: &crate::ExecutionOptions,
) -> Result<Planned, StoreError> {
    let warnings = compiled.warnings;
    let mut plan = compiled.plan;
    // A model step that names neither a model nor requirements runs on
    // the pipeline's model, when it has one.
    if let Some(model) = plan.pipeline.model.clone() {
        for s in plan.steps.iter_mut() {
            if s.step.is_model_action() && s.step.model.is_none() && s.step.requires_model.is_none()
            {
                s.step.model = Some(model.clone());
            }
        }
    }
    let steps = plan
        .steps
        .iter()
        .map(|s| NewStep {
            max_attempts: match (s.step.retry_explicit, options.max_retries) {
                (false, Some(n)) => n,
                _ => s.step.retry.max_attempts,
            },
            planned: s.clone(),
        })
        .collect();
    let mut value = serde_json::to_value(&plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if let Some(obj) = value.as_object_mut() {
        // What the models answered, kept with the execution: a recovery
        // runs the stored plan and never asks again.
        if !answered.is_empty() {
            obj.insert("auto_answers".into(), Value::Array(answered));
        }
        // What the compiler warned about (keys it ignored, …), kept with
        // the execution so every reader sees it.
        if !warnings.is_empty() {
            obj.insert(
                "warnings".into(),
                serde_json::to_value(&warnings).unwrap_or_default(),
            );
        }
    }
    Ok(Planned {
        pipeline_id: plan.pipeline.id.clone(),
        pipeline_name: plan.pipeline.name.clone(),
        inputs: Value::Object(plan.inputs.clone()),
        plan: value,
        steps,
    })
}

fn request_hash(source_text: &str, submission: &Submission) -> String {
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
}

/// The parsed document, when it parses (the compiler reports it otherwise).
pub(crate) fn source_root(source: &PipelineSource) -> Option<orchestrator_core::yaml::Node> {
    match source {
        PipelineSource::Yaml(text) => orchestrator_core::parse_pipeline(text).ok(),
        PipelineSource::Json(value) => Some(orchestrator_core::yaml::Node::from_json(value)),
    }
}

/// The pipeline's `<AUTO>` tags (none when it does not parse).
pub(crate) fn auto_tags_of(source: &PipelineSource) -> Vec<AutoTag> {
    // Most pipelines have no tags: they are not parsed twice.
    if let PipelineSource::Yaml(text) = source
        && !text.contains("AUTO")
    {
        return Vec::new();
    }
    source_root(source)
        .map(|root| orchestrator_core::find_auto_tags(&root))
        .unwrap_or_default()
}
