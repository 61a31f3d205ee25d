//! One step, read one key at a time.

use super::*;

pub(super) const STEP_KEYS: &[&str] = &[
    "id",
    "name",
    "description",
    "tool",
    "action",
    "parameters",
    "depends_on",
    "dependencies",
    "condition",
    "if",
    "on_false",
    "on_success",
    "goto",
    "on_failure",
    "on_error",
    "timeout",
    "max_retries",
    "retry",
    "for_each",
    "while",
    "until",
    "steps",
    "max_parallel",
    "max_iterations",
    "produces",
    "location",
    "format",
    "model",
    "requires_model",
    "metadata",
    "tags",
    "continue_on_error",
    "add_completion_task",
];

pub(super) fn read_step(
    node: &Node,
    pointer: &str,
    scope: &[LoopScope],
    siblings: &BTreeSet<String>,
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) -> Option<Step> {
    if node.as_map().is_none() {
        cx.error(
            ErrorKind::NotAMapping,
            format!("a step must be a mapping, found {}", node.described()),
            node.pos,
            None,
            pointer,
        );
        return None;
    }
    let r = StepReader {
        node,
        pointer,
        id: read_step_id(node, pointer, cx),
        scope,
        siblings,
        options,
    };
    r.unknown_keys(cx);
    let parameters = r.parameters(cx);
    let (depends_on, depends_on_pos) = r.depends_on(cx);
    let condition = r.condition(cx);
    let on_false = r.string(cx, "on_false");
    let on_success = r.on_success(cx);
    let on_failure = r.on_failure(cx);
    let timeout = r.timeout(cx);
    let (on_error, handler_retries) = r.on_error(cx);
    let (mut retry, retry_explicit) = r.retry(cx, &on_failure);
    // `retry_with_handler`: the step is tried again before a handler takes
    // its failure.
    if handler_retries > 0 && !retry_explicit {
        retry.max_attempts = retry.max_attempts.max(1 + handler_retries);
    }
    let is_loop = ["for_each", "while", "until"]
        .iter()
        .any(|k| r.node.get(k).is_some());
    let loop_spec = r.loop_spec(cx);
    let (tool, action) = r.tool_and_action(cx, is_loop);
    let location = r.location(cx);
    let model = r.string(cx, "model");
    let requires_model = r.requires_model(cx);
    let produces = r.string(cx, "produces");
    let format = r.string(cx, "format");
    Some(Step {
        id: r.id?,
        tool,
        action,
        parameters,
        depends_on,
        depends_on_pos,
        condition,
        on_false,
        on_success,
        on_failure,
        on_error,
        timeout,
        retry,
        retry_explicit,
        loop_spec,
        model,
        requires_model,
        produces,
        location,
        format,
        line: node.pos.line,
    })
}
/// A step's `id`: present, a string, well-formed and not reserved.
pub(super) fn read_step_id(node: &Node, pointer: &str, cx: &mut Cx) -> Option<String> {
    let pointer = format!("{pointer}/id");
    let Some(n) = node.get("id") else {
        cx.error(
            ErrorKind::MissingField,
            "step needs an 'id'",
            node.pos,
            None,
            &pointer,
        );
        return None;
    };
    match n.as_str() {
        Some(s) if !is_valid_id(s) => {
            cx.error(
                ErrorKind::InvalidId,
                format!("step id '{s}' must match ^[A-Za-z][A-Za-z0-9_-]*$"),
                n.pos,
                Some(s),
                &pointer,
            );
            None
        }
        Some(s) if RESERVED_IDS.contains(&s) => {
            cx.error(
                ErrorKind::ReservedId,
                format!(
                    "step id '{s}' is reserved (fail, continue, skip and retry are on_failure modes)"
                ),
                n.pos,
                Some(s),
                &pointer,
            );
            None
        }
        Some(s) => Some(s.to_string()),
        None => {
            cx.error(
                ErrorKind::InvalidType,
                format!("step id must be a string, found {}", n.described()),
                n.pos,
                None,
                &pointer,
            );
            None
        }
    }
}
/// Reads one step mapping, one key (or family of keys) per method; each
/// reports its own problems at its own place.
pub(super) struct StepReader<'a, 'o> {
    pub(super) node: &'a Node,
    pub(super) pointer: &'a str,
    id: Option<String>,
    /// Enclosing loops (their bindings and body siblings).
    scope: &'a [LoopScope],
    /// Ids of the steps beside this one (in a loop body, visible to it).
    siblings: &'a BTreeSet<String>,
    options: &'a CompileOptions<'o>,
}
impl StepReader<'_, '_> {
    pub(super) fn sid(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub(super) fn at(&self, key: &str) -> String {
        format!("{}/{key}", self.pointer)
    }

    /// Keys no step has: a warning each (the step still compiles).
    fn unknown_keys(&self, cx: &mut Cx) {
        for (k, _) in self.node.as_map().into_iter().flatten() {
            if !STEP_KEYS.contains(&k.name.as_str()) {
                cx.warn(
                    ErrorKind::InvalidValue,
                    format!("unknown step key '{}' is ignored", k.name),
                    k.pos,
                    self.sid(),
                    &self.at(&escape_pointer(&k.name)),
                );
            }
        }
    }

    /// Records a template found in this step, to be checked against the
    /// names visible here once every step is read.
    fn template(&self, cx: &mut Cx, text: &str, ptr: String, pos: Pos, extra: Option<LoopScope>) {
        if !template::is_template(text) {
            return;
        }
        let mut scope = self.scope.to_vec();
        if let Some(last) = scope.last_mut() {
            // Inside a body, its siblings are visible.
            last.siblings.extend(self.siblings.iter().cloned());
        }
        scope.extend(extra);
        cx.templates.push(TemplateSite {
            text: text.to_string(),
            step: self.id.clone(),
            pointer: ptr,
            pos,
            scope,
        });
    }

    /// An optional string key.
    fn string(&self, cx: &mut Cx, key: &str) -> Option<String> {
        opt_string(self.node, key, self.sid(), self.pointer, cx)
    }

    /// `parameters`: a mapping, its templates recorded.
    fn parameters(&self, cx: &mut Cx) -> Map<String, Value> {
        let Some(p) = self.node.get("parameters") else {
            return Map::new();
        };
        match &p.value {
            NodeValue::Map(entries) => {
                let child = crate::catalog::runs_child_pipeline(self.node);
                for (k, v) in entries {
                    // A child pipeline's text is its own.
                    if child && k.name == "pipeline" {
                        continue;
                    }
                    let at = format!("{}/{}", self.at("parameters"), escape_pointer(&k.name));
                    collect_templates(v, &at, &mut |text, ptr, pos| {
                        self.template(cx, text, ptr, pos, None);
                    });
                }
                match p.to_json() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                }
            }
            NodeValue::Null => Map::new(),
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!("'parameters' must be a mapping, found {}", p.described()),
                    p.pos,
                    self.sid(),
                    &self.at("parameters"),
                );
                Map::new()
            }
        }
    }

    /// `depends_on` (or `dependencies`): a list of step ids or a
    /// comma-separated string; each id with where it was written.
    fn depends_on(&self, cx: &mut Cx) -> (Vec<String>, Vec<Pos>) {
        let key = if self.node.get("depends_on").is_some() {
            "depends_on"
        } else {
            "dependencies"
        };
        let mut ids = Vec::new();
        let mut places = Vec::new();
        let Some(d) = self.node.get(key) else {
            return (ids, places);
        };
        match &d.value {
            NodeValue::Str(s) => {
                for dep in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    ids.push(dep.to_string());
                    places.push(d.pos);
                }
            }
            NodeValue::Seq(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) => {
                            ids.push(s.to_string());
                            places.push(item.pos);
                        }
                        None => cx.error(
                            ErrorKind::InvalidType,
                            format!(
                                "'{key}' entries must be step ids, found {}",
                                item.described()
                            ),
                            item.pos,
                            self.sid(),
                            &self.at(key),
                        ),
                    }
                }
            }
            NodeValue::Null => {}
            _ => cx.error(
                ErrorKind::InvalidType,
                format!("'{key}' must be a list of step ids or a comma-separated string"),
                d.pos,
                self.sid(),
                &self.at(key),
            ),
        }
        (ids, places)
    }

    /// `condition` (or `if`): a template or an expression.
    fn condition(&self, cx: &mut Cx) -> Option<String> {
        let key = if self.node.get("condition").is_some() {
            "condition"
        } else {
            "if"
        };
        let c = self.node.get(key)?;
        let text = match &c.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Null => return None,
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!(
                        "'{key}' must be a template or expression, found {}",
                        c.described()
                    ),
                    c.pos,
                    self.sid(),
                    &self.at(key),
                );
                return None;
            }
        };
        check_condition(
            &text,
            c.pos,
            self.sid(),
            &self.at(key),
            cx,
            &mut |cx, text, ptr, pos, extra| self.template(cx, text, ptr, pos, extra),
        );
        Some(text)
    }

    /// `on_success`, or the seed's `goto` (the same jump: once the step
    /// succeeds, go to that step).
    fn on_success(&self, cx: &mut Cx) -> Option<String> {
        let on_success = self.string(cx, "on_success");
        let goto = self.string(cx, "goto");
        if let (Some(_), Some(_), Some(n)) = (&on_success, &goto, self.node.get("goto")) {
            cx.error(
                ErrorKind::InvalidValue,
                "'goto' and 'on_success' are the same jump: write one",
                n.pos,
                self.sid(),
                &self.at("goto"),
            );
        }
        on_success.or(goto)
    }

    /// `on_failure`: a mode, or the id of a step to go to. The seed's
    /// `continue_on_error: true` is `on_failure: continue`.
    fn on_failure(&self, cx: &mut Cx) -> OnFailure {
        let continue_on_error = self.flag(cx, "continue_on_error");
        match self.string(cx, "on_failure").as_deref() {
            None if continue_on_error == Some(true) => OnFailure::Continue,
            None | Some("fail") => OnFailure::Fail,
            Some("continue") => OnFailure::Continue,
            Some("skip") => OnFailure::Skip,
            Some("retry") => OnFailure::Retry,
            Some(target) => OnFailure::Goto(target.to_string()),
        }
    }

    /// An optional boolean key.
    fn flag(&self, cx: &mut Cx, key: &str) -> Option<bool> {
        let n = self.node.get(key)?;
        match n.value {
            NodeValue::Bool(b) => Some(b),
            NodeValue::Null => None,
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!("'{key}' must be true or false, found {}", n.described()),
                    n.pos,
                    self.sid(),
                    &self.at(key),
                );
                None
            }
        }
    }

    /// `timeout`: whole seconds, at least 1.
    fn timeout(&self, cx: &mut Cx) -> Option<u64> {
        let t = self.node.get("timeout")?;
        match &t.value {
            NodeValue::Int(i) if *i >= 1 => Some(*i as u64),
            NodeValue::Float(f) if *f >= 1.0 && f.fract() == 0.0 => Some(*f as u64),
            NodeValue::Null => None,
            _ => {
                cx.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "'timeout' must be a whole number of seconds, at least 1; found {}",
                        t.to_json()
                    ),
                    t.pos,
                    self.sid(),
                    &self.at("timeout"),
                );
                None
            }
        }
    }

    /// `max_retries` and `retry`; whether either was written.
    fn retry(&self, cx: &mut Cx, on_failure: &OnFailure) -> (RetryPolicy, bool) {
        let mut retry = RetryPolicy::default();
        let mut explicit = false;
        if let Some(m) = self.node.get("max_retries") {
            explicit = true;
            match positive_int(m) {
                Some(n) => retry.max_attempts = n,
                None => cx.error(
                    ErrorKind::InvalidValue,
                    format!(
                        "'max_retries' is the total number of attempts, an integer of at least 1; found {}",
                        m.to_json()
                    ),
                    m.pos,
                    self.sid(),
                    &self.at("max_retries"),
                ),
            }
        }
        if let Some(r) = self.node.get("retry") {
            explicit = true;
            read_retry(r, &mut retry, self.sid(), &self.at("retry"), cx);
        }
        if *on_failure == OnFailure::Retry && retry.max_attempts < 2 {
            retry.max_attempts = RetryPolicy::default().max_attempts;
        }
        (retry, explicit)
    }

    /// `for_each` or `while` with their `steps`; loop keys elsewhere are
    /// reported.
    fn loop_spec(&self, cx: &mut Cx) -> Option<LoopSpec> {
        let node = self.node;
        let has_for_each = node.get("for_each").is_some();
        // `until` on a `for_each` is reported by the loop reader.
        let has_while =
            node.get("while").is_some() || (node.get("until").is_some() && !has_for_each);
        if has_for_each && has_while {
            cx.error(
                ErrorKind::InvalidLoop,
                "a step cannot have both 'for_each' and 'while'",
                node.pos,
                self.sid(),
                self.pointer,
            );
            return None;
        }
        if has_for_each || has_while {
            // The seed's `add_completion_task`: a loop step here always
            // finishes after its iterations (it is their join).
            self.flag(cx, "add_completion_task");
            return read_loop(
                node,
                self.pointer,
                self.scope,
                self.options,
                self.sid(),
                cx,
                &mut |cx, text, ptr, pos, extra| self.template(cx, text, ptr, pos, extra),
            );
        }
        if let Some(s) = node.get("steps") {
            cx.error(
                ErrorKind::InvalidLoop,
                "'steps' inside a step needs 'for_each' or 'while'",
                s.pos,
                self.sid(),
                &self.at("steps"),
            );
        }
        for key in ["max_parallel", "max_iterations", "add_completion_task"] {
            if let Some(n) = node.get(key) {
                cx.warn(
                    ErrorKind::InvalidLoop,
                    format!("'{key}' only applies to loops"),
                    n.pos,
                    self.sid(),
                    &self.at(key),
                );
            }
        }
        None
    }

    /// `tool` and `action`, the action resolved against the catalogue (a
    /// loop step has none of its own).
    fn tool_and_action(&self, cx: &mut Cx, is_loop: bool) -> (Option<String>, String) {
        let tool = self.string(cx, "tool");
        let action_raw = self.string(cx, "action");
        if is_loop {
            if tool.is_some() || action_raw.is_some() {
                cx.warn(
                    ErrorKind::InvalidLoop,
                    "a loop step runs its 'steps'; its own 'tool' and 'action' are ignored",
                    self.node.pos,
                    self.sid(),
                    self.pointer,
                );
            }
            return (tool, String::new());
        }
        let action = resolve_action(
            self.node,
            self.pointer,
            tool.as_deref(),
            action_raw.as_deref(),
            self.sid(),
            self.options,
            cx,
        )
        .unwrap_or_default();
        (tool, action)
    }

    /// `location`, which may be a template.
    fn location(&self, cx: &mut Cx) -> Option<String> {
        let location = self.string(cx, "location");
        if let (Some(loc), Some(n)) = (&location, self.node.get("location")) {
            self.template(cx, loc, self.at("location"), n.pos, None);
        }
        location
    }

    /// `requires_model`: a mapping of requirements.
    fn requires_model(&self, cx: &mut Cx) -> Option<Value> {
        let r = self.node.get("requires_model")?;
        if !matches!(r.value, NodeValue::Map(_) | NodeValue::Null) {
            cx.error(
                ErrorKind::InvalidType,
                "'requires_model' must be a mapping of requirements",
                r.pos,
                self.sid(),
                &self.at("requires_model"),
            );
        }
        Some(r.to_json())
    }
}
pub(super) type AddTemplate<'f> = dyn FnMut(&mut Cx, &str, String, Pos, Option<LoopScope>) + 'f;
pub(super) fn check_condition(
    text: &str,
    pos: Pos,
    sid: Option<&str>,
    pointer: &str,
    cx: &mut Cx,
    add: &mut AddTemplate<'_>,
) {
    if template::is_template(text) {
        add(cx, text, pointer.to_string(), pos, None);
    } else if let Err(e) = template::expression_names(text) {
        cx.error(
            ErrorKind::TemplateSyntax,
            format!("condition '{text}' does not parse: {}", e.message),
            pos,
            sid,
            pointer,
        );
    } else {
        // A bare expression: check its names like a template's.
        add(
            cx,
            &format!("{{{{ {text} }}}}"),
            pointer.to_string(),
            pos,
            None,
        );
    }
}
