//! `for_each` and `while` loops and their bodies.

use super::*;

#[allow(clippy::too_many_arguments)]
pub(super) fn read_loop(
    node: &Node,
    pointer: &str,
    scope: &[LoopScope],
    options: &CompileOptions<'_>,
    sid: Option<&str>,
    cx: &mut Cx,
    add: &mut AddTemplate<'_>,
) -> Option<LoopSpec> {
    let is_for_each = node.get("for_each").is_some();
    if is_for_each && let Some(u) = node.get("until") {
        cx.error(
            ErrorKind::InvalidLoop,
            "'until' ends a 'while' loop; a 'for_each' loop ends with its items",
            u.pos,
            sid,
            &format!("{pointer}/until"),
        );
    }
    let bindings: &'static [&'static str] = if is_for_each {
        template::FOR_EACH_NAMES
    } else {
        template::WHILE_NAMES
    };
    let body_ids: BTreeSet<String> = node
        .get("steps")
        .and_then(|s| match &s.value {
            NodeValue::Seq(items) => Some(
                items
                    .iter()
                    .filter_map(|i| i.get("id").and_then(Node::as_str).map(str::to_string))
                    .collect(),
            ),
            _ => None,
        })
        .unwrap_or_default();
    let mut inner_scope = scope.to_vec();
    inner_scope.push(LoopScope {
        bindings,
        siblings: body_ids.clone(),
    });

    let body = match node.get("steps") {
        None => {
            cx.error(
                ErrorKind::InvalidLoop,
                format!(
                    "a '{}' loop needs 'steps' to repeat",
                    if is_for_each { "for_each" } else { "while" }
                ),
                node.pos,
                sid,
                &format!("{pointer}/steps"),
            );
            None
        }
        Some(s) => read_steps(s, &format!("{pointer}/steps"), &inner_scope, options, cx),
    };

    if is_for_each {
        let f = node.get("for_each")?;
        let items = match &f.value {
            NodeValue::Seq(_) => {
                collect_templates(f, &format!("{pointer}/for_each"), &mut |text, ptr, pos| {
                    add(cx, text, ptr, pos, None)
                });
                match f.to_json() {
                    Value::Array(a) => Some(LoopItems::Literal(a)),
                    _ => None,
                }
            }
            NodeValue::Str(s) => {
                add(cx, s, format!("{pointer}/for_each"), f.pos, None);
                if template::is_template(s) {
                    Some(LoopItems::Template(s.clone()))
                } else {
                    // Read as the same text rendered by a template would
                    // be: a list written out (`[a, b]`, JSON or YAML), else
                    // lines or comma-separated items.
                    match plan::items_from_value(Value::String(s.clone())) {
                        Ok(list) => Some(LoopItems::Literal(list)),
                        Err(e) => {
                            cx.error(
                                ErrorKind::InvalidLoop,
                                e,
                                f.pos,
                                sid,
                                &format!("{pointer}/for_each"),
                            );
                            None
                        }
                    }
                }
            }
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!(
                        "'for_each' must be a list or a template that renders to one, found {}",
                        f.described()
                    ),
                    f.pos,
                    sid,
                    &format!("{pointer}/for_each"),
                );
                None
            }
        };
        let max_parallel = match node.get("max_parallel") {
            None => 1,
            Some(n) => positive_int(n).unwrap_or_else(|| {
                cx.error(
                    ErrorKind::InvalidValue,
                    "'max_parallel' must be an integer of at least 1",
                    n.pos,
                    sid,
                    &format!("{pointer}/max_parallel"),
                );
                1
            }),
        };
        Some(LoopSpec::ForEach {
            items: items?,
            max_parallel,
            steps: body?,
        })
    } else {
        // `while` alone, `until` alone (a loop that runs until it holds),
        // or both.
        let mut read_condition = |key: &str, cx: &mut Cx| -> Option<Option<String>> {
            let Some(w) = node.get(key) else {
                return Some(None);
            };
            let condition = match &w.value {
                NodeValue::Str(s) => s.clone(),
                NodeValue::Bool(b) => b.to_string(),
                _ => {
                    cx.error(
                        ErrorKind::InvalidType,
                        format!("'{key}' must be a condition"),
                        w.pos,
                        sid,
                        &format!("{pointer}/{key}"),
                    );
                    return None;
                }
            };
            let extra = LoopScope {
                bindings: template::WHILE_NAMES,
                // The condition sees the previous iteration's body steps.
                siblings: body_ids.clone(),
            };
            let cond_ptr = format!("{pointer}/{key}");
            if template::is_template(&condition) || crate::auto::contains_tag(&condition) {
                // An <AUTO> question is asked each time it is looked at.
                add(cx, &condition, cond_ptr, w.pos, Some(extra));
            } else if let Err(e) = template::expression_names(&condition) {
                cx.error(
                    ErrorKind::TemplateSyntax,
                    format!("condition '{condition}' does not parse: {}", e.message),
                    w.pos,
                    sid,
                    &cond_ptr,
                );
            } else {
                add(
                    cx,
                    &format!("{{{{ {condition} }}}}"),
                    cond_ptr,
                    w.pos,
                    Some(extra),
                );
            }
            Some(Some(condition))
        };
        let condition = read_condition("while", cx)?.unwrap_or_else(|| "true".to_string());
        let until = read_condition("until", cx)?;
        let max_iterations = match node.get("max_iterations") {
            None => 10,
            Some(n)
                if positive_int(n).is_some_and(|v| v as usize > crate::limits::get().max_steps) =>
            {
                cx.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "'max_iterations' may be at most {} (limits.max_steps)",
                        crate::limits::get().max_steps
                    ),
                    n.pos,
                    sid,
                    &format!("{pointer}/max_iterations"),
                );
                10
            }
            Some(n) => positive_int(n).unwrap_or_else(|| {
                cx.error(
                    ErrorKind::InvalidValue,
                    "'max_iterations' must be an integer of at least 1",
                    n.pos,
                    sid,
                    &format!("{pointer}/max_iterations"),
                );
                10
            }),
        };
        Some(LoopSpec::While {
            condition,
            until,
            max_iterations,
            steps: body?,
        })
    }
}
