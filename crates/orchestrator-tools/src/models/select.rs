//! Choosing a model: requirements, what each candidate lacks, rewards and
//! the routing strategies (UCB, cheapest, fastest, fixed).

use super::*;

/// What a step or a selection request asks of a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Requirements {
    /// Tasks the model must support (the seed's name for capabilities).
    pub tasks: Vec<String>,
    pub capabilities: Vec<String>,
    /// The smallest context window acceptable.
    pub context_window: Option<u64>,
    /// The most it may cost per 1,000 tokens (mean of input and output prices).
    pub max_cost_per_1k: Option<f64>,
    /// Only models of this provider.
    pub provider: Option<String>,
    /// This model and no other.
    pub model: Option<String>,
}

impl Requirements {
    fn wanted(&self) -> Vec<&str> {
        self.tasks
            .iter()
            .chain(&self.capabilities)
            .map(String::as_str)
            .collect()
    }
}

/// What is known about a model's past calls.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ModelStats {
    pub calls: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// US dollars.
    pub cost: f64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    /// Sum of the rewards of its calls (see [`reward`]).
    #[serde(skip)]
    pub reward_sum: f64,
}

/// How good one call was, from 0 to 1: nothing for a failure; for a success
/// 0.5, plus up to 0.25 for speed and up to 0.25 for low cost.
pub fn reward(success: bool, latency_ms: f64, cost: f64) -> f64 {
    if !success {
        return 0.0;
    }
    0.5 + 0.25 / (1.0 + latency_ms.max(0.0) / 2000.0) + 0.25 / (1.0 + cost.max(0.0) * 1000.0)
}

/// How a model is chosen among the eligible ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// UCB1 on observed reward: untried models first, then the best mean
    /// reward plus an exploration bonus that shrinks with use.
    #[default]
    Ucb,
    Cheapest,
    /// Lowest observed median latency; untried models first.
    Fastest,
    /// The default model when eligible, else the first eligible one.
    Fixed,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ucb" | "ucb1" => Ok(Strategy::Ucb),
            "cheapest" | "cost" => Ok(Strategy::Cheapest),
            "fastest" | "latency" => Ok(Strategy::Fastest),
            "fixed" => Ok(Strategy::Fixed),
            other => Err(format!(
                "routing strategy '{other}' is not ucb, cheapest, fastest or fixed"
            )),
        }
    }
}

/// One model as the selection saw it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Candidate {
    pub id: String,
    pub eligible: bool,
    /// Why it is not eligible.
    pub lacks: Vec<String>,
    /// Its score under the strategy, when eligible and scored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// The chosen model and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Selection {
    pub model: ModelSpec,
    pub strategy: Strategy,
    pub reason: String,
    pub candidates: Vec<Candidate>,
}

/// No model met the requirements; what each one lacked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}", describe_none(.0))]
pub struct NoEligibleModel(pub Vec<Candidate>);

fn describe_none(candidates: &[Candidate]) -> String {
    if candidates.is_empty() {
        return "no model is registered (add one with POST /models or models.yaml)".into();
    }
    let parts: Vec<String> = candidates
        .iter()
        .map(|c| format!("'{}' {}", c.id, c.lacks.join(", ")))
        .collect();
    format!("no model meets the requirements: {}", parts.join("; "))
}

/// Why `model` does not meet `req`, empty when it does.
pub fn shortfalls(
    model: &ModelSpec,
    req: &Requirements,
    env: &HashMap<String, String>,
) -> Vec<String> {
    let mut lacks = Vec::new();
    if let Some(id) = &req.model
        && *id != model.id
    {
        lacks.push(format!("is not the requested model '{id}'"));
    }
    if let Some(p) = &req.provider
        && !p.eq_ignore_ascii_case(model.provider.as_str())
    {
        lacks.push(format!("is not from provider '{p}'"));
    }
    for cap in req.wanted() {
        if !model.has_capability(cap) {
            lacks.push(format!("lacks capability '{cap}'"));
        }
    }
    if let Some(w) = req.context_window
        && model.context_window < w
    {
        lacks.push(format!(
            "has a context window of {} < {w}",
            model.context_window
        ));
    }
    if let Some(max) = req.max_cost_per_1k
        && model.cost_per_1k_tokens.blended() > max
    {
        lacks.push(format!(
            "costs {} per 1k tokens > {max}",
            model.cost_per_1k_tokens.blended()
        ));
    }
    if let Err(e) = model.api_key(env) {
        lacks.push(e);
    }
    lacks
}

/// Chooses a model for `req` among `models` (in registry order, which
/// breaks ties).
pub fn select(
    models: &[ModelSpec],
    stats: &HashMap<String, ModelStats>,
    req: &Requirements,
    strategy: Strategy,
    default_model: Option<&str>,
    env: &HashMap<String, String>,
) -> Result<Selection, NoEligibleModel> {
    let mut candidates: Vec<Candidate> = models
        .iter()
        .map(|m| {
            let lacks = shortfalls(m, req, env);
            Candidate {
                id: m.id.clone(),
                eligible: lacks.is_empty(),
                lacks,
                score: None,
            }
        })
        .collect();
    let eligible: Vec<usize> = (0..models.len())
        .filter(|&i| candidates[i].eligible)
        .collect();
    if eligible.is_empty() {
        return Err(NoEligibleModel(candidates));
    }
    let none = ModelStats::default();
    let stat = |i: usize| stats.get(&models[i].id).unwrap_or(&none);
    let (pick, reason) = match strategy {
        Strategy::Fixed => {
            match default_model.and_then(|d| eligible.iter().find(|&&i| models[i].id == d)) {
                Some(&i) => (i, "the configured default model".to_string()),
                None => (
                    eligible[0],
                    "the first eligible model (fixed strategy)".to_string(),
                ),
            }
        }
        Strategy::Cheapest => {
            for &i in &eligible {
                candidates[i].score = Some(models[i].cost_per_1k_tokens.blended());
            }
            let i = min_by(&eligible, |i| models[i].cost_per_1k_tokens.blended());
            (
                i,
                format!(
                    "the cheapest eligible model ({} per 1k tokens)",
                    models[i].cost_per_1k_tokens.blended()
                ),
            )
        }
        Strategy::Fastest => {
            if let Some(&i) = eligible.iter().find(|&&i| stat(i).latency_p50_ms.is_none()) {
                (
                    i,
                    "not measured yet: tried before the measured ones".to_string(),
                )
            } else {
                for &i in &eligible {
                    candidates[i].score = stat(i).latency_p50_ms;
                }
                let i = min_by(&eligible, |i| stat(i).latency_p50_ms.unwrap_or(f64::MAX));
                (
                    i,
                    format!(
                        "the fastest eligible model (median {:.0} ms)",
                        stat(i).latency_p50_ms.unwrap_or(0.0)
                    ),
                )
            }
        }
        Strategy::Ucb => {
            if let Some(&i) = eligible.iter().find(|&&i| stat(i).calls == 0) {
                (
                    i,
                    "untried: UCB explores every eligible model once".to_string(),
                )
            } else {
                let total: u64 = eligible.iter().map(|&i| stat(i).calls).sum();
                let ln = (total.max(1) as f64).ln();
                for &i in &eligible {
                    let s = stat(i);
                    let n = s.calls as f64;
                    candidates[i].score = Some(s.reward_sum / n + (2.0 * ln / n).sqrt());
                }
                let i = min_by(&eligible, |i| -candidates[i].score.unwrap_or(0.0));
                let s = stat(i);
                (
                    i,
                    format!(
                        "highest UCB score {:.3} (mean reward {:.3} over {} calls)",
                        candidates[i].score.unwrap_or(0.0),
                        s.reward_sum / s.calls as f64,
                        s.calls
                    ),
                )
            }
        }
    };
    Ok(Selection {
        model: models[pick].clone(),
        strategy,
        reason,
        candidates,
    })
}

/// The first index with the smallest key (so registry order breaks ties).
fn min_by(indices: &[usize], key: impl Fn(usize) -> f64) -> usize {
    let mut best = indices[0];
    for &i in &indices[1..] {
        if key(i) < key(best) {
            best = i;
        }
    }
    best
}
