//! The pipeline's top level: its keys, its inputs, its list of steps and the
//! jumps between them.

use super::*;

pub(super) const PIPELINE_KEYS: &[&str] = &[
    "name",
    "id",
    "version",
    "description",
    "metadata",
    "parameters",
    "inputs",
    "outputs",
    "model",
    "steps",
];
pub(super) fn read_pipeline(
    root: &Node,
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) -> Option<Pipeline> {
    let Some(entries) = root.as_map() else {
        let what = if matches!(root.value, NodeValue::Null) {
            "the pipeline is empty".to_string()
        } else {
            format!("a pipeline must be a mapping, found {}", root.described())
        };
        cx.error(ErrorKind::NotAMapping, what, root.pos, None, "");
        return None;
    };
    for (k, _) in entries {
        if !PIPELINE_KEYS.contains(&k.name.as_str()) {
            cx.warn(
                ErrorKind::InvalidValue,
                format!("unknown key '{}' is ignored", k.name),
                k.pos,
                None,
                &format!("/{}", escape_pointer(&k.name)),
            );
        }
    }

    let name = match root.get("name") {
        None => {
            cx.error(
                ErrorKind::MissingField,
                "the pipeline needs a 'name'",
                root.pos,
                None,
                "/name",
            );
            None
        }
        Some(n) => match n.as_str() {
            Some(s) if !s.trim().is_empty() => Some(s.to_string()),
            Some(_) => {
                cx.error(
                    ErrorKind::InvalidValue,
                    "'name' must not be empty",
                    n.pos,
                    None,
                    "/name",
                );
                None
            }
            None => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!("'name' must be a string, found {}", n.described()),
                    n.pos,
                    None,
                    "/name",
                );
                None
            }
        },
    };
    let id = match root.get("id") {
        None => None,
        Some(n) => match n.as_str() {
            Some(s) if is_valid_id(s) => Some(s.to_string()),
            Some(s) => {
                cx.error(
                    ErrorKind::InvalidId,
                    format!("pipeline id '{s}' must match ^[A-Za-z][A-Za-z0-9_-]*$"),
                    n.pos,
                    None,
                    "/id",
                );
                None
            }
            None => {
                cx.error(
                    ErrorKind::InvalidType,
                    "'id' must be a string",
                    n.pos,
                    None,
                    "/id",
                );
                None
            }
        },
    };
    let version = root.get("version").and_then(|n| {
        let text = match &n.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Float(f) => f.to_string(),
            NodeValue::Int(i) => i.to_string(),
            _ => String::new(),
        };
        if version_regex().is_match(&text) {
            Some(text)
        } else {
            cx.error(
                ErrorKind::InvalidValue,
                format!("version '{text}' must look like \"MAJOR.MINOR.PATCH\""),
                n.pos,
                None,
                "/version",
            );
            None
        }
    });
    let description = opt_string(root, "description", None, "", cx);
    let metadata = root
        .get("metadata")
        .map(Node::to_json)
        .unwrap_or(Value::Null);
    let model = opt_string(root, "model", None, "", cx);

    let mut inputs = IndexMap::new();
    for key in ["inputs", "parameters"] {
        if let Some(node) = root.get(key) {
            read_inputs(node, key, &mut inputs, cx);
        }
    }

    let mut outputs = IndexMap::new();
    if let Some(node) = root.get("outputs") {
        match &node.value {
            NodeValue::Map(entries) => {
                for (k, v) in entries {
                    let pointer = format!("/outputs/{}", escape_pointer(&k.name));
                    let text = match &v.value {
                        NodeValue::Str(s) => s.clone(),
                        _ => v.to_json().to_string(),
                    };
                    if template::is_template(&text) {
                        cx.templates.push(TemplateSite {
                            text: text.clone(),
                            step: None,
                            pointer: pointer.clone(),
                            pos: v.pos,
                            scope: vec![],
                        });
                    }
                    outputs.insert(k.name.clone(), text);
                }
            }
            NodeValue::Null => {}
            _ => cx.error(
                ErrorKind::InvalidType,
                format!("'outputs' must be a mapping, found {}", node.described()),
                node.pos,
                None,
                "/outputs",
            ),
        }
    }

    let steps = match root.get("steps") {
        None => {
            cx.error(
                ErrorKind::MissingField,
                "the pipeline needs 'steps'",
                root.pos,
                None,
                "/steps",
            );
            None
        }
        Some(node) => read_steps(node, "/steps", &[], options, cx),
    };

    // Even without a valid name, the steps are checked further.
    let name = name.unwrap_or_default();
    steps.map(|steps| Pipeline {
        id: id.unwrap_or_else(|| name.clone()),
        name,
        version,
        description,
        metadata,
        inputs,
        outputs,
        model,
        steps,
    })
}
pub(super) fn read_inputs(
    node: &Node,
    key: &str,
    inputs: &mut IndexMap<String, InputSpec>,
    cx: &mut Cx,
) {
    let entries = match &node.value {
        NodeValue::Map(e) => e,
        NodeValue::Null => return,
        _ => {
            cx.error(
                ErrorKind::InvalidType,
                format!("'{key}' must be a mapping, found {}", node.described()),
                node.pos,
                None,
                &format!("/{key}"),
            );
            return;
        }
    };
    for (k, v) in entries {
        let pointer = format!("/{key}/{}", escape_pointer(&k.name));
        let is_spec = v.as_map().is_some_and(|m| {
            !m.is_empty()
                && m.iter().all(|(mk, _)| {
                    matches!(
                        mk.name.as_str(),
                        "type" | "default" | "description" | "required" | "enum" | "example"
                    )
                })
                && m.iter()
                    .any(|(mk, _)| matches!(mk.name.as_str(), "type" | "default" | "required"))
        });
        let spec = if is_spec {
            let mut spec = InputSpec {
                kind: None,
                default: v.get("default").map(Node::to_json),
                description: v
                    .get("description")
                    .and_then(Node::as_str)
                    .map(str::to_string),
                required: false,
            };
            if let Some(t) = v.get("type") {
                match t.as_str().and_then(InputType::parse) {
                    Some(kind) => spec.kind = Some(kind),
                    None => cx.error(
                        ErrorKind::InvalidInput,
                        format!(
                            "input '{}' has unknown type {}; use one of string, integer, number, boolean, array, object",
                            k.name,
                            t.to_json()
                        ),
                        t.pos,
                        None,
                        &format!("{pointer}/type"),
                    ),
                }
            }
            if let Some(r) = v.get("required") {
                match r.value {
                    NodeValue::Bool(b) => spec.required = b,
                    _ => cx.error(
                        ErrorKind::InvalidType,
                        format!("'required' of input '{}' must be true or false", k.name),
                        r.pos,
                        None,
                        &format!("{pointer}/required"),
                    ),
                }
            }
            // A default that is itself an input declaration: the same name
            // declared under both `parameters` and `inputs`, the second
            // pointing at the first with a YAML alias (`default: *id001`).
            // The declaration's own default and type are meant (the
            // second declaration's type is often a generated `string`).
            if let Some(Value::Object(nested)) = &spec.default
                && is_declaration(nested)
            {
                if let Some(kind) = nested
                    .get("type")
                    .and_then(Value::as_str)
                    .and_then(InputType::parse)
                {
                    spec.kind = Some(kind);
                }
                cx.warn(
                    ErrorKind::InvalidInput,
                    format!(
                        "the default of input '{}' is an input declaration (declared twice?); its default and type are used",
                        k.name
                    ),
                    v.get("default").map_or(v.pos, |d| d.pos),
                    None,
                    &format!("{pointer}/default"),
                );
                spec.default = nested.get("default").cloned();
            }
            // A number or boolean given as the default of a text input is
            // that text (the seed does not check; nothing is lost).
            if spec.kind == Some(InputType::String)
                && let Some(d @ (Value::Number(_) | Value::Bool(_))) = &spec.default
            {
                let text = d.to_string();
                cx.warn(
                    ErrorKind::InvalidInput,
                    format!(
                        "the default of input '{}' is {} but the input is a string; it is used as \"{text}\"",
                        k.name,
                        json_type(d)
                    ),
                    v.get("default").map_or(v.pos, |d| d.pos),
                    None,
                    &format!("{pointer}/default"),
                );
                spec.default = Some(Value::String(text));
            }
            if let (Some(kind), Some(default)) = (spec.kind, &spec.default)
                && !default.is_null()
                && !kind.accepts(default)
            {
                let pos = v.get("default").map_or(v.pos, |d| d.pos);
                cx.error(
                    ErrorKind::InvalidInput,
                    format!(
                        "default of input '{}' must be of type {}, found {}",
                        k.name,
                        kind.as_str(),
                        json_type(default)
                    ),
                    pos,
                    None,
                    &format!("{pointer}/default"),
                );
            }
            spec
        } else {
            InputSpec {
                kind: None,
                default: Some(v.to_json()),
                description: None,
                required: false,
            }
        };
        if inputs.insert(k.name.clone(), spec).is_some() {
            cx.warn(
                ErrorKind::InvalidInput,
                format!(
                    "input '{}' is declared in both 'inputs' and 'parameters'; the later one wins",
                    k.name
                ),
                k.pos,
                None,
                &pointer,
            );
        }
    }
}
pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
pub(super) fn read_steps(
    node: &Node,
    base: &str,
    scope: &[LoopScope],
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) -> Option<Vec<Step>> {
    let items = match &node.value {
        NodeValue::Seq(items) if !items.is_empty() => items,
        NodeValue::Seq(_) | NodeValue::Null => {
            cx.error(
                ErrorKind::MissingField,
                "'steps' must list at least one step",
                node.pos,
                None,
                base,
            );
            return None;
        }
        _ => {
            cx.error(
                ErrorKind::InvalidType,
                format!("'steps' must be a list, found {}", node.described()),
                node.pos,
                None,
                base,
            );
            return None;
        }
    };
    // Ids first, so body templates know their siblings.
    let siblings: BTreeSet<String> = items
        .iter()
        .filter_map(|i| i.get("id").and_then(Node::as_str).map(str::to_string))
        .collect();
    let mut seen: HashMap<String, Pos> = HashMap::new();
    let mut steps = Vec::new();
    let mut nodes: Vec<(usize, &Node)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let pointer = format!("{base}/{i}");
        if let Some(id_node) = item.get("id")
            && let Some(id) = id_node.as_str()
        {
            if let Some(first) = seen.get(id) {
                cx.error(
                    ErrorKind::DuplicateId,
                    format!("step id '{id}' is already used at line {}", first.line),
                    id_node.pos,
                    Some(id),
                    &format!("{pointer}/id"),
                );
            } else {
                seen.insert(id.to_string(), id_node.pos);
                if scope.is_empty() {
                    cx.step_pos.insert(id.to_string(), id_node.pos);
                }
            }
        }
        if let Some(step) = read_step(item, &pointer, scope, &siblings, options, cx) {
            steps.push(step);
            nodes.push((i, item));
        }
    }
    // Jumps are checked within one list of steps: forward only.
    check_jumps(&steps, &nodes, base, cx);
    Some(steps)
}
pub(super) fn check_jumps(steps: &[Step], nodes: &[(usize, &Node)], base: &str, cx: &mut Cx) {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let (item_index, node) = nodes[i];
        // The seed's `goto` is `on_success` written another way.
        let success_key = if node.get("on_success").is_none() && node.get("goto").is_some() {
            "goto"
        } else {
            "on_success"
        };
        let mut targets = vec![
            ("on_false", step.on_false.as_deref()),
            (success_key, step.on_success.as_deref()),
            (
                "on_failure",
                match &step.on_failure {
                    OnFailure::Goto(t) => Some(t.as_str()),
                    _ => None,
                },
            ),
        ];
        targets.extend(
            step.on_error
                .iter()
                .filter_map(|h| h.task.as_deref())
                .map(|t| ("on_error", Some(t))),
        );
        for (key, target) in targets {
            let Some(target) = target else { continue };
            let pos = node.get(key).map_or(node.pos, |n| n.pos);
            let pointer = format!("{base}/{item_index}/{key}");
            match index.get(target) {
                None => {
                    let choices: Vec<&str> = steps[i + 1..].iter().map(|s| s.id.as_str()).collect();
                    cx.error(
                        ErrorKind::UnknownJumpTarget,
                        format!(
                            "'{key}' jumps to unknown step '{target}'{}",
                            suggest(target, choices.iter().copied())
                        ),
                        pos,
                        Some(&step.id),
                        &pointer,
                    );
                }
                Some(&j) if j <= i => cx.error(
                    ErrorKind::BackwardJump,
                    format!(
                        "'{key}' must jump forward, but '{target}' does not come after '{}'",
                        step.id
                    ),
                    pos,
                    Some(&step.id),
                    &pointer,
                ),
                Some(_) => {}
            }
        }
    }
}

/// Whether a mapping reads as an input declaration: only declaration keys,
/// among them `type` or `default`.
fn is_declaration(m: &Map<String, Value>) -> bool {
    !m.is_empty()
        && m.keys().all(|k| {
            matches!(
                k.as_str(),
                "type" | "default" | "description" | "required" | "enum" | "example"
            )
        })
        && (m.contains_key("type") || m.contains_key("default"))
}
