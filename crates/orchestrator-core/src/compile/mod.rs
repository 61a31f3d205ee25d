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

mod auto_tags;
mod loops;
mod on_error;
mod pipeline;
mod resolve;
mod step;
#[cfg(test)]
mod tests;
mod values;

pub use auto_tags::find_auto_tags;
use auto_tags::resolve_auto_tags;
use loops::read_loop;
use pipeline::{json_type, read_pipeline, read_steps};
use resolve::{check_references, collect_templates, resolve_action, resolve_inputs};
use step::{AddTemplate, read_step};
use values::{opt_string, positive_int, read_retry};

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

/// Reads a pipeline's YAML text as the seed does: its unquoted `<AUTO>`
/// tags (see [`auto::quote_plain_tags`]), and a key written twice keeps its
/// last value.
pub fn parse_pipeline(text: &str) -> Result<Node, yaml::YamlError> {
    read_text(text).map(|(node, _)| node)
}

/// [`parse_pipeline`], with the keys written twice.
fn read_text(text: &str) -> Result<(Node, Vec<yaml::YamlError>), yaml::YamlError> {
    yaml::parse_lenient(&auto::quote_plain_tags(text))
}

/// Compiles YAML text. A key written twice in one mapping keeps its last
/// value, as in the seed, with a warning at both places.
pub fn compile_yaml(text: &str, options: CompileOptions<'_>) -> Result<Compiled, CompileError> {
    match read_text(text) {
        Ok((node, duplicates)) => {
            let warnings = duplicates.into_iter().map(|d| {
                Diagnostic::new(
                    ErrorKind::YamlSyntax,
                    format!("{}: the last value is used", d.message),
                )
                .at(d.pos)
            });
            match compile_node(node, options) {
                Ok(mut compiled) => {
                    let mut all: Vec<Diagnostic> = warnings.collect();
                    all.append(&mut compiled.warnings);
                    compiled.warnings = all;
                    Ok(compiled)
                }
                Err(mut e) => {
                    let mut all: Vec<Diagnostic> = warnings.collect();
                    all.append(&mut e.warnings);
                    e.warnings = all;
                    Err(e)
                }
            }
        }
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
            warnings: capped(cx.warnings, "warnings"),
        }),
        _ => {
            cx.errors
                .sort_by_key(|d| (d.line.unwrap_or(u32::MAX), d.column.unwrap_or(0)));
            Err(CompileError {
                errors: capped(cx.errors, "errors"),
                warnings: capped(cx.warnings, "warnings"),
            })
        }
    }
}

/// Diagnostics listed per compile: a pipeline of 300,000 unknown keys must
/// not make 300,000 warnings to store with its execution and send back on
/// every read.
pub const MAX_DIAGNOSTICS: usize = 100;

/// The first [`MAX_DIAGNOSTICS`], and one more saying how many were left out.
fn capped(mut list: Vec<Diagnostic>, what: &str) -> Vec<Diagnostic> {
    if list.len() <= MAX_DIAGNOSTICS {
        return list;
    }
    let more = list.len() - MAX_DIAGNOSTICS;
    let kind = list[MAX_DIAGNOSTICS].kind;
    list.truncate(MAX_DIAGNOSTICS);
    list.push(Diagnostic::new(
        kind,
        format!("{more} more {what} like these are not listed"),
    ));
    list
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

fn diagnostic(
    kind: ErrorKind,
    message: impl Into<String>,
    pos: Pos,
    step: Option<&str>,
    pointer: &str,
) -> Diagnostic {
    Diagnostic::new(kind, message)
        .at(pos)
        .step(step)
        .pointer(pointer.to_string())
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
        self.errors
            .push(diagnostic(kind, message, pos, step, pointer));
    }

    fn warn(
        &mut self,
        kind: ErrorKind,
        message: impl Into<String>,
        pos: Pos,
        step: Option<&str>,
        pointer: &str,
    ) {
        self.warnings
            .push(diagnostic(kind, message, pos, step, pointer));
    }
}

fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
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
