//! Loop expansion: the items of a `for_each` (known at compile time or
//! rendered at run time) and the iterations they become.

use super::*;

/// The items of a `for_each` if they can be known before the run.
pub(super) fn static_items(
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
            if t.starts_with('[') {
                // A list written out: JSON, or YAML flow style (`[a, 'b c']`).
                if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(t) {
                    return Ok(a);
                }
                if let Ok(node) = crate::yaml::parse(t)
                    && let Value::Array(a) = node.to_json()
                {
                    return Ok(a);
                }
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
