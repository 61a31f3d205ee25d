//! A step's `on_error`: the seed's error handlers.

use super::step::StepReader;
use super::*;
use crate::model::ErrorHandler;

/// Keys of one handler, as the seed writes them.
const HANDLER_KEYS: &[&str] = &[
    "handler_action",
    "handler_task_id",
    "fallback_value",
    "error_types",
    "error_patterns",
    "error_codes",
    "priority",
    "retry_with_handler",
    "max_handler_retries",
    "propagate_error",
    "continue_on_handler_failure",
    "capture_error_context",
    "enabled",
    "log_level",
    "timeout",
];

impl StepReader<'_, '_> {
    /// `on_error`: a string (what to do, in words), one handler or a list of
    /// them. Returns the enabled handlers, lowest `priority` first, and how
    /// many more attempts `retry_with_handler` asks for.
    pub(super) fn on_error(&self, cx: &mut Cx) -> (Vec<ErrorHandler>, u32) {
        let Some(n) = self.node.get("on_error") else {
            return (Vec::new(), 0);
        };
        let items: Vec<(&Node, String)> = match &n.value {
            NodeValue::Seq(items) => items
                .iter()
                .enumerate()
                .map(|(i, item)| (item, format!("{}/{i}", self.at("on_error"))))
                .collect(),
            NodeValue::Null => return (Vec::new(), 0),
            _ => vec![(n, self.at("on_error"))],
        };
        let mut handlers = Vec::new();
        let mut retries = 0u32;
        for (item, pointer) in items {
            if let Some((handler, tries)) = self.handler(item, &pointer, cx) {
                retries = retries.max(tries);
                handlers.push(handler);
            }
        }
        handlers.sort_by_key(|h| h.priority);
        (handlers, retries)
    }

    fn handler(&self, n: &Node, pointer: &str, cx: &mut Cx) -> Option<(ErrorHandler, u32)> {
        let error = |cx: &mut Cx, message: String, at: &Node, ptr: String| {
            cx.error(ErrorKind::InvalidValue, message, at.pos, self.sid(), &ptr);
        };
        match &n.value {
            NodeValue::Str(s) if !s.trim().is_empty() => {
                return Some((
                    ErrorHandler {
                        action: Some(s.clone()),
                        ..ErrorHandler::default()
                    },
                    0,
                ));
            }
            NodeValue::Map(_) => {}
            _ => {
                error(
                    cx,
                    format!(
                        "an 'on_error' handler is a text saying what to do or a mapping \
                         (handler_action, handler_task_id, fallback_value, error_types, …); found {}",
                        n.described()
                    ),
                    n,
                    pointer.to_string(),
                );
                return None;
            }
        }
        let at = |key: &str| format!("{pointer}/{key}");
        if let NodeValue::Map(entries) = &n.value {
            for (k, v) in entries {
                if !HANDLER_KEYS.contains(&k.name.as_str()) {
                    cx.warn(
                        ErrorKind::InvalidValue,
                        format!(
                            "'on_error' handler key '{}' is not known and is ignored{}",
                            k.name,
                            suggest(&k.name, HANDLER_KEYS.iter().copied())
                        ),
                        v.pos,
                        self.sid(),
                        &at(&k.name),
                    );
                }
            }
        }
        let text = |key: &str, cx: &mut Cx| opt_string(n, key, self.sid(), pointer, cx);
        let list = |key: &str, cx: &mut Cx| -> Vec<String> {
            match n.get(key).map(|v| (v, &v.value)) {
                None | Some((_, NodeValue::Null)) => Vec::new(),
                Some((_, NodeValue::Seq(items))) => items
                    .iter()
                    .filter_map(|i| match &i.value {
                        NodeValue::Str(s) => Some(s.clone()),
                        NodeValue::Int(c) => Some(c.to_string()),
                        _ => None,
                    })
                    .collect(),
                Some((_, NodeValue::Str(s))) => vec![s.clone()],
                Some((v, _)) => {
                    cx.error(
                        ErrorKind::InvalidType,
                        format!("'{key}' must be a list, found {}", v.described()),
                        v.pos,
                        self.sid(),
                        &at(key),
                    );
                    Vec::new()
                }
            }
        };
        let flag = |key: &str, cx: &mut Cx| match n.get(key).map(|v| (v, &v.value)) {
            None | Some((_, NodeValue::Null)) => None,
            Some((_, NodeValue::Bool(b))) => Some(*b),
            Some((v, _)) => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!("'{key}' must be true or false, found {}", v.described()),
                    v.pos,
                    self.sid(),
                    &at(key),
                );
                None
            }
        };
        let action = text("handler_action", cx);
        let task = text("handler_task_id", cx);
        let fallback = n.get("fallback_value").map(Node::to_json);
        if action.is_none() && task.is_none() && fallback.is_none() {
            error(
                cx,
                "an 'on_error' handler needs handler_action, handler_task_id or fallback_value"
                    .into(),
                n,
                pointer.to_string(),
            );
        }
        if action.is_some() && task.is_some() {
            error(
                cx,
                "an 'on_error' handler has handler_action or handler_task_id, not both".into(),
                n,
                pointer.to_string(),
            );
        }
        let error_patterns = list("error_patterns", cx);
        for p in &error_patterns {
            if let Err(e) = regex::Regex::new(p) {
                let at_node = n.get("error_patterns").unwrap_or(n);
                error(
                    cx,
                    format!("error pattern '{p}' is not a regular expression: {e}"),
                    at_node,
                    at("error_patterns"),
                );
            }
        }
        let priority = match n.get("priority").map(|v| (v, &v.value)) {
            None | Some((_, NodeValue::Null)) => 0,
            Some((_, NodeValue::Int(p))) => *p,
            Some((v, _)) => {
                error(
                    cx,
                    format!("'priority' must be an integer, found {}", v.described()),
                    v,
                    at("priority"),
                );
                0
            }
        };
        let retries = if flag("retry_with_handler", cx) == Some(true) {
            match n.get("max_handler_retries") {
                None => 1,
                Some(v) => positive_int(v).unwrap_or_else(|| {
                    error(
                        cx,
                        "'max_handler_retries' must be an integer of at least 1".into(),
                        v,
                        at("max_handler_retries"),
                    );
                    1
                }),
            }
        } else {
            0
        };
        let propagate = flag("propagate_error", cx).unwrap_or(false);
        let enabled = flag("enabled", cx).unwrap_or(true);
        for key in ["continue_on_handler_failure", "capture_error_context"] {
            flag(key, cx);
        }
        let handler = ErrorHandler {
            action,
            task,
            fallback,
            error_types: list("error_types", cx),
            error_patterns,
            error_codes: list("error_codes", cx),
            priority,
            propagate,
        };
        enabled.then_some((handler, retries))
    }
}
