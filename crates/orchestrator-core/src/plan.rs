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
            condition, steps, ..
        }) => {
            add(&condition_template(condition), &mut names);
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
    if template::is_template(condition) {
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

/// The items of a `for_each` if they can be known before the run.
fn static_items(
    planned: &PlannedStep,
    inputs: &Map<String, Value>,
    step_ids: &HashSet<&str>,
    inputs_known: bool,
) -> Option<Result<Vec<Value>, String>> {
    let Some(LoopSpec::ForEach { items, .. }) = &planned.step.loop_spec else {
        return None;
    };
    let text = match items {
        LoopItems::Literal(list) => {
            let has_templates = list.iter().any(|v| {
                let mut found = false;
                for_each_string(v, &mut |_| found = true);
                found
            });
            if !has_templates {
                return Some(check_count(list.clone()));
            }
            None
        }
        LoopItems::Template(t) => Some(t),
    };
    // Known now only if every name is an input (not a step, not `execution`).
    let names: BTreeSet<String> = match text {
        Some(t) => template::referenced_names(t).ok()?,
        None => match items {
            LoopItems::Literal(list) => {
                let mut names = BTreeSet::new();
                for v in list {
                    for_each_string(v, &mut |s| {
                        if let Ok(n) = template::referenced_names(s) {
                            names.extend(n);
                        }
                    });
                }
                names
            }
            LoopItems::Template(_) => return None,
        },
    };
    let static_only = names.iter().all(|n| {
        !step_ids.contains(n.as_str())
            && (inputs.contains_key(n) || n == "inputs" || n == "parameters")
    });
    if !static_only {
        return None;
    }
    let mut scope = Scope::new();
    scope.set_inputs(inputs);
    let rendered = match items {
        LoopItems::Template(t) => template::render_string_value(t, &scope),
        LoopItems::Literal(list) => template::render_value(&Value::Array(list.clone()), &scope),
    };
    match rendered {
        Ok(v) => match items_from_value(v) {
            Ok(list) => Some(check_count(list)),
            Err(e) if inputs_known => Some(Err(e)),
            Err(_) => None,
        },
        Err(e) if inputs_known => Some(Err(format!(
            "for_each items cannot be rendered: {}",
            e.message
        ))),
        Err(_) => None,
    }
}

fn check_count(list: Vec<Value>) -> Result<Vec<Value>, String> {
    if list.len() > MAX_LOOP_ITEMS {
        Err(format!(
            "for_each has {} items; the limit is {MAX_LOOP_ITEMS}",
            list.len()
        ))
    } else {
        Ok(list)
    }
}

/// Interprets a rendered `for_each` value as a list of items: a list, a
/// JSON list in a string, lines, or comma-separated values; `null` is empty.
pub fn items_from_value(value: Value) -> Result<Vec<Value>, String> {
    match value {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(vec![]),
        Value::String(s) => {
            let t = s.trim();
            if t.is_empty() {
                return Ok(vec![]);
            }
            if t.starts_with('[')
                && let Ok(Value::Array(a)) = serde_json::from_str::<Value>(t)
            {
                return Ok(a);
            }
            let sep = if t.contains('\n') { '\n' } else { ',' };
            Ok(t.split(sep)
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.to_string()))
                .collect())
        }
        Value::Object(m) => Ok(m
            .into_iter()
            .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
            .collect()),
        other => Err(format!("for_each must render to a list, got {other}")),
    }
}

/// New steps for a loop and what its join must wait for.
#[derive(Debug, Clone, PartialEq)]
pub struct Expansion {
    pub steps: Vec<PlannedStep>,
    /// The last steps of every iteration.
    pub join_deps: Vec<String>,
}

/// Expands a `for_each` loop over `items`. `taken` holds the ids that exist.
pub fn expand_for_each(
    container: &PlannedStep,
    items: &[Value],
    taken: &HashSet<String>,
) -> Result<Expansion, String> {
    let Some(LoopSpec::ForEach {
        steps: body,
        max_parallel,
        ..
    }) = &container.step.loop_spec
    else {
        return Err(format!("step '{}' is not a for_each loop", container.id));
    };
    if items.len() > MAX_LOOP_ITEMS {
        return Err(format!(
            "for_each has {} items; the limit is {MAX_LOOP_ITEMS}",
            items.len()
        ));
    }
    let length = items.len();
    let mut out = Vec::new();
    let mut join_deps = Vec::new();
    let mut exits_by_iteration: Vec<Vec<String>> = Vec::with_capacity(length);
    for (index, item) in items.iter().enumerate() {
        let mut values = outer_values(container);
        values.insert("item".into(), item.clone());
        values.insert("index".into(), Value::from(index));
        values.insert("position".into(), Value::from(index + 1));
        values.insert("length".into(), Value::from(length));
        values.insert("is_first".into(), Value::Bool(index == 0));
        values.insert("is_last".into(), Value::Bool(index + 1 == length));
        let window = *max_parallel as usize;
        let after = if index >= window {
            exits_by_iteration[index - window].clone()
        } else {
            vec![]
        };
        let iteration = expand_iteration(container, body, index as u32, values, &after, taken)?;
        exits_by_iteration.push(iteration.join_deps.clone());
        join_deps.extend(iteration.join_deps);
        out.extend(iteration.steps);
    }
    Ok(Expansion {
        steps: out,
        join_deps,
    })
}

/// Expands iteration `iteration` of a `while` loop.
pub fn expand_while(
    container: &PlannedStep,
    iteration: u32,
    taken: &HashSet<String>,
) -> Result<Expansion, String> {
    let Some(LoopSpec::While { steps: body, .. }) = &container.step.loop_spec else {
        return Err(format!("step '{}' is not a while loop", container.id));
    };
    let mut values = outer_values(container);
    values.insert("iteration".into(), Value::from(iteration));
    expand_iteration(container, body, iteration, values, &[], taken)
}

fn outer_values(container: &PlannedStep) -> Map<String, Value> {
    container
        .binding
        .as_ref()
        .map(|b| b.values.clone())
        .unwrap_or_default()
}

fn expand_iteration(
    container: &PlannedStep,
    body: &[Step],
    iteration: u32,
    values: Map<String, Value>,
    after: &[String],
    taken: &HashSet<String>,
) -> Result<Expansion, String> {
    let prefix = format!("{}_{iteration}", container.id);
    let aliases: BTreeMap<String, String> = body
        .iter()
        .map(|s| (s.id.clone(), format!("{prefix}_{}", s.id)))
        .collect();
    for id in aliases.values() {
        if taken.contains(id) {
            return Err(format!(
                "loop step id '{id}' collides with an existing step"
            ));
        }
    }
    // Outer aliases stay visible (a nested loop body sees its parent's siblings).
    let mut all_aliases = container
        .binding
        .as_ref()
        .map(|b| b.aliases.clone())
        .unwrap_or_default();
    all_aliases.extend(aliases.clone());
    let binding = LoopBinding {
        loop_id: container.id.clone(),
        iteration,
        values,
        aliases: all_aliases,
    };

    let mut steps = Vec::with_capacity(body.len());
    let mut has_dependents: HashSet<String> = HashSet::new();
    for (order, step) in body.iter().enumerate() {
        let mut deps: BTreeSet<String> = BTreeSet::new();
        for d in &step.depends_on {
            if let Some(a) = aliases.get(d) {
                deps.insert(a.clone());
            } else {
                return Err(format!(
                    "step '{}' in loop '{}' depends on unknown step '{d}'",
                    step.id, container.id
                ));
            }
        }
        for name in step_references(step) {
            if let Some(a) = aliases.get(&name) {
                deps.insert(a.clone());
            }
        }
        if deps.is_empty() {
            deps.extend(after.iter().cloned());
        }
        has_dependents.extend(deps.iter().cloned());
        let kind = match &step.loop_spec {
            None => StepKind::Task,
            Some(LoopSpec::ForEach { .. }) => StepKind::ForEach,
            Some(LoopSpec::While { .. }) => StepKind::While,
        };
        steps.push(PlannedStep {
            id: aliases[&step.id].clone(),
            kind,
            step: step.clone(),
            depends_on: deps.into_iter().collect(),
            scope: prefix.clone(),
            order: order as u32,
            binding: Some(binding.clone()),
            iterations: 0,
        });
    }
    if let Some(cycle) = find_cycle(&steps) {
        return Err(format!(
            "dependency cycle in loop '{}': {}",
            container.id,
            cycle.join(" -> ")
        ));
    }
    let join_deps = steps
        .iter()
        .filter(|s| !has_dependents.contains(&s.id))
        .map(|s| s.id.clone())
        .collect();
    Ok(Expansion { steps, join_deps })
}

/// Returns one dependency cycle (`[a, b, a]`), starting at the earliest step.
pub fn find_cycle(steps: &[PlannedStep]) -> Option<Vec<String>> {
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len() * 2);
    let index: HashMap<&str, NodeIndex> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), graph.add_node(i)))
        .collect();
    for s in steps {
        let to = index[s.id.as_str()];
        for d in &s.depends_on {
            if let Some(&from) = index.get(d.as_str()) {
                graph.add_edge(from, to, ());
            }
        }
    }
    let mut best: Option<Vec<usize>> = None;
    for scc in tarjan_scc(&graph) {
        let is_cycle = scc.len() > 1 || graph.contains_edge(scc[0], scc[0]);
        if !is_cycle {
            continue;
        }
        let members: HashSet<NodeIndex> = scc.iter().copied().collect();
        let Some(&start) = scc.iter().min_by_key(|n| graph[**n]) else {
            continue;
        };
        // Follow dependencies (reverse edges) inside the component back to start.
        let path = cycle_path(&graph, start, &members);
        let candidate: Vec<usize> = path.iter().map(|n| graph[*n]).collect();
        if best.as_ref().is_none_or(|b| candidate[0] < b[0]) {
            best = Some(candidate);
        }
    }
    best.map(|p| p.into_iter().map(|i| steps[i].id.clone()).collect())
}

/// A shortest cycle through `start` inside one strongly connected component,
/// following "depends on" (so `a -> b` reads "a depends on b").
fn cycle_path(
    graph: &DiGraph<usize, ()>,
    start: NodeIndex,
    members: &HashSet<NodeIndex>,
) -> Vec<NodeIndex> {
    use petgraph::Direction::Incoming;
    let mut prev: HashMap<NodeIndex, NodeIndex> = HashMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    let neighbours = |n: NodeIndex| {
        let mut v: Vec<NodeIndex> = graph
            .neighbors_directed(n, Incoming)
            .filter(|m| members.contains(m))
            .collect();
        v.sort_by_key(|m| graph[*m]);
        v
    };
    while let Some(n) = queue.pop_front() {
        for m in neighbours(n) {
            if m == start {
                let mut path = vec![start];
                let mut cur = n;
                let mut back = vec![];
                while cur != start {
                    back.push(cur);
                    cur = prev[&cur];
                }
                back.reverse();
                path.extend(back);
                path.push(start);
                return path;
            }
            if let std::collections::hash_map::Entry::Vacant(e) = prev.entry(m) {
                e.insert(n);
                queue.push_back(m);
            }
        }
    }
    vec![start, start]
}

/// Execution levels: a step's level is one more than its deepest dependency's.
/// Within a level, steps keep plan order. Assumes no cycle.
pub fn levels(steps: &[PlannedStep]) -> Vec<Vec<String>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut level: Vec<Option<usize>> = vec![None; steps.len()];
    // Iterative depth-first evaluation (plans can be deep chains).
    for start in 0..steps.len() {
        if level[start].is_some() {
            continue;
        }
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if level[i].is_some() {
                continue;
            }
            let deps: Vec<usize> = steps[i]
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect();
            if expanded || deps.iter().all(|d| level[*d].is_some()) {
                let l = deps
                    .iter()
                    .filter_map(|d| level[*d])
                    .max()
                    .map_or(0, |m| m + 1);
                level[i] = Some(l);
            } else {
                stack.push((i, true));
                for d in deps {
                    if level[d].is_none() {
                        stack.push((d, false));
                    }
                }
            }
        }
    }
    let max = level.iter().flatten().max().copied().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); max];
    for (i, l) in level.iter().enumerate() {
        if let Some(l) = l {
            out[*l].push(steps[i].id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::OnFailure;

    fn step(id: &str, deps: &[&str]) -> PlannedStep {
        PlannedStep {
            id: id.into(),
            kind: StepKind::Task,
            step: Step {
                id: id.into(),
                tool: Some("echo".into()),
                action: "echo".into(),
                parameters: Map::new(),
                depends_on: vec![],
                depends_on_pos: vec![],
                condition: None,
                on_false: None,
                on_success: None,
                on_failure: OnFailure::Fail,
                timeout: None,
                retry: Default::default(),
                retry_explicit: false,
                loop_spec: None,
                model: None,
                requires_model: None,
                produces: None,
                location: None,
                format: None,
                line: 0,
            },
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            scope: String::new(),
            order: 0,
            binding: None,
            iterations: 0,
        }
    }

    #[test]
    fn levels_group_independent_steps() {
        let steps = vec![
            step("a", &[]),
            step("b", &[]),
            step("c", &["a", "b"]),
            step("d", &["c"]),
            step("e", &["a"]),
        ];
        assert_eq!(
            levels(&steps),
            vec![vec!["a", "b"], vec!["c", "e"], vec!["d"]]
        );
    }

    #[test]
    fn cycles_are_named_from_the_earliest_step() {
        let steps = vec![
            step("x", &[]),
            step("a", &["c"]),
            step("b", &["a"]),
            step("c", &["b"]),
        ];
        let cycle = find_cycle(&steps).expect("cycle");
        assert_eq!(cycle, vec!["a", "c", "b", "a"]);
        let steps = vec![step("a", &["a"])];
        assert_eq!(
            find_cycle(&steps),
            Some(vec!["a".to_string(), "a".to_string()])
        );
    }
}
