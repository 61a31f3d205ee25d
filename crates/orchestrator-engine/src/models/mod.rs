//! Model steps: which model runs a step, the call itself, what it cost.
//!
//! The registry and every call's statistics live in the store, so all
//! processes sharing a database see the same models and learn from the same
//! history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_store::{ModelCall, Store, now_ms};
use orchestrator_tools::ErrorKind;
use orchestrator_tools::ToolError;
use orchestrator_tools::models::providers::{self, ChatRequest, ChatResponse, RetryPolicy};
use orchestrator_tools::models::{
    ModelSpec, ModelStats, NoEligibleModel, Requirements, Selection, Strategy, reward,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod gateway;
mod request;
pub use gateway::StepModels;
pub use request::*;

/// How models are chosen and called.
#[derive(Clone)]
pub struct ModelSettings {
    pub strategy: Strategy,
    /// Used when a step names no model and no requirements.
    pub default_model: Option<String>,
    /// Its models come first when several are equally good.
    pub default_provider: Option<String>,
    /// Where API keys are read from (the process environment, captured at start).
    pub env: HashMap<String, String>,
    /// The variables a model's `api_key_env` may name: names, or patterns
    /// with `*` (`*_API_KEY`). Any other variable (the auth pepper, database
    /// passwords) is never sent to a model endpoint.
    pub key_env_allowed: Vec<String>,
    /// Where model endpoints may be reached (`models.allowed_hosts`,
    /// `models.allow_private_networks`); `None` reaches anything.
    pub egress: Option<Arc<orchestrator_tools::net::OutboundPolicy>>,
    /// Endpoints the operator wrote in the models file: reached without
    /// the policy (a local model server on loopback, say).
    pub trusted_base_urls: std::collections::HashSet<String>,
    /// Per request to a provider.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
}

/// Keys stay out of debug output.
impl std::fmt::Debug for ModelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSettings")
            .field("strategy", &self.strategy)
            .field("default_model", &self.default_model)
            .field("default_provider", &self.default_provider)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            strategy: Strategy::Ucb,
            default_model: None,
            default_provider: None,
            env: HashMap::new(),
            key_env_allowed: vec!["*_API_KEY".to_string()],
            egress: None,
            trusted_base_urls: Default::default(),
            request_timeout: Duration::from_secs(120),
            retry: RetryPolicy::default(),
        }
    }
}

impl ModelSettings {
    /// Whether a model's key may come from `var`.
    pub fn allows_key_env(&self, var: &str) -> bool {
        self.key_env_allowed
            .iter()
            .any(|pattern| glob_matches(pattern, var))
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Why a model could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error(transparent)]
    NoEligible(#[from] NoEligibleModel),
    #[error("model '{0}' is not registered")]
    Unknown(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the model registry cannot be read: {0}")]
    Store(String),
}

/// Who a call is for.
#[derive(Debug, Clone, Default)]
pub struct CallSite {
    pub execution_id: Option<String>,
    pub step_id: Option<String>,
    pub attempt: i64,
    /// The step's log: each call writes a line there.
    pub log: Option<Arc<dyn orchestrator_tools::log::LogSink>>,
}

/// A finished call: the answer and what it cost.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: ChatResponse,
    pub model: ModelSpec,
    pub cost: f64,
}

/// The model service.
#[derive(Debug, Clone)]
pub struct Models {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    /// `http` under the egress policy, when there is one.
    guarded: Option<reqwest::Client>,
    settings: ModelSettings,
    metrics: Arc<crate::metrics::EngineMetrics>,
    /// Models whose endpoint refused a connection, until when they are
    /// passed over by selection (shared by the clones of this service).
    unreachable: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    /// Calls in flight in this process, by model id.
    in_flight: Arc<std::sync::Mutex<HashMap<String, usize>>>,
}

/// Counts a call in flight while it lives.
struct InFlight<'a> {
    map: &'a std::sync::Mutex<HashMap<String, usize>>,
    id: String,
}

impl<'a> InFlight<'a> {
    fn start(map: &'a std::sync::Mutex<HashMap<String, usize>>, id: &str) -> Self {
        *map.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(id.to_string())
            .or_default() += 1;
        InFlight {
            map,
            id: id.to_string(),
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut map = self
            .map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.id);
            }
        }
    }
}

/// How long a model whose endpoint could not be reached is passed over.
const UNREACHABLE_FOR: Duration = Duration::from_secs(60);

/// Why a model's endpoint may not be reached.
fn refusal(spec: &ModelSpec, why: impl std::fmt::Display) -> String {
    format!(
        "model '{}': base_url {} is refused: {why} (models.allowed_hosts, models.allow_private_networks)",
        spec.id,
        spec.base_url()
    )
}

fn percentile(sorted: &[i64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1] as f64)
}

impl Models {
    pub fn new(store: Arc<dyn Store>, http: reqwest::Client, settings: ModelSettings) -> Self {
        Models {
            store,
            guarded: settings.egress.as_ref().map(|p| p.client(5)),
            http,
            settings,
            metrics: Arc::default(),
            unreachable: Arc::default(),
            in_flight: Arc::default(),
        }
    }

    /// Calls in flight in this process, by model id.
    pub fn in_flight(&self) -> HashMap<String, usize> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Models passed over for now: their endpoint could not be reached.
    fn cooling(&self) -> HashSet<String> {
        let now = Instant::now();
        let mut map = self
            .unreachable
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|_, until| *until > now);
        map.keys().cloned().collect()
    }

    /// Counts calls, tokens and cost in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::EngineMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn settings(&self) -> &ModelSettings {
        &self.settings
    }

    /// Refuses a model whose key would come from a variable models may not
    /// read (`models.api_key_env_allowed`).
    pub fn check_key_env(&self, spec: &ModelSpec) -> Result<(), String> {
        match &spec.api_key_env {
            Some(var) if !self.settings.allows_key_env(var) => Err(format!(
                "model '{}': api_key_env '{var}' is not a variable models may read; allowed: {} (models.api_key_env_allowed)",
                spec.id,
                self.settings.key_env_allowed.join(", ")
            )),
            _ => Ok(()),
        }
    }

    /// The egress policy a model's endpoint is held to: none for the
    /// operator's own endpoints (those in the models file), or without one.
    fn policy_for(&self, spec: &ModelSpec) -> Option<&orchestrator_tools::net::OutboundPolicy> {
        self.settings
            .egress
            .as_deref()
            .filter(|_| !self.settings.trusted_base_urls.contains(spec.base_url()))
    }

    /// Refuses an endpoint the egress policy does not let models reach.
    pub async fn check_endpoint(&self, spec: &ModelSpec) -> Result<(), String> {
        let Some(policy) = self.policy_for(spec) else {
            return Ok(());
        };
        let url = reqwest::Url::parse(spec.base_url())
            .map_err(|e| format!("model '{}': base_url is not valid: {e}", spec.id))?;
        policy
            .check_resolved(&url)
            .await
            .map_err(|e| refusal(spec, e))
    }

    /// The client for a model's endpoint: the operator's own endpoints
    /// directly, any other through the egress policy.
    fn client_for(&self, spec: &ModelSpec) -> &reqwest::Client {
        match (&self.guarded, self.policy_for(spec)) {
            (Some(guarded), Some(_)) => guarded,
            _ => &self.http,
        }
    }

    /// The registered models, in registry order (the default provider's
    /// first). A definition that no longer reads is skipped with a warning.
    pub async fn registry(&self) -> Result<Vec<ModelSpec>, SelectError> {
        let records = self
            .store
            .list_models()
            .await
            .map_err(|e| SelectError::Store(e.to_string()))?;
        let mut models: Vec<ModelSpec> = records
            .into_iter()
            .filter_map(|r| match serde_json::from_value::<ModelSpec>(r.spec) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(model = %r.id, error = %e, "stored model definition does not read; skipped");
                    None
                }
            })
            .collect();
        if let Some(p) = &self.settings.default_provider {
            models.sort_by_key(|m| !m.provider.as_str().eq_ignore_ascii_case(p));
        }
        Ok(models)
    }

    /// Every model's call statistics.
    pub async fn stats(&self) -> Result<HashMap<String, ModelStats>, SelectError> {
        let rows = self
            .store
            .model_call_stats()
            .await
            .map_err(|e| SelectError::Store(e.to_string()))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let mut lat = r.recent_latencies_ms.clone();
                lat.sort_unstable();
                let calls = u64::try_from(r.calls).unwrap_or(0);
                let successes = u64::try_from(r.successes).unwrap_or(0);
                (
                    r.model_id,
                    ModelStats {
                        calls,
                        successes,
                        failures: calls.saturating_sub(successes),
                        input_tokens: u64::try_from(r.input_tokens).unwrap_or(0),
                        output_tokens: u64::try_from(r.output_tokens).unwrap_or(0),
                        cost: r.cost,
                        latency_p50_ms: percentile(&lat, 0.5),
                        latency_p95_ms: percentile(&lat, 0.95),
                        reward_sum: r.reward_sum,
                    },
                )
            })
            .collect())
    }

    /// Chooses a model for `req` with the configured strategy.
    pub async fn select(&self, req: &Requirements) -> Result<Selection, SelectError> {
        let models = self.registry().await?;
        self.select_from(&models, req, self.settings.strategy).await
    }

    /// Chooses among `models` for `req` with `strategy`.
    pub async fn select_from(
        &self,
        models: &[ModelSpec],
        req: &Requirements,
        strategy: Strategy,
    ) -> Result<Selection, SelectError> {
        let stats = self.stats().await?;
        // A model whose endpoint refused a connection in the last minute is
        // passed over while another one fits.
        let cooling = self.cooling();
        if models.iter().any(|m| cooling.contains(&m.id)) {
            let reachable: Vec<ModelSpec> = models
                .iter()
                .filter(|m| !cooling.contains(&m.id))
                .cloned()
                .collect();
            if let Ok(mut chosen) = orchestrator_tools::models::select(
                &reachable,
                &stats,
                req,
                strategy,
                self.settings.default_model.as_deref(),
                &self.settings.env,
            ) {
                let mut skipped: Vec<&str> = cooling.iter().map(String::as_str).collect();
                skipped.sort_unstable();
                chosen.reason.push_str(&format!(
                    "; passed over (endpoint not reached in the last minute): {}",
                    skipped.join(", ")
                ));
                return Ok(chosen);
            }
        }
        Ok(orchestrator_tools::models::select(
            models,
            &stats,
            req,
            strategy,
            self.settings.default_model.as_deref(),
            &self.settings.env,
        )?)
    }

    /// The model a step runs on: the one it names (`id`, `provider:model`
    /// or the provider's model name), else one meeting its requirements,
    /// else the default model, else the strategy's choice among all.
    pub async fn resolve(
        &self,
        named: Option<&str>,
        requirements: Option<&Requirements>,
    ) -> Result<(ModelSpec, String), SelectError> {
        if let Some(name) = named {
            let models = self.registry().await?;
            let (provider, bare) = match name.split_once(':') {
                Some((p, m)) if ["openai", "anthropic", "google", "gemini"].contains(&p) => {
                    (Some(p), m)
                }
                _ => (None, name),
            };
            let found = models
                .iter()
                .find(|m| m.id == name)
                .or_else(|| {
                    models.iter().find(|m| {
                        (m.id == bare || m.model == bare)
                            && provider.is_none_or(|p| {
                                m.provider.as_str() == p
                                    || (p == "gemini" && m.provider.as_str() == "google")
                            })
                    })
                })
                .cloned()
                .ok_or_else(|| SelectError::Unknown(name.to_string()))?;
            self.check_key_env(&found).map_err(SelectError::Invalid)?;
            found.api_key(&self.settings.env).map_err(|e| {
                SelectError::Invalid(format!("model '{}' cannot be used: {e}", found.id))
            })?;
            return Ok((found, "named by the step or pipeline".into()));
        }
        let req = match requirements {
            Some(r) => r.clone(),
            None => match &self.settings.default_model {
                Some(d) => {
                    return Box::pin(self.resolve(Some(d.as_str()), None))
                        .await
                        .map(|(m, _)| (m, "the default model".into()));
                }
                None => Requirements::default(),
            },
        };
        let selection = self.select(&req).await?;
        Ok((selection.model, selection.reason))
    }

    /// Dollars already spent by an execution.
    pub async fn spent(&self, execution_id: &str) -> Result<f64, ToolError> {
        let usage = self
            .store
            .execution_usage(execution_id)
            .await
            .map_err(|e| ToolError::new(ErrorKind::StoreError, e.to_string()))?;
        Ok(usage.iter().map(|u| u.cost).sum())
    }

    /// Refuses a call to `spec` that could cost up to `worst` when it could
    /// take the execution past its `budget`.
    pub async fn within_budget(
        &self,
        execution_id: &str,
        budget: f64,
        spec: &ModelSpec,
        worst: f64,
    ) -> Result<(), ToolError> {
        let spent = self.spent(execution_id).await?;
        if spent + worst > budget {
            return Err(ToolError::new(
                ErrorKind::BudgetExceeded,
                format!(
                    "the execution has spent ${spent:.6} of its ${budget} budget, and this call to '{}' could cost up to ${worst:.6}",
                    spec.id
                ),
            ));
        }
        Ok(())
    }

    /// The key for `spec`, once its endpoint may be reached.
    fn prepare(&self, spec: &ModelSpec) -> Result<Option<String>, ToolError> {
        self.check_key_env(spec)
            .map_err(|e| ToolError::new(ErrorKind::ModelUnavailableError, e))?;
        let key = spec.api_key(&self.settings.env).map_err(|e| {
            ToolError::new(
                ErrorKind::ModelUnavailableError,
                format!("model '{}': {e}", spec.id),
            )
        })?;
        // Names are checked address by address as they resolve; a literal
        // address never resolves, so it is checked here.
        if let Some(policy) = self.policy_for(spec) {
            let refused = match reqwest::Url::parse(spec.base_url()) {
                Ok(url) => policy.check_url(&url).err(),
                Err(e) => Some(e.to_string()),
            };
            if let Some(e) = refused {
                return Err(ToolError::new(
                    ErrorKind::ModelUnavailableError,
                    refusal(spec, e),
                ));
            }
        }
        Ok(key)
    }

    /// After a call: the endpoint's reachability, metrics, the stored call
    /// record and the step's log line (`done` says what came back).
    fn settle(
        &self,
        spec: &ModelSpec,
        site: &CallSite,
        started_at: i64,
        latency_ms: f64,
        outcome: Result<(u64, u64, f64), &ToolError>,
        done: &str,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        {
            let mut map = self
                .unreachable
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &outcome {
                Err(e) if e.kind == ErrorKind::ConnectionError => {
                    map.insert(spec.id.clone(), Instant::now() + UNREACHABLE_FOR);
                }
                Ok(_) => {
                    map.remove(&spec.id);
                }
                Err(_) => {}
            }
        }
        let (success, input, output, cost, error_type) = match &outcome {
            Ok((i, o, c)) => (true, *i, *o, *c, None),
            Err(e) => (false, 0, 0, 0.0, Some(e.kind.clone())),
        };
        let m = &self.metrics;
        m.model_calls
            .inc(&[&spec.id, if success { "success" } else { "failure" }]);
        m.model_tokens.add(&[&spec.id, "input"], input as f64);
        m.model_tokens.add(&[&spec.id, "output"], output as f64);
        m.model_cost.add(&[&spec.id], cost);
        if let Some(log) = &site.log {
            let line = match &outcome {
                Ok(_) => format!(
                    "model '{}' ({}): {done}, ${cost:.6}, {} ms",
                    spec.id, spec.model, latency_ms as u64
                ),
                Err(e) => format!(
                    "model '{}' ({}) failed after {} ms: {}: {}",
                    spec.id, spec.model, latency_ms as u64, e.kind, e.message
                ),
            };
            log.line(orchestrator_tools::log::Stream::Log, &line);
        }
        let call = (error_type != Some(ErrorKind::CancelledError)).then(|| ModelCall {
            model_id: spec.id.clone(),
            execution_id: site.execution_id.clone(),
            step_id: site.step_id.clone(),
            attempt: site.attempt,
            started_at,
            latency_ms: latency_ms as i64,
            success,
            input_tokens: i64::try_from(input).unwrap_or(i64::MAX),
            output_tokens: i64::try_from(output).unwrap_or(i64::MAX),
            cost,
            reward: reward(success, latency_ms, cost),
            error_type: error_type.map(|k| k.as_str().to_string()),
        });
        let store = Arc::clone(&self.store);
        async move {
            if let Some(call) = call
                && let Err(e) = store.record_model_call(&call).await
            {
                warn!(model = %call.model_id, error = %e, "model call not recorded");
            }
        }
    }

    /// Calls `spec` and records the call, success or not.
    pub async fn call(
        &self,
        spec: &ModelSpec,
        request: &ChatRequest,
        site: &CallSite,
        cancel: &CancellationToken,
    ) -> Result<Answer, ToolError> {
        let key = self.prepare(spec)?;
        let _counted = InFlight::start(&self.in_flight, &spec.id);
        let started_at = now_ms();
        let clock = Instant::now();
        let outcome = providers::chat(
            self.client_for(spec),
            spec,
            key.as_deref(),
            request,
            cancel,
            self.settings.request_timeout,
            self.settings.retry,
        )
        .await;
        let latency_ms = clock.elapsed().as_secs_f64() * 1000.0;
        let (input, output) = outcome
            .as_ref()
            .map_or((0, 0), |r| (r.input_tokens, r.output_tokens));
        let cost = spec.cost_per_1k_tokens.of(input, output);
        self.settle(
            spec,
            site,
            started_at,
            latency_ms,
            outcome.as_ref().map(|_| (input, output, cost)),
            &format!("{input} tokens in, {output} out"),
        )
        .await;
        let response = outcome?;
        info!(model = %spec.id, input_tokens = input, output_tokens = output, cost, latency_ms = latency_ms as u64, "model call");
        Ok(Answer {
            response,
            model: spec.clone(),
            cost,
        })
    }

    /// Asks `spec` for one image and records the call; it costs the model's
    /// `cost_per_image`.
    pub async fn image(
        &self,
        spec: &ModelSpec,
        request: &providers::ImageRequest,
        site: &CallSite,
        cancel: &CancellationToken,
    ) -> Result<(providers::GeneratedImage, f64), ToolError> {
        let key = self.prepare(spec)?;
        let _counted = InFlight::start(&self.in_flight, &spec.id);
        let started_at = now_ms();
        let clock = Instant::now();
        let outcome = providers::generate_image(
            self.client_for(spec),
            spec,
            key.as_deref(),
            request,
            cancel,
            self.settings.request_timeout,
            self.settings.retry,
        )
        .await;
        let latency_ms = clock.elapsed().as_secs_f64() * 1000.0;
        let cost = spec.cost_per_image.unwrap_or(0.0);
        self.settle(
            spec,
            site,
            started_at,
            latency_ms,
            outcome.as_ref().map(|_| (0, 0, cost)),
            &format!("one {} image", request.size),
        )
        .await;
        let image = outcome?;
        info!(model = %spec.id, cost, latency_ms = latency_ms as u64, "model image");
        Ok((image, cost))
    }

    /// The bytes at `url` (an image a model answered with), through the
    /// models' egress policy unless the model's endpoint is the operator's.
    pub async fn download(
        &self,
        spec: &ModelSpec,
        url: &str,
        max_bytes: usize,
        cancel: &CancellationToken,
    ) -> Result<Vec<u8>, ToolError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            ToolError::new(
                ErrorKind::ModelResponseError,
                format!(
                    "model '{}' answered an image URL that is not valid: {e}",
                    spec.id
                ),
            )
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ToolError::new(
                ErrorKind::ModelResponseError,
                format!(
                    "model '{}' answered an image URL that is not http(s)",
                    spec.id
                ),
            ));
        }
        let same_endpoint =
            reqwest::Url::parse(spec.base_url()).is_ok_and(|base| base.origin() == parsed.origin());
        let client = if same_endpoint {
            self.client_for(spec)
        } else if let Some(policy) = self.settings.egress.as_deref() {
            policy.check_url(&parsed).map_err(|e| {
                ToolError::new(
                    ErrorKind::ModelResponseError,
                    format!(
                        "model '{}' answered an image URL that is refused: {e}",
                        spec.id
                    ),
                )
            })?;
            self.guarded.as_ref().unwrap_or(&self.http)
        } else {
            &self.http
        };
        let what = format!("the image of model '{}'", spec.id);
        let response = tokio::select! {
            r = client.get(parsed).timeout(self.settings.request_timeout).send() => {
                r.map_err(|e| orchestrator_tools::net::request_error(&e, &what))?
            }
            _ = cancel.cancelled() => {
                return Err(ToolError::new(ErrorKind::CancelledError, format!("{what} was cancelled")));
            }
        };
        if !response.status().is_success() {
            return Err(ToolError::new(
                ErrorKind::ModelResponseError,
                format!("{what} could not be fetched: {}", response.status()),
            ));
        }
        orchestrator_tools::net::read_capped(response, max_bytes, cancel, &what).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_variables_are_allowed_by_name_or_pattern() {
        let settings = ModelSettings {
            key_env_allowed: vec!["*_API_KEY".into(), "MY_LLM_TOKEN".into(), "A*B*C".into()],
            ..ModelSettings::default()
        };
        for ok in [
            "OPENAI_API_KEY",
            "_API_KEY",
            "MY_LLM_TOKEN",
            "ABC",
            "AxxBxxC",
        ] {
            assert!(settings.allows_key_env(ok), "{ok}");
        }
        for refused in [
            "ORCHESTRATOR_AUTH_PEPPER",
            "OPENAI_API_KEYS",
            "MY_LLM_TOKEN2",
            "AC",
            "API_KEY",
            "",
        ] {
            assert!(!settings.allows_key_env(refused), "{refused}");
        }
    }
}
