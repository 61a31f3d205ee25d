//! `prompt-optimization`: the seed's rewriting rules for a prompt and the
//! family of the model it is for.

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use super::*;
use crate::{optional_count, optional_str};

/// `prompt-optimization`: the seed's rewriting rules.
#[derive(Debug, Clone, Default)]
pub struct PromptOptimization;

const GOALS: &[&str] = &["clarity", "brevity", "specificity", "model_specific"];

fn estimate_tokens(text: &str) -> i64 {
    (text.chars().count() / 4) as i64
}

fn clarity(prompt: &str) -> String {
    let lower = prompt.to_lowercase();
    let mut out = prompt.to_string();
    if !["step", "first", "then", "finally"]
        .iter()
        .any(|m| lower.contains(m))
    {
        if prompt.contains('?') {
            out = format!("Question: {prompt}");
        } else if ["create", "write", "generate"]
            .iter()
            .any(|w| lower.contains(w))
        {
            out = format!("Task: {prompt}");
        }
    }
    if !lower.contains("format") && !lower.contains("output") {
        if lower.contains("list") {
            out.push_str("\n\nProvide the output as a bulleted list.");
        } else if lower.contains("code") {
            out.push_str("\n\nProvide the code with appropriate syntax highlighting.");
        }
    }
    out
}

/// Wordy phrases and their short forms, matched without regard to case.
const WORDY: &[(&str, &str)] = &[
    ("please could you", "please"),
    ("i would like you to", "please"),
    ("can you please", "please"),
    ("in order to", "to"),
    ("as well as", "and"),
    ("at this point in time", "now"),
    ("due to the fact that", "because"),
];

/// Replaces `from` (any case) with `to`, keeping the rest of the text as it
/// was written (the seed lower-cased the whole prompt).
fn replace_ignoring_case(text: &str, from: &str, to: &str) -> String {
    let lower = text.to_lowercase();
    if lower.len() != text.len() {
        // Case folding changed byte offsets; only exact-case matches.
        return text.replace(from, to);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = 0;
    for (at, _) in lower.match_indices(from) {
        if at < rest {
            continue;
        }
        out.push_str(&text[rest..at]);
        let original = &text[at..at + from.len()];
        let sentence_start = text[..at]
            .trim_end()
            .chars()
            .last()
            .is_none_or(|c| ".!?\n".contains(c));
        if sentence_start && original.starts_with(|c: char| c.is_uppercase()) {
            let mut chars = to.chars();
            if let Some(first) = chars.next() {
                out.extend(first.to_uppercase());
                out.push_str(chars.as_str());
            }
        } else {
            out.push_str(to);
        }
        rest = at + from.len();
    }
    out.push_str(&text[rest..]);
    out
}

fn brevity(prompt: &str) -> String {
    WORDY.iter().fold(prompt.to_string(), |p, (long, short)| {
        replace_ignoring_case(&p, long, short)
    })
}

fn specificity(prompt: &str, has_context: bool) -> String {
    const VAGUE: &[(&str, &str)] = &[
        ("analyze this", "analyze the following data/code/text"),
        ("explain it", "explain the concept/process/code in detail"),
        (
            "make it better",
            "improve the code/text by addressing specific issues",
        ),
        ("fix this", "identify and fix the errors in the following"),
    ];
    let mut out = prompt.to_string();
    if let Some((vague, specific)) = VAGUE
        .iter()
        .find(|(v, _)| prompt.to_lowercase().contains(v))
    {
        out = replace_ignoring_case(prompt, vague, specific);
    }
    let lower = out.to_lowercase();
    if has_context
        && !["following", "below", "above", "attached"]
            .iter()
            .any(|w| lower.contains(w))
    {
        out.push_str("\n\nUse the provided context to inform your response.");
    }
    out
}

/// The model family a target model belongs to, for its prompt style.
fn family(model: &str, spec: Option<&ModelSpec>) -> &'static str {
    let names = [
        Some(model.to_lowercase()),
        spec.map(|s| s.model.to_lowercase()),
    ];
    let provider = spec.map(|s| s.provider.as_str());
    if provider == Some("anthropic") || names.iter().flatten().any(|n| n.contains("claude")) {
        "claude"
    } else if provider == Some("google") || names.iter().flatten().any(|n| n.contains("gemini")) {
        "gemini"
    } else {
        "gpt"
    }
}

fn model_specific(prompt: &str, family: &str) -> String {
    match family {
        "claude" => {
            if prompt.starts_with("Create")
                || prompt.starts_with("Write")
                || prompt.starts_with("Generate")
            {
                format!("I need help with the following task: {prompt}")
            } else {
                format!("{prompt}\n\nPlease provide a detailed response.")
            }
        }
        "gemini" => {
            if prompt.to_lowercase().contains("steps") {
                format!("Task: {prompt}\n\nProvide a comprehensive answer.")
            } else {
                format!("Objective: {prompt}\n\nPlease approach this systematically.")
            }
        }
        _ => prompt.to_string(),
    }
}

fn recommendations(original: &str, family: Option<&str>) -> Vec<String> {
    let lower = original.to_lowercase();
    let mut out = Vec::new();
    if !lower.contains("example")
        && ["create", "write", "generate"]
            .iter()
            .any(|w| lower.contains(w))
    {
        out.push("Consider adding examples of desired output".to_string());
    }
    if !lower.contains("format") && !lower.contains("json") {
        out.push("Specify desired output format explicitly".to_string());
    }
    if original.chars().count() > 1000 {
        out.push("Consider breaking complex prompts into steps".to_string());
    }
    if family == Some("claude") {
        out.push("Claude works well with conversational, context-rich prompts".to_string());
    }
    out
}

#[async_trait]
impl Tool for PromptOptimization {
    fn id(&self) -> &str {
        "prompt-optimization"
    }

    fn description(&self) -> &str {
        "Rewrites a prompt for clarity, brevity, specificity and its target model's style, within a token limit: {original_prompt, optimized_prompt, model, applied_optimizations, metrics, recommendations}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Optimize the prompt (the seed's rules; no model is called)",
            json!({"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string"},
                "model": {"type": "string", "description": "the target model (default: task-delegation's choice among the registered ones)"},
                "optimization_goals": {"description": "clarity, brevity, specificity, model_specific (default clarity and model_specific); a list or text listing them", "anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "string"}]},
                "optimization_goal": {"type": "string", "description": "one goal, when optimization_goals is not given"},
                "max_tokens": {"type": "integer", "minimum": 1, "description": "the most the prompt may have (about 4 characters a token)"},
                "preserve_intent": {"type": "boolean", "description": "over max_tokens, keep the beginning and the end (default true) rather than cut the end"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let prompt = required_str(params, "prompt")?;
        let goals: Vec<String> = match (
            params.get("optimization_goals"),
            params.get("optimization_goal"),
        ) {
            (Some(v), _) if !v.is_null() => name_list(v),
            (_, Some(v)) if !v.is_null() => name_list(v),
            _ => vec!["clarity".into(), "model_specific".into()],
        };
        let max_tokens = optional_count(params, "max_tokens", 1..=u64::MAX)?;
        let preserve = crate::optional_bool(params, "preserve_intent")?.unwrap_or(true);
        let named = optional_str(params, "model")?
            .map(str::trim)
            .filter(|m| !m.is_empty() && *m != "none" && *m != "None");
        // The target: as named (its registration, when it is registered),
        // else the model task-delegation would choose.
        let (model, spec) = match (named, ctx.models.as_deref()) {
            (Some(m), Some(models)) => (Some(m.to_string()), models.named(m).await.ok()),
            (Some(m), None) => (Some(m.to_string()), None),
            (None, Some(models)) => match models.registry().await {
                Ok(all) if !all.is_empty() => {
                    let stats = models.stats().await.unwrap_or_default();
                    let analysis = analyze(prompt, None);
                    let best = rank(&all, &stats, prompt, &analysis, 0.3, 0.7).remove(0);
                    (Some(best.spec.id.clone()), Some(best.spec))
                }
                _ => (None, None),
            },
            (None, None) => (None, None),
        };
        let fam = model.as_deref().map(|m| family(m, spec.as_ref()));
        let lower = prompt.to_lowercase();
        let has_context = lower.contains("following") || lower.contains("below");
        let mut optimized = prompt.to_string();
        let mut applied = Vec::new();
        let mut skipped = Vec::new();
        for goal in &goals {
            let before = optimized.clone();
            optimized = match goal.as_str() {
                "clarity" => clarity(&optimized),
                "brevity" => brevity(&optimized),
                "specificity" => specificity(&optimized, has_context),
                "model_specific" => model_specific(&optimized, fam.unwrap_or("gpt")),
                _ => {
                    skipped.push(goal.clone());
                    continue;
                }
            };
            if optimized != before {
                applied.push(goal.clone());
            }
        }
        if !skipped.is_empty() {
            ctx.log(
                crate::log::Stream::Log,
                &format!(
                    "goals not known here, skipped: {} (known: {})",
                    skipped.join(", "),
                    GOALS.join(", ")
                ),
            );
        }
        if let Some(limit) = max_tokens
            && estimate_tokens(&optimized) > limit as i64
        {
            let allowed = usize::try_from(limit.saturating_mul(4)).unwrap_or(usize::MAX);
            let chars: Vec<char> = optimized.chars().collect();
            if chars.len() > allowed {
                optimized = if preserve {
                    let half = allowed / 2;
                    let head: String = chars[..half].iter().collect();
                    let tail: String = chars[chars.len() - half..].iter().collect();
                    format!("{head}\n[...truncated...]\n{tail}")
                } else {
                    chars[..allowed].iter().collect()
                };
                applied.push("truncation".to_string());
            }
        }
        let original_tokens = estimate_tokens(prompt);
        let optimized_tokens = estimate_tokens(&optimized);
        Ok(json!({
            "original_prompt": prompt,
            "optimized_prompt": optimized,
            "model": model,
            "applied_optimizations": applied,
            "skipped_goals": skipped,
            "metrics": {
                "original_tokens": original_tokens,
                "optimized_tokens": optimized_tokens,
                "token_reduction": original_tokens - optimized_tokens,
                "reduction_percentage": if original_tokens > 0 {
                    (original_tokens - optimized_tokens) as f64 / original_tokens as f64 * 100.0
                } else {
                    0.0
                },
            },
            "recommendations": recommendations(prompt, fam),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brevity_keeps_the_writers_case() {
        assert_eq!(
            brevity(
                "In order to win, I would like you to run As well as Jump. Due to the fact that NASA said so."
            ),
            "To win, please run and Jump. Because NASA said so."
        );
    }

    #[test]
    fn seed_rules_rewrite_prompts() {
        assert_eq!(clarity("What is Rust?"), "Question: What is Rust?");
        assert_eq!(
            clarity("Write code for a list"),
            "Task: Write code for a list\n\nProvide the output as a bulleted list."
        );
        assert_eq!(
            model_specific("Write a poem", "claude"),
            "I need help with the following task: Write a poem"
        );
        assert_eq!(
            model_specific("Summarize", "gemini"),
            "Objective: Summarize\n\nPlease approach this systematically."
        );
        assert_eq!(model_specific("Summarize", "gpt"), "Summarize");
        assert_eq!(
            specificity("Please fix this now", true),
            "Please identify and fix the errors in the following now"
        );
    }
}
