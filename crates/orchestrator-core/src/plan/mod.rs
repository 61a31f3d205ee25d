//! From a validated [`Pipeline`] to an [`ExecutionPlan`]: dependency
//! inference, loop expansion, the DAG (petgraph), cycle reports and
//! execution levels.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Diagnostic, ErrorKind};
use crate::model::{LoopItems, LoopSpec, Pipeline, Step};
use crate::template::{self, Scope};
use crate::yaml::Pos;

mod expand;
mod graph;
#[cfg(test)]
mod tests;

use expand::static_items;
pub use expand::{Expansion, expand_for_each, expand_while, items_from_value};
pub use graph::{find_cycle, levels};

/// Most iterations one loop may expand to.
pub const MAX_LOOP_ITEMS: usize = 10_000;

/// How the engine treats a planned step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    /// Runs a tool or runtime action.
    Task,
    /// A `for_each` whose items are known only at run time: when ready, the
    /// engine renders the items and calls [`expand_for_each`].
    ForEach,
    /// A `while` loop: the engine evaluates the condition and calls
    /// [`expand_while`] once per iteration.
    While,
    /// A loop already expanded: finishes when its iterations have, with the
    /// list of iteration results as its result.
    Join,
}

impl StepKind {
    /// Its name as written in plans (`task`, `for_each`, `while`, `join`).
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Task => "task",
            StepKind::ForEach => "for_each",
            StepKind::While => "while",
            StepKind::Join => "join",
        }
    }
}

/// Values bound while a loop body step runs.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LoopBinding {
    /// The loop step that owns this iteration.
    pub loop_id: String,
    /// 0-based iteration number.
    pub iteration: u32,
    /// `item`, `index`, `position`, `length`, `is_first`, `is_last` or `iteration`,
    /// plus the bindings of enclosing loops.
    pub values: Map<String, Value>,
    /// Body step id → expanded step id, for templates and jumps inside the body.
    pub aliases: BTreeMap<String, String>,
}

/// One step of the plan: what the engine schedules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedStep {
    /// Unique in the execution (`{loop_id}_{index}_{step_id}` for loop bodies).
    pub id: String,
    pub kind: StepKind,
    /// The definition (for body steps, with its id as written in the body).
    pub step: Step,
    /// Every dependency: explicit, inferred from templates, and loop order.
    pub depends_on: Vec<String>,
    /// Jumps move within one scope: `""` at top level, the iteration's prefix in loops.
    pub scope: String,
    /// Position in its scope's document order.
    pub order: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<LoopBinding>,
    /// For loops: how many iterations have been expanded so far.
    #[serde(default)]
    pub iterations: u32,
}

impl PlannedStep {
    /// For a loop: the ids of the steps of every expanded iteration.
    pub fn iteration_step_ids(&self) -> Vec<String> {
        let Some(spec) = &self.step.loop_spec else {
            return vec![];
        };
        (0..self.iterations)
            .flat_map(|i| {
                spec.body()
                    .iter()
                    .map(move |b| format!("{}_{i}_{}", self.id, b.id))
            })
            .collect()
    }

    /// Resolves a body-local step id (a jump target or template name) to the
    /// id in this execution.
    pub fn resolve_id<'a>(&'a self, id: &'a str) -> &'a str {
        self.binding
            .as_ref()
            .and_then(|b| b.aliases.get(id))
            .map_or(id, String::as_str)
    }
}

/// A compiled pipeline ready to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionPlan {
    pub pipeline: Pipeline,
    /// Inputs after defaults and caller values.
    pub inputs: Map<String, Value>,
    pub steps: Vec<PlannedStep>,
    /// Steps that can run in parallel, level by level (the seed API's `get_execution_levels`).
    pub levels: Vec<Vec<String>>,
}

/// Builds the plan. `inputs_known`: whether inputs came from a caller (else
/// defaults only), which decides whether loops over inputs expand now.
pub fn build(
    pipeline: Pipeline,
    inputs: Map<String, Value>,
    inputs_known: bool,
) -> Result<ExecutionPlan, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    // A step-count bomb is refused before it is built.
    let max_steps = crate::limits::get().max_steps;
    let top_ids: HashSet<&str> = pipeline.steps.iter().map(|s| s.id.as_str()).collect();

    // Explicit dependencies must exist.
    for step in &pipeline.steps {
        for (i, dep) in step.depends_on.iter().enumerate() {
            if !top_ids.contains(dep.as_str()) {
                let mut ids: Vec<&str> =
                    top_ids.iter().copied().filter(|i| *i != step.id).collect();
                ids.sort_unstable();
                errors.push(
                    Diagnostic::new(
                        ErrorKind::UnknownDependency,
                        format!(
                            "depends on unknown step '{dep}'{}",
                            crate::compile::suggest(dep, ids.iter().copied())
                        ),
                    )
                    .at(step
                        .depends_on_pos
                        .get(i)
                        .copied()
                        .filter(|p| p.line > 0)
                        .unwrap_or(Pos {
                            line: step.line,
                            column: 1,
                        }))
                    .step(Some(&step.id)),
                );
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut steps = Vec::with_capacity(pipeline.steps.len());
    for (order, step) in pipeline.steps.iter().enumerate() {
        let mut deps: BTreeSet<String> = step.depends_on.iter().cloned().collect();
        for name in step_references(step) {
            if top_ids.contains(name.as_str()) {
                deps.insert(name);
            }
        }
        let kind = match &step.loop_spec {
            None => StepKind::Task,
            Some(LoopSpec::ForEach { .. }) => StepKind::ForEach,
            Some(LoopSpec::While { .. }) => StepKind::While,
        };
        steps.push(PlannedStep {
            id: step.id.clone(),
            kind,
            step: step.clone(),
            depends_on: order_like(&pipeline.steps, deps),
            scope: String::new(),
            order: order as u32,
            binding: None,
            iterations: 0,
        });
    }

    // A cycle among top-level steps is reported before any expansion.
    if let Some(cycle) = find_cycle(&steps) {
        let first = steps.iter().find(|s| s.id == cycle[0]);
        errors.push(
            Diagnostic::new(
                ErrorKind::Cycle,
                format!("dependency cycle: {}", cycle.join(" -> ")),
            )
            .at(Pos {
                line: first.map_or(0, |s| s.step.line),
                column: 1,
            })
            .step(Some(&cycle[0])),
        );
        return Err(errors);
    }

    // Loops whose items are known now expand now.
    let mut expanded = Vec::with_capacity(steps.len());
    let mut all_ids: HashSet<String> = steps.iter().map(|s| s.id.clone()).collect();
    for planned in steps {
        if planned.kind != StepKind::ForEach {
            expanded.push(planned);
            continue;
        }
        let items = static_items(&planned, &inputs, &top_ids, inputs_known);
        let body = match &planned.step.loop_spec {
            Some(LoopSpec::ForEach { steps, .. }) => body_size(steps).max(1),
            _ => 1,
        };
        if let Some(Ok(items)) = &items
            && expanded
                .len()
                .saturating_add(items.len().saturating_mul(body))
                > max_steps
        {
            errors.push(
                Diagnostic::new(
                    ErrorKind::InvalidLoop,
                    format!(
                        "the loop expands to {} steps ({} items x {body}); a pipeline may have at most {max_steps} (limits.max_steps)",
                        items.len().saturating_mul(body),
                        items.len()
                    ),
                )
                .at(Pos {
                    line: planned.step.line,
                    column: 1,
                })
                .step(Some(&planned.id)),
            );
            continue;
        }
        match items {
            Some(Ok(items)) => match expand_for_each(&planned, &items, &all_ids) {
                Ok(expansion) => {
                    for s in &expansion.steps {
                        all_ids.insert(s.id.clone());
                    }
                    expanded.extend(expansion.steps);
                    let mut join = planned;
                    join.kind = StepKind::Join;
                    join.iterations = items.len() as u32;
                    join.depends_on.extend(expansion.join_deps);
                    expanded.push(join);
                }
                Err(message) => errors.push(
                    Diagnostic::new(ErrorKind::InvalidLoop, message)
                        .at(Pos {
                            line: planned.step.line,
                            column: 1,
                        })
                        .step(Some(&planned.id)),
                ),
            },
            Some(Err(message)) => errors.push(
                Diagnostic::new(ErrorKind::InvalidLoop, message)
                    .at(Pos {
                        line: planned.step.line,
                        column: 1,
                    })
                    .step(Some(&planned.id)),
            ),
            None => expanded.push(planned),
        }
    }
    if errors.is_empty() && expanded.len() > max_steps {
        errors.push(Diagnostic::new(
            ErrorKind::InvalidLoop,
            format!(
                "the pipeline has {} steps; at most {max_steps} are allowed (limits.max_steps)",
                expanded.len()
            ),
        ));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let levels = levels(&expanded);
    Ok(ExecutionPlan {
        pipeline,
        inputs,
        steps: expanded,
        levels,
    })
}

/// Steps one iteration of a loop body adds, counting the iterations of
/// nested `for_each` loops whose items are written out (their steps and
/// joins); loops whose items come at run time count once here and are
/// counted again when they expand.
pub fn body_size(body: &[Step]) -> usize {
    body.iter()
        .map(|step| match &step.loop_spec {
            Some(LoopSpec::ForEach {
                items: LoopItems::Literal(items),
                steps,
                ..
            }) => items
                .len()
                .saturating_mul(body_size(steps))
                .saturating_add(1),
            _ => 1,
        })
        .fold(0usize, usize::saturating_add)
}

/// Keeps dependencies in document order (stable output for users).
fn order_like(steps: &[Step], deps: BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = steps
        .iter()
        .filter(|s| deps.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    for d in deps {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

/// Root names read by a step's templates, including (for loops) its body's.
pub fn step_references(step: &Step) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let add = |text: &str, names: &mut BTreeSet<String>| {
        if let Ok(found) = template::referenced_names(text) {
            names.extend(found);
        }
    };
    for value in step.parameters.values() {
        for_each_string(value, &mut |s| add(s, &mut names));
    }
    if let Some(c) = &step.condition {
        add(&condition_template(c), &mut names);
    }
    if let Some(l) = &step.location {
        add(l, &mut names);
    }
    match &step.loop_spec {
        Some(LoopSpec::ForEach { items, steps, .. }) => {
            match items {
                LoopItems::Template(t) => add(t, &mut names),
                LoopItems::Literal(list) => {
                    for v in list {
                        for_each_string(v, &mut |s| add(s, &mut names));
                    }
                }
            }
            let body_ids: HashSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
            for s in steps {
                names.extend(
                    step_references(s)
                        .into_iter()
                        .filter(|n| !body_ids.contains(n.as_str())),
                );
            }
        }
        Some(LoopSpec::While {
            condition,
            until,
            steps,
            ..
        }) => {
            add(&condition_template(condition), &mut names);
            if let Some(until) = until {
                add(&condition_template(until), &mut names);
            }
            let body_ids: HashSet<&str> = steps.iter().map(|s| s.id.as_str()).collect();
            for s in steps {
                names.extend(
                    step_references(s)
                        .into_iter()
                        .filter(|n| !body_ids.contains(n.as_str())),
                );
            }
        }
        None => {}
    }
    names
}

/// A condition as a template (a bare expression gets braces).
pub fn condition_template(condition: &str) -> String {
    if template::is_template(condition) || crate::auto::contains_tag(condition) {
        condition.to_string()
    } else {
        format!("{{{{ {condition} }}}}")
    }
}

fn for_each_string(value: &Value, f: &mut dyn FnMut(&str)) {
    match value {
        Value::String(s) if template::is_template(s) => f(s),
        Value::Array(items) => items.iter().for_each(|v| for_each_string(v, f)),
        Value::Object(map) => map.values().for_each(|v| for_each_string(v, f)),
        _ => {}
    }
}
