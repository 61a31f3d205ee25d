//! What needs every step read first: actions against the tool catalogue,
//! caller inputs against the declared ones, and the names templates use.

use super::*;

pub(super) fn collect_templates(node: &Node, pointer: &str, f: &mut dyn FnMut(&str, String, Pos)) {
    match &node.value {
        NodeValue::Str(s) => f(s, pointer.to_string(), node.pos),
        NodeValue::Seq(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_templates(item, &format!("{pointer}/{i}"), f);
            }
        }
        NodeValue::Map(entries) => {
            for (Key { name, .. }, v) in entries {
                collect_templates(v, &format!("{pointer}/{}", escape_pointer(name)), f);
            }
        }
        _ => {}
    }
}
pub(super) fn resolve_action(
    node: &Node,
    pointer: &str,
    tool: Option<&str>,
    action: Option<&str>,
    sid: Option<&str>,
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) -> Option<String> {
    let action_pos = node.get("action").map_or(node.pos, |n| n.pos);
    match tool {
        Some(tool) => {
            let tool_pos = node.get("tool").map_or(node.pos, |n| n.pos);
            let Some(actions) = options.catalog.actions(tool) else {
                let ids = options.catalog.tool_ids();
                if let Some(why) = options.catalog.unavailable(tool) {
                    cx.error(
                        ErrorKind::UnknownTool,
                        format!("tool '{tool}' {why}; available tools: {}", ids.join(", ")),
                        tool_pos,
                        sid,
                        &format!("{pointer}/tool"),
                    );
                    return None;
                }
                cx.error(
                    ErrorKind::UnknownTool,
                    format!(
                        "unknown tool '{tool}'{}; available tools: {}",
                        suggest(tool, ids.iter().map(String::as_str))
                            .split(';')
                            .next()
                            .unwrap_or_default(),
                        ids.join(", ")
                    ),
                    tool_pos,
                    sid,
                    &format!("{pointer}/tool"),
                );
                return None;
            };
            // The seed's form for tools whose action is a parameter: the
            // step says `action: execute` (or nothing) and
            // `parameters.action` names another of the tool's actions.
            // (Anything else is judged by `action` alone, below.)
            if matches!(action, None | Some("execute"))
                && let Some(chosen) = node
                    .get("parameters")
                    .and_then(|p| p.get("action"))
                    .and_then(Node::as_str)
            {
                let canonical = catalog::canonical_tool_action(tool, chosen);
                if canonical != "execute" && actions.iter().any(|x| x == canonical) {
                    return Some(canonical.to_string());
                }
            }
            match action {
                None if actions.len() == 1 => Some(actions[0].clone()),
                None => {
                    cx.error(
                        ErrorKind::MissingAction,
                        format!(
                            "tool '{tool}' needs an 'action'; choices: {}",
                            actions.join(", ")
                        ),
                        node.pos,
                        sid,
                        &format!("{pointer}/action"),
                    );
                    None
                }
                Some(a) => {
                    let canonical = catalog::canonical_tool_action(tool, a);
                    if actions.iter().any(|x| x == canonical) {
                        Some(canonical.to_string())
                    } else if actions.len() == 1 && a.trim().contains(char::is_whitespace) {
                        // The seed's pipelines sometimes describe the step in
                        // `action` ("Sleep for 5 seconds"); a tool with one
                        // action runs it, as the seed does. A single word
                        // that is no action (a typo) is still an error.
                        cx.warn(
                            ErrorKind::UnknownAction,
                            format!(
                                "'{a}' is not an action of tool '{tool}'; read as a description, its only action '{}' runs",
                                actions[0]
                            ),
                            action_pos,
                            sid,
                            &format!("{pointer}/action"),
                        );
                        Some(actions[0].clone())
                    } else {
                        cx.error(
                            ErrorKind::UnknownAction,
                            format!(
                                "tool '{tool}' has no action '{a}'; choices: {}",
                                actions.join(", ")
                            ),
                            action_pos,
                            sid,
                            &format!("{pointer}/action"),
                        );
                        None
                    }
                }
            }
        }
        None => match action {
            None => {
                cx.error(
                    ErrorKind::MissingAction,
                    format!(
                        "step needs a 'tool' and 'action', or a runtime action ({})",
                        catalog::RUNTIME_ACTIONS.join(", ")
                    ),
                    node.pos,
                    sid,
                    &format!("{pointer}/action"),
                );
                None
            }
            Some(a) => {
                let canonical = catalog::canonical_action(a);
                if catalog::RUNTIME_ACTIONS.contains(&canonical) {
                    if canonical == catalog::EVALUATE_CONDITION
                        && node.get("condition").is_none()
                        && node.get("if").is_none()
                    {
                        cx.error(
                            ErrorKind::MissingField,
                            "'evaluate_condition' needs a 'condition'",
                            action_pos,
                            sid,
                            &format!("{pointer}/condition"),
                        );
                        return None;
                    }
                    Some(canonical.to_string())
                } else {
                    let hint = if options.catalog.tool_ids().iter().any(|t| {
                        options
                            .catalog
                            .actions(t)
                            .is_some_and(|acts| acts.iter().any(|x| x == canonical))
                    }) {
                        " (tool actions need 'tool' too)"
                    } else {
                        ""
                    };
                    cx.error(
                        ErrorKind::UnknownAction,
                        format!(
                            "unknown action '{a}'{hint}; without 'tool' the choices are: {}",
                            catalog::RUNTIME_ACTIONS.join(", ")
                        ),
                        action_pos,
                        sid,
                        &format!("{pointer}/action"),
                    );
                    None
                }
            }
        },
    }
}
/// Merges defaults and caller values, checking types and required inputs.
pub(super) fn resolve_inputs(
    pipeline: &Pipeline,
    root: &Node,
    context: Option<&Map<String, Value>>,
    cx: &mut Cx,
) -> Map<String, Value> {
    let mut out = Map::new();
    let input_pos = |name: &str| {
        ["inputs", "parameters"]
            .iter()
            .filter_map(|k| root.get(k))
            .filter_map(|n| n.as_map())
            .flat_map(|m| m.iter())
            .find(|(k, _)| k.name == name)
            .map_or(Pos::default(), |(k, _)| k.pos)
    };
    for (name, spec) in &pipeline.inputs {
        let given = context.and_then(|c| c.get(name));
        match (given, &spec.default) {
            (Some(v), _) => {
                if let Some(kind) = spec.kind
                    && !kind.accepts(v)
                {
                    cx.error(
                        ErrorKind::InputType,
                        format!(
                            "input '{name}' must be of type {}, got {} {v}",
                            kind.as_str(),
                            json_type(v)
                        ),
                        input_pos(name),
                        None,
                        &format!("/inputs/{}", escape_pointer(name)),
                    );
                }
                out.insert(name.clone(), v.clone());
            }
            (None, Some(d)) if !(spec.required && d.is_null()) => {
                out.insert(name.clone(), d.clone());
            }
            (None, _) if spec.required && context.is_some() => {
                cx.error(
                    ErrorKind::MissingInput,
                    format!("required input '{name}' has no value and no default"),
                    input_pos(name),
                    None,
                    &format!("/inputs/{}", escape_pointer(name)),
                );
            }
            (None, _) => {
                if spec.required {
                    cx.warn(
                        ErrorKind::MissingInput,
                        format!(
                            "required input '{name}' has no default: every execution must supply it"
                        ),
                        input_pos(name),
                        None,
                        &format!("/inputs/{}", escape_pointer(name)),
                    );
                }
                out.insert(name.clone(), Value::Null);
            }
        }
    }
    if let Some(context) = context {
        for (k, v) in context {
            if !out.contains_key(k) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}
/// Parses every template and checks each name it reads.
pub(super) fn check_references(
    pipeline: &Pipeline,
    inputs: &Map<String, Value>,
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) {
    let step_ids: BTreeSet<&str> = pipeline.steps.iter().map(|s| s.id.as_str()).collect();
    let declared: HashSet<&str> = pipeline.inputs.keys().map(String::as_str).collect();
    for (name, pos) in &cx.step_pos {
        if declared.contains(name.as_str()) {
            cx.warnings.push(
                Diagnostic::new(
                    ErrorKind::UnknownReference,
                    format!("step id '{name}' hides the input of the same name in templates"),
                )
                .at(*pos)
                .step(Some(name)),
            );
        }
    }
    let sites = std::mem::take(&mut cx.templates);
    let mut reported: BTreeMap<(Option<String>, String), ()> = BTreeMap::new();
    for site in &sites {
        let names = match template::referenced_names(&site.text) {
            Ok(n) => n,
            Err(e) => {
                let pos = match e.line {
                    Some(l) if l > 1 => Pos {
                        line: site.pos.line + l as u32 - 1,
                        column: 1,
                    },
                    _ => site.pos,
                };
                cx.error(
                    ErrorKind::TemplateSyntax,
                    format!("template does not parse: {}", e.message),
                    pos,
                    site.step.as_deref(),
                    &site.pointer,
                );
                continue;
            }
        };
        for name in names {
            // A declared input without a value is reported once, as missing,
            // not again at every template that reads it.
            let known = step_ids.contains(name.as_str())
                || inputs.contains_key(&name)
                || declared.contains(name.as_str())
                || template::BUILTIN_NAMES.contains(&name.as_str())
                || site
                    .scope
                    .iter()
                    .any(|s| s.bindings.contains(&name.as_str()) || s.siblings.contains(&name));
            if known || reported.contains_key(&(site.step.clone(), name.clone())) {
                continue;
            }
            reported.insert((site.step.clone(), name.clone()), ());
            let mut candidates: Vec<&str> = step_ids
                .iter()
                .copied()
                .chain(inputs.keys().map(String::as_str))
                .collect();
            for s in &site.scope {
                candidates.extend(s.bindings.iter().copied());
                candidates.extend(s.siblings.iter().map(String::as_str));
            }
            let hint = suggest(&name, candidates.into_iter());
            let looks_like_step = site.text.contains(&format!("{name}.result"));
            if options.context.is_some() || looks_like_step {
                cx.error(
                    ErrorKind::UnknownReference,
                    format!(
                        "template refers to '{name}', which is neither a step, an input nor a built-in name{}",
                        hint
                    ),
                    site.pos,
                    site.step.as_deref(),
                    &site.pointer,
                );
            } else {
                cx.warn(
                    ErrorKind::UnknownReference,
                    format!("template refers to '{name}', which is not a declared input: every execution must supply it{hint}"),
                    site.pos,
                    site.step.as_deref(),
                    &site.pointer,
                );
            }
        }
    }
}
