//! `<AUTO>` tags: finding them, and putting the answers in their place.

use super::*;

/// The `<AUTO>` tags of a pipeline (in `steps` and `model`), in document order.
pub fn find_auto_tags(root: &Node) -> Vec<auto::AutoTag> {
    fn walk(node: &Node, step: Option<String>, pointer: String, out: &mut Vec<auto::AutoTag>) {
        match &node.value {
            NodeValue::Str(s) if auto::contains_tag(s) => {
                out.extend(auto::find_tags(s, step.as_deref(), &pointer));
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    let step = step
                        .clone()
                        .or_else(|| item.get("id").and_then(Node::as_str).map(str::to_string));
                    walk(item, step, format!("{pointer}/{i}"), out);
                }
            }
            NodeValue::Map(entries) => {
                let child = crate::catalog::runs_child_pipeline(node);
                for (k, v) in entries {
                    if child && k.name == "parameters" {
                        walk_parameters(v, step.clone(), &format!("{pointer}/parameters"), out);
                        continue;
                    }
                    walk(
                        v,
                        step.clone(),
                        format!("{pointer}/{}", escape_pointer(&k.name)),
                        out,
                    );
                }
            }
            _ => {}
        }
    }
    /// A child pipeline's parameters: all but its text (its tags are its own).
    fn walk_parameters(
        node: &Node,
        step: Option<String>,
        pointer: &str,
        out: &mut Vec<auto::AutoTag>,
    ) {
        if let NodeValue::Map(entries) = &node.value {
            for (k, v) in entries.iter().filter(|(k, _)| k.name != "pipeline") {
                walk(
                    v,
                    step.clone(),
                    format!("{pointer}/{}", escape_pointer(&k.name)),
                    out,
                );
            }
        }
    }
    let mut out = Vec::new();
    if let NodeValue::Map(entries) = &root.value {
        for (k, v) in entries {
            if matches!(k.name.as_str(), "steps" | "model") {
                walk(v, None, format!("/{}", k.name), &mut out);
            }
        }
    }
    out
}
pub(super) fn resolve_auto_tags(root: &mut Node, options: &CompileOptions<'_>, cx: &mut Cx) {
    fn walk(
        node: &mut Node,
        step: Option<String>,
        pointer: String,
        options: &CompileOptions<'_>,
        cx: &mut Cx,
    ) {
        match &mut node.value {
            NodeValue::Str(s) if auto::contains_tag(s) => {
                let tags = auto::find_tags(s, step.as_deref(), &pointer);
                if tags.is_empty() {
                    return;
                }
                match options.auto_resolver {
                    // Checked now, answered later: a whole-value tag
                    // counts as absent (its slot may want a number), one
                    // inside a text stays as it is.
                    // Answered by its step when it runs.
                    Some(resolver) if tags.iter().any(|t| resolver.at_run_time(t)) => {}
                    Some(resolver) if resolver.defers() => {
                        if tags.len() == 1 && tags[0].whole_value {
                            let pos = node.pos;
                            *node = Node::from_json(&Value::Null);
                            node.pos = pos;
                        }
                    }
                    // Only validating: the tags are answered when the
                    // pipeline is executed.
                    None if options.context.is_none() => {
                        for tag in tags {
                            cx.warn(
                                ErrorKind::AutoTag,
                                format!(
                                    "<AUTO> tag '{}' is answered by a model when the pipeline is executed",
                                    tag.question
                                ),
                                node.pos,
                                step.as_deref(),
                                &pointer,
                            );
                        }
                    }
                    None => {
                        for tag in tags {
                            cx.error(
                                ErrorKind::AutoTag,
                                format!(
                                    "<AUTO> tag '{}' needs a model to resolve it, and none is available",
                                    tag.question
                                ),
                                node.pos,
                                step.as_deref(),
                                &pointer,
                            );
                        }
                    }
                    Some(resolver) => {
                        match auto::resolve_string(s, step.as_deref(), &pointer, resolver) {
                            Ok(value) => {
                                let pos = node.pos;
                                *node = Node::from_json(&value);
                                node.pos = pos;
                            }
                            Err(failure) => cx.error(
                                ErrorKind::AutoTag,
                                format!(
                                    "<AUTO> tag '{}' could not be resolved: {}",
                                    failure.0.question, failure.1
                                ),
                                node.pos,
                                step.as_deref(),
                                &pointer,
                            ),
                        }
                    }
                }
            }
            NodeValue::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    let step = step
                        .clone()
                        .or_else(|| item.get("id").and_then(Node::as_str).map(str::to_string));
                    walk(item, step, format!("{pointer}/{i}"), options, cx);
                }
            }
            NodeValue::Map(entries) => {
                let child = entries.iter().any(|(k, v)| {
                    k.name == "tool" && v.as_str() == Some(crate::catalog::PIPELINE_EXECUTOR)
                });
                for (k, v) in entries.iter_mut() {
                    if child && k.name == "parameters" {
                        // A child pipeline's text is its own.
                        if let NodeValue::Map(params) = &mut v.value {
                            for (pk, pv) in
                                params.iter_mut().filter(|(pk, _)| pk.name != "pipeline")
                            {
                                walk(
                                    pv,
                                    step.clone(),
                                    format!("{pointer}/parameters/{}", escape_pointer(&pk.name)),
                                    options,
                                    cx,
                                );
                            }
                        }
                        continue;
                    }
                    walk(
                        v,
                        step.clone(),
                        format!("{pointer}/{}", escape_pointer(&k.name)),
                        options,
                        cx,
                    );
                }
            }
            _ => {}
        }
    }
    if let NodeValue::Map(entries) = &mut root.value {
        for (k, v) in entries.iter_mut() {
            if matches!(k.name.as_str(), "steps" | "model") {
                walk(v, None, format!("/{}", k.name), options, cx);
            }
        }
    }
}
