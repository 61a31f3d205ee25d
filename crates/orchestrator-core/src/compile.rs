//! The compiler: YAML text (or a JSON object) plus caller inputs → a validated
//! [`ExecutionPlan`], or every problem found, each with its place.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::OnceLock;

use indexmap::IndexMap;
use regex::Regex;
use serde_json::{Map, Value};

use crate::auto::{self, AutoResolver};
use crate::catalog::{self, ToolCatalog};
use crate::error::{CompileError, Diagnostic, ErrorKind};
use crate::model::{
    Backoff, InputSpec, InputType, LoopItems, LoopSpec, OnFailure, Pipeline, RetryPolicy, Step,
};
use crate::plan::{self, ExecutionPlan};
use crate::template;
use crate::yaml::{self, Key, Node, NodeValue, Pos};

/// What the compiler needs besides the pipeline text.
#[derive(Clone, Copy)]
pub struct CompileOptions<'a> {
    /// The tools and actions that exist.
    pub catalog: &'a dyn ToolCatalog,
    /// Caller-supplied inputs. `None` means "validate only": names that are
    /// not declared inputs are then warnings (the caller may supply them),
    /// not errors.
    pub context: Option<&'a Map<String, Value>>,
    /// Answers `<AUTO>` tags; without one, a pipeline with tags fails.
    pub auto_resolver: Option<&'a dyn AutoResolver>,
}

impl std::fmt::Debug for CompileOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompileOptions")
            .field("context", &self.context)
            .field("auto_resolver", &self.auto_resolver.is_some())
            .finish_non_exhaustive()
    }
}

/// A compiled pipeline and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub plan: ExecutionPlan,
    pub warnings: Vec<Diagnostic>,
}

const RESERVED_IDS: &[&str] = &["fail", "continue", "skip", "retry"];

fn id_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[A-Za-z][A-Za-z0-9_-]*$").unwrap_or_else(|e| unreachable!("static: {e}"))
    })
}

fn version_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^\d+\.\d+\.\d+$").unwrap_or_else(|e| unreachable!("static: {e}"))
    })
}

/// Whether `id` is a valid pipeline or step id.
pub fn is_valid_id(id: &str) -> bool {
    id_regex().is_match(id)
}

/// Compiles YAML text.
pub fn compile_yaml(text: &str, options: CompileOptions<'_>) -> Result<Compiled, CompileError> {
    match yaml::parse(text) {
        Ok(node) => compile_node(node, options),
        Err(e) => Err(CompileError {
            errors: vec![
                Diagnostic::new(
                    ErrorKind::YamlSyntax,
                    format!("invalid YAML: {}", e.message),
                )
                .at(e.pos),
            ],
            warnings: vec![],
        }),
    }
}

/// Compiles a pipeline given as a JSON object (positions are then unknown).
pub fn compile_json(value: &Value, options: CompileOptions<'_>) -> Result<Compiled, CompileError> {
    compile_node(Node::from_json(value), options)
}

/// Compiles a parsed YAML tree.
pub fn compile_node(mut root: Node, options: CompileOptions<'_>) -> Result<Compiled, CompileError> {
    let mut cx = Cx::default();
    resolve_auto_tags(&mut root, &options, &mut cx);
    let pipeline = read_pipeline(&root, &options, &mut cx);
    let inputs = pipeline
        .as_ref()
        .map(|p| resolve_inputs(p, &root, options.context, &mut cx))
        .unwrap_or_default();
    let plan = pipeline.and_then(|p| {
        check_references(&p, &inputs, &options, &mut cx);
        match plan::build(p, inputs, options.context.is_some()) {
            Ok(plan) => Some(plan),
            Err(errors) => {
                cx.errors.extend(errors);
                None
            }
        }
    });
    match plan {
        Some(plan) if cx.errors.is_empty() => Ok(Compiled {
            plan,
            warnings: cx.warnings,
        }),
        _ => {
            cx.errors
                .sort_by_key(|d| (d.line.unwrap_or(u32::MAX), d.column.unwrap_or(0)));
            Err(CompileError {
                errors: cx.errors,
                warnings: cx.warnings,
            })
        }
    }
}

#[derive(Default)]
struct Cx {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    /// Where each step id was written (for later diagnostics).
    step_pos: HashMap<String, Pos>,
    /// Where each template string came from: (step, pointer, pos).
    templates: Vec<TemplateSite>,
}

#[derive(Debug, Clone)]
struct TemplateSite {
    text: String,
    step: Option<String>,
    pointer: String,
    pos: Pos,
    /// Loop nesting: names bound by enclosing loops, and sibling body ids.
    scope: Vec<LoopScope>,
}

#[derive(Debug, Clone)]
struct LoopScope {
    bindings: &'static [&'static str],
    siblings: BTreeSet<String>,
}

impl Cx {
    fn error(
        &mut self,
        kind: ErrorKind,
        message: impl Into<String>,
        pos: Pos,
        step: Option<&str>,
        pointer: &str,
    ) {
        self.errors.push(
            Diagnostic::new(kind, message)
                .at(pos)
                .step(step)
                .pointer(pointer.to_string()),
        );
    }

    fn warn(
        &mut self,
        kind: ErrorKind,
        message: impl Into<String>,
        pos: Pos,
        step: Option<&str>,
        pointer: &str,
    ) {
        self.warnings.push(
            Diagnostic::new(kind, message)
                .at(pos)
                .step(step)
                .pointer(pointer.to_string()),
        );
    }
}

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
                for (k, v) in entries {
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

fn resolve_auto_tags(root: &mut Node, options: &CompileOptions<'_>, cx: &mut Cx) {
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
                for (k, v) in entries.iter_mut() {
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

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

const PIPELINE_KEYS: &[&str] = &[
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

const STEP_KEYS: &[&str] = &[
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
    "on_failure",
    "timeout",
    "max_retries",
    "retry",
    "for_each",
    "while",
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
];

fn read_pipeline(root: &Node, options: &CompileOptions<'_>, cx: &mut Cx) -> Option<Pipeline> {
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

fn opt_string(
    node: &Node,
    key: &str,
    step: Option<&str>,
    base: &str,
    cx: &mut Cx,
) -> Option<String> {
    let v = node.get(key)?;
    match &v.value {
        NodeValue::Str(s) => Some(s.clone()),
        NodeValue::Null => None,
        NodeValue::Int(_) | NodeValue::Float(_) | NodeValue::Bool(_) if key == "description" => {
            Some(v.to_json().to_string())
        }
        _ => {
            cx.error(
                ErrorKind::InvalidType,
                format!("'{key}' must be a string, found {}", v.described()),
                v.pos,
                step,
                &format!("{base}/{key}"),
            );
            None
        }
    }
}

fn read_inputs(node: &Node, key: &str, inputs: &mut IndexMap<String, InputSpec>, cx: &mut Cx) {
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

fn json_type(v: &Value) -> &'static str {
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

fn read_steps(
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

fn check_jumps(steps: &[Step], nodes: &[(usize, &Node)], base: &str, cx: &mut Cx) {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        let (item_index, node) = nodes[i];
        let targets = [
            ("on_false", step.on_false.as_deref()),
            ("on_success", step.on_success.as_deref()),
            (
                "on_failure",
                match &step.on_failure {
                    OnFailure::Goto(t) => Some(t.as_str()),
                    _ => None,
                },
            ),
        ];
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

/// " (did you mean 'x'?)" for the closest candidate, or the list of choices.
pub(crate) fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    let candidates: Vec<&str> = candidates.collect();
    let best = candidates
        .iter()
        .map(|c| (strsim(name, c), *c))
        .filter(|(d, c)| *d <= c.len().max(name.len()).div_ceil(3))
        .min();
    match best {
        Some((_, c)) => format!(" (did you mean '{c}'?)"),
        None if candidates.is_empty() => String::new(),
        None if candidates.len() <= 12 => format!("; choices: {}", candidates.join(", ")),
        None => String::new(),
    }
}

/// Levenshtein distance.
fn strsim(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[allow(clippy::too_many_lines)]
fn read_step(
    node: &Node,
    pointer: &str,
    scope: &[LoopScope],
    siblings: &BTreeSet<String>,
    options: &CompileOptions<'_>,
    cx: &mut Cx,
) -> Option<Step> {
    let Some(entries) = node.as_map() else {
        cx.error(
            ErrorKind::NotAMapping,
            format!("a step must be a mapping, found {}", node.described()),
            node.pos,
            None,
            pointer,
        );
        return None;
    };
    let id = match node.get("id") {
        None => {
            cx.error(
                ErrorKind::MissingField,
                "step needs an 'id'",
                node.pos,
                None,
                &format!("{pointer}/id"),
            );
            None
        }
        Some(n) => match n.as_str() {
            Some(s) if !is_valid_id(s) => {
                cx.error(
                    ErrorKind::InvalidId,
                    format!("step id '{s}' must match ^[A-Za-z][A-Za-z0-9_-]*$"),
                    n.pos,
                    Some(s),
                    &format!("{pointer}/id"),
                );
                None
            }
            Some(s) if RESERVED_IDS.contains(&s) => {
                cx.error(
                    ErrorKind::ReservedId,
                    format!("step id '{s}' is reserved (fail, continue, skip and retry are on_failure modes)"),
                    n.pos,
                    Some(s),
                    &format!("{pointer}/id"),
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
                    &format!("{pointer}/id"),
                );
                None
            }
        },
    };
    let sid = id.as_deref();
    for (k, _) in entries {
        if !STEP_KEYS.contains(&k.name.as_str()) {
            cx.warn(
                ErrorKind::InvalidValue,
                format!("unknown step key '{}' is ignored", k.name),
                k.pos,
                sid,
                &format!("{pointer}/{}", escape_pointer(&k.name)),
            );
        }
    }

    let mut add_template =
        |cx: &mut Cx, text: &str, ptr: String, pos: Pos, extra: Option<LoopScope>| {
            if template::is_template(text) {
                let mut s = scope.to_vec();
                if let Some(last) = s.last_mut() {
                    // Inside a body, its siblings are visible.
                    last.siblings.extend(siblings.iter().cloned());
                }
                if let Some(extra) = extra {
                    s.push(extra);
                }
                cx.templates.push(TemplateSite {
                    text: text.to_string(),
                    step: id.clone(),
                    pointer: ptr,
                    pos,
                    scope: s,
                });
            }
        };

    // parameters
    let mut parameters = Map::new();
    if let Some(p) = node.get("parameters") {
        match &p.value {
            NodeValue::Map(_) => {
                collect_templates(
                    p,
                    &format!("{pointer}/parameters"),
                    &mut |text, ptr, pos| {
                        add_template(cx, text, ptr, pos, None);
                    },
                );
                if let Value::Object(m) = p.to_json() {
                    parameters = m;
                }
            }
            NodeValue::Null => {}
            _ => cx.error(
                ErrorKind::InvalidType,
                format!("'parameters' must be a mapping, found {}", p.described()),
                p.pos,
                sid,
                &format!("{pointer}/parameters"),
            ),
        }
    }

    // depends_on
    let mut depends_on = Vec::new();
    let mut depends_on_pos = Vec::new();
    let dep_key = if node.get("depends_on").is_some() {
        "depends_on"
    } else {
        "dependencies"
    };
    if let Some(d) = node.get(dep_key) {
        match &d.value {
            NodeValue::Str(s) => {
                for dep in s.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    depends_on.push(dep.to_string());
                    depends_on_pos.push(d.pos);
                }
            }
            NodeValue::Seq(items) => {
                for item in items {
                    match item.as_str() {
                        Some(s) => {
                            depends_on.push(s.to_string());
                            depends_on_pos.push(item.pos);
                        }
                        None => cx.error(
                            ErrorKind::InvalidType,
                            format!(
                                "'{dep_key}' entries must be step ids, found {}",
                                item.described()
                            ),
                            item.pos,
                            sid,
                            &format!("{pointer}/{dep_key}"),
                        ),
                    }
                }
            }
            NodeValue::Null => {}
            _ => cx.error(
                ErrorKind::InvalidType,
                format!("'{dep_key}' must be a list of step ids or a comma-separated string"),
                d.pos,
                sid,
                &format!("{pointer}/{dep_key}"),
            ),
        }
    }

    // condition
    let cond_key = if node.get("condition").is_some() {
        "condition"
    } else {
        "if"
    };
    let condition = node.get(cond_key).and_then(|c| {
        let text = match &c.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Null => return None,
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    format!(
                        "'{cond_key}' must be a template or expression, found {}",
                        c.described()
                    ),
                    c.pos,
                    sid,
                    &format!("{pointer}/{cond_key}"),
                );
                return None;
            }
        };
        check_condition(
            &text,
            c.pos,
            sid,
            &format!("{pointer}/{cond_key}"),
            cx,
            &mut add_template,
        );
        Some(text)
    });

    let on_false = opt_string(node, "on_false", sid, pointer, cx);
    let on_success = opt_string(node, "on_success", sid, pointer, cx);
    let on_failure = match opt_string(node, "on_failure", sid, pointer, cx).as_deref() {
        None | Some("fail") => OnFailure::Fail,
        Some("continue") => OnFailure::Continue,
        Some("skip") => OnFailure::Skip,
        Some("retry") => OnFailure::Retry,
        Some(target) => OnFailure::Goto(target.to_string()),
    };

    // timeout
    let timeout = node.get("timeout").and_then(|t| match &t.value {
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
                sid,
                &format!("{pointer}/timeout"),
            );
            None
        }
    });

    // retries
    let mut retry = RetryPolicy::default();
    let mut retry_explicit = false;
    if let Some(m) = node.get("max_retries") {
        retry_explicit = true;
        match positive_int(m) {
            Some(n) => retry.max_attempts = n,
            None => cx.error(
                ErrorKind::InvalidValue,
                format!("'max_retries' is the total number of attempts, an integer of at least 1; found {}", m.to_json()),
                m.pos,
                sid,
                &format!("{pointer}/max_retries"),
            ),
        }
    }
    if let Some(r) = node.get("retry") {
        retry_explicit = true;
        read_retry(r, &mut retry, sid, &format!("{pointer}/retry"), cx);
    }
    if on_failure == OnFailure::Retry && retry.max_attempts < 2 {
        retry.max_attempts = RetryPolicy::default().max_attempts;
    }

    // loops
    let has_for_each = node.get("for_each").is_some();
    let has_while = node.get("while").is_some();
    let loop_spec = if has_for_each && has_while {
        cx.error(
            ErrorKind::InvalidLoop,
            "a step cannot have both 'for_each' and 'while'",
            node.pos,
            sid,
            pointer,
        );
        None
    } else if has_for_each || has_while {
        read_loop(node, pointer, scope, options, sid, cx, &mut add_template)
    } else {
        if let Some(s) = node.get("steps") {
            cx.error(
                ErrorKind::InvalidLoop,
                "'steps' inside a step needs 'for_each' or 'while'",
                s.pos,
                sid,
                &format!("{pointer}/steps"),
            );
        }
        for key in ["max_parallel", "max_iterations"] {
            if let Some(n) = node.get(key) {
                cx.warn(
                    ErrorKind::InvalidLoop,
                    format!("'{key}' only applies to loops"),
                    n.pos,
                    sid,
                    &format!("{pointer}/{key}"),
                );
            }
        }
        None
    };

    // tool / action
    let tool = opt_string(node, "tool", sid, pointer, cx);
    let action_raw = opt_string(node, "action", sid, pointer, cx);
    let action = if loop_spec.is_some() || has_for_each || has_while {
        if tool.is_some() || action_raw.is_some() {
            cx.warn(
                ErrorKind::InvalidLoop,
                "a loop step runs its 'steps'; its own 'tool' and 'action' are ignored",
                node.pos,
                sid,
                pointer,
            );
        }
        String::new()
    } else {
        resolve_action(
            node,
            pointer,
            tool.as_deref(),
            action_raw.as_deref(),
            sid,
            options,
            cx,
        )
        .unwrap_or_default()
    };

    let location = opt_string(node, "location", sid, pointer, cx);
    if let (Some(loc), Some(n)) = (&location, node.get("location")) {
        add_template(cx, loc, format!("{pointer}/location"), n.pos, None);
    }
    let model = opt_string(node, "model", sid, pointer, cx);
    let requires_model = node.get("requires_model").map(Node::to_json);
    if let Some(r) = node.get("requires_model")
        && !matches!(r.value, NodeValue::Map(_) | NodeValue::Null)
    {
        cx.error(
            ErrorKind::InvalidType,
            "'requires_model' must be a mapping of requirements",
            r.pos,
            sid,
            &format!("{pointer}/requires_model"),
        );
    }
    let produces = opt_string(node, "produces", sid, pointer, cx);
    let format = opt_string(node, "format", sid, pointer, cx);

    Some(Step {
        id: id?,
        tool,
        action,
        parameters,
        depends_on,
        depends_on_pos,
        condition,
        on_false,
        on_success,
        on_failure,
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

fn positive_int(n: &Node) -> Option<u32> {
    match n.value {
        NodeValue::Int(i) if i >= 1 => u32::try_from(i).ok(),
        _ => None,
    }
}

fn non_negative_int(n: &Node) -> Option<u64> {
    match n.value {
        NodeValue::Int(i) if i >= 0 => u64::try_from(i).ok(),
        _ => None,
    }
}

fn read_retry(r: &Node, retry: &mut RetryPolicy, sid: Option<&str>, pointer: &str, cx: &mut Cx) {
    let Some(entries) = r.as_map() else {
        if let Some(n) = positive_int(r) {
            retry.max_attempts = n;
            return;
        }
        cx.error(
            ErrorKind::InvalidType,
            "'retry' must be a mapping {attempts, backoff, delay_ms, max_delay_ms, jitter}",
            r.pos,
            sid,
            pointer,
        );
        return;
    };
    for (k, v) in entries {
        let ptr = format!("{pointer}/{}", k.name);
        let bad = |cx: &mut Cx, what: &str| {
            cx.error(
                ErrorKind::InvalidValue,
                format!("'retry.{}' must be {what}; found {}", k.name, v.to_json()),
                v.pos,
                sid,
                &ptr,
            );
        };
        match k.name.as_str() {
            "attempts" | "max_attempts" => match positive_int(v) {
                Some(n) => retry.max_attempts = n,
                None => bad(cx, "an integer of at least 1"),
            },
            "backoff" => match v.as_str() {
                Some("fixed") => retry.backoff = Backoff::Fixed,
                Some("exponential") => retry.backoff = Backoff::Exponential,
                _ => bad(cx, "'fixed' or 'exponential'"),
            },
            "delay_ms" => match non_negative_int(v) {
                Some(n) => retry.delay_ms = n,
                None => bad(cx, "a non-negative integer"),
            },
            "max_delay_ms" => match non_negative_int(v) {
                Some(n) => retry.max_delay_ms = n,
                None => bad(cx, "a non-negative integer"),
            },
            "jitter" => match v.value {
                NodeValue::Bool(b) => retry.jitter = if b { 0.1 } else { 0.0 },
                NodeValue::Int(i) if (0..=1).contains(&i) => retry.jitter = i as f64,
                NodeValue::Float(f) if (0.0..=1.0).contains(&f) => retry.jitter = f,
                _ => bad(cx, "true, false or a fraction between 0 and 1"),
            },
            other => cx.warn(
                ErrorKind::InvalidValue,
                format!("unknown retry key '{other}' is ignored"),
                k.pos,
                sid,
                &ptr,
            ),
        }
    }
    if retry.max_delay_ms < retry.delay_ms {
        retry.max_delay_ms = retry.delay_ms;
    }
}

type AddTemplate<'f> = dyn FnMut(&mut Cx, &str, String, Pos, Option<LoopScope>) + 'f;

fn check_condition(
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

#[allow(clippy::too_many_arguments)]
fn read_loop(
    node: &Node,
    pointer: &str,
    scope: &[LoopScope],
    options: &CompileOptions<'_>,
    sid: Option<&str>,
    cx: &mut Cx,
    add: &mut AddTemplate<'_>,
) -> Option<LoopSpec> {
    let is_for_each = node.get("for_each").is_some();
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
                    // A comma-separated literal list.
                    Some(LoopItems::Literal(
                        s.split(',')
                            .map(str::trim)
                            .filter(|x| !x.is_empty())
                            .map(|x| Value::String(x.to_string()))
                            .collect(),
                    ))
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
        let w = node.get("while")?;
        let condition = match &w.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Bool(b) => b.to_string(),
            _ => {
                cx.error(
                    ErrorKind::InvalidType,
                    "'while' must be a condition",
                    w.pos,
                    sid,
                    &format!("{pointer}/while"),
                );
                return None;
            }
        };
        let extra = LoopScope {
            bindings: template::WHILE_NAMES,
            // The condition sees the previous iteration's body steps.
            siblings: body_ids,
        };
        let cond_ptr = format!("{pointer}/while");
        if template::is_template(&condition) {
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
            max_iterations,
            steps: body?,
        })
    }
}

fn collect_templates(node: &Node, pointer: &str, f: &mut dyn FnMut(&str, String, Pos)) {
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

fn resolve_action(
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
                    let canonical = catalog::canonical_action(a);
                    if actions.iter().any(|x| x == canonical) {
                        Some(canonical.to_string())
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
fn resolve_inputs(
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
fn check_references(
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
            let known = step_ids.contains(name.as_str())
                || inputs.contains_key(&name)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_pick_the_closest_name() {
        assert_eq!(
            suggest("raed", ["read", "write"].into_iter()),
            " (did you mean 'read'?)"
        );
        assert_eq!(suggest("zzzzzz", ["a", "b"].into_iter()), "; choices: a, b");
    }

    #[test]
    fn ids_follow_the_pattern() {
        assert!(is_valid_id("a_b-1"));
        assert!(!is_valid_id("1a"));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id(""));
    }
}
