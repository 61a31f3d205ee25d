//! Templates: minijinja, sandboxed and strict.
//!
//! - An undefined name is an error (strict undefined).
//! - Trailing newlines are kept, so file content is byte-exact.
//! - A string that is exactly one expression (`"{{ colours }}"`) renders to the
//!   expression's native value (a list stays a list); anything else renders to
//!   a string.
//! - Rendering is bounded by fuel, so a template cannot loop forever.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value as JValue};
use minijinja::{Environment, Error as JError, ErrorKind as JErrorKind, UndefinedBehavior};
use serde_json::Value;

mod scope;
#[cfg(test)]
mod tests;

pub use scope::{Scope, StepEnvelope};

mod filters;

/// A template that failed to parse or to render.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    /// Line inside the template text (1-based), when minijinja knows it.
    pub line: Option<usize>,
    /// The template refers to something undefined.
    pub undefined: bool,
}

impl TemplateError {
    fn from_jinja(err: &JError) -> Self {
        let mut message = match err.detail() {
            Some(detail) => format!("{}: {detail}", kind_text(err.kind())),
            None => kind_text(err.kind()).to_string(),
        };
        if let Some(source) = std::error::Error::source(err) {
            message.push_str(&format!(" ({source})"));
        }
        TemplateError {
            message,
            line: err.line(),
            undefined: err.kind() == JErrorKind::UndefinedError,
        }
    }

    fn new(message: impl Into<String>) -> Self {
        TemplateError {
            message: message.into(),
            line: None,
            undefined: false,
        }
    }
}

fn kind_text(kind: JErrorKind) -> &'static str {
    match kind {
        JErrorKind::SyntaxError => "syntax error",
        JErrorKind::UndefinedError => "undefined value",
        JErrorKind::UnknownFilter => "unknown filter",
        JErrorKind::UnknownTest => "unknown test",
        JErrorKind::UnknownFunction => "unknown function",
        JErrorKind::UnknownMethod => "unknown method",
        JErrorKind::InvalidOperation => "invalid operation",
        JErrorKind::OutOfFuel => {
            "template ran too long or made too much data (limits.template_fuel)"
        }
        JErrorKind::TooManyArguments => "too many arguments",
        JErrorKind::MissingArgument => "missing argument",
        JErrorKind::CannotUnpack => "cannot unpack",
        JErrorKind::NonPrimitive | JErrorKind::NonKey => "invalid value",
        _ => "template error",
    }
}

/// Whether a string contains template syntax at all.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// If `text` is exactly one `{{ expression }}`, returns the expression.
pub fn single_expression(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") || inner.contains("{#")
    {
        return None;
    }
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let inner = inner.trim();
    (!inner.is_empty()).then_some(inner)
}

/// Names always in scope while a step runs.
pub const BUILTIN_NAMES: &[&str] = &[
    "inputs",
    "parameters",
    "execution",
    "pipeline_id",
    "execution_id",
    "timestamp",
];
/// Names bound inside a `for_each` body.
pub const FOR_EACH_NAMES: &[&str] = &["item", "index", "position", "length", "is_first", "is_last"];
/// Names bound inside a `while` body (and its condition).
pub const WHILE_NAMES: &[&str] = &["iteration"];

/// The template environment with the language's filters. Cheap to share.
pub fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(build_environment)
}

fn build_environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(crate::limits::get().template_fuel));
    env.set_recursion_limit(64);
    if let Ok(syntax) = minijinja::syntax::SyntaxConfig::builder()
        .keep_trailing_newline(true)
        .build()
    {
        env.set_syntax(syntax);
    }
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    filters::register(&mut env);
    // Python's methods on strings, lists and mappings, as the seed's Jinja
    // has them: `state.get('n', 0)`, `d.items()`, `s.upper()`, `s.split(',')`.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    // The current time, as `execution.started_at` is written.
    env.add_function("now", || {
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    });
    env
}

/// The seed's loop variables are written `$item`, `$index`, `$iteration`…:
/// inside template tags (or in a bare expression) `$name` reads `name`.
/// Text outside tags and string literals inside them are left alone.
pub fn seed_syntax(text: &str, bare: bool) -> std::borrow::Cow<'_, str> {
    if !text.contains('$') {
        return std::borrow::Cow::Borrowed(text);
    }
    let b = text.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut in_tag = bare;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let pair = b.get(i..i + 2);
        if !in_tag {
            if matches!(pair, Some(b"{{") | Some(b"{%")) {
                in_tag = true;
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
                continue;
            }
        } else if let Some(q) = quote {
            if c == b'\\' && i + 1 < b.len() {
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
                continue;
            }
            if c == q {
                quote = None;
            }
        } else if c == b'\'' || c == b'"' {
            quote = Some(c);
        } else if !bare && matches!(pair, Some(b"}}") | Some(b"%}")) {
            in_tag = false;
            out.extend_from_slice(&b[i..i + 2]);
            i += 2;
            continue;
        } else if c == b'$'
            && b.get(i + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_')
        {
            i += 1;
            continue;
        }
        out.push(c);
        i += 1;
    }
    // Only ASCII `$` bytes were dropped: still UTF-8.
    std::borrow::Cow::Owned(String::from_utf8(out).unwrap_or_else(|_| text.to_string()))
}

/// Parses a template and returns the root names it reads from its context
/// (`{{ a.result.b }}` → `a`), without names it defines itself.
pub fn referenced_names(text: &str) -> Result<BTreeSet<String>, TemplateError> {
    let text = &*seed_syntax(text, false);
    let env = environment();
    let names = match single_expression(text) {
        Some(expr) if !text.contains("{%") => env
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_jinja(&e))?
            .undeclared_variables(false),
        _ => env
            .template_from_str(text)
            .map_err(|e| TemplateError::from_jinja(&e))?
            .undeclared_variables(false),
    };
    Ok(names
        .into_iter()
        .filter(|n| !is_global(n))
        .collect::<BTreeSet<_>>())
}

/// Parses a bare expression (a condition written without braces) and returns its names.
pub fn expression_names(expr: &str) -> Result<BTreeSet<String>, TemplateError> {
    let expr = &*seed_syntax(expr, true);
    let names = environment()
        .compile_expression(expr)
        .map_err(|e| TemplateError::from_jinja(&e))?
        .undeclared_variables(false);
    Ok(names.into_iter().filter(|n| !is_global(n)).collect())
}

fn is_global(name: &str) -> bool {
    matches!(
        name,
        "range"
            | "dict"
            | "namespace"
            | "debug"
            | "loop"
            | "self"
            | "none"
            | "true"
            | "false"
            | "now"
    )
}

/// Bytes a template may render.
fn max_output() -> usize {
    crate::limits::get().template_output_bytes
}

/// How deeply a rendered value may nest: what is stored must read back as
/// JSON (whose readers stop at 128 levels) inside its step's envelope.
pub const MAX_RENDERED_DEPTH: usize = 100;

/// What rendered values may still take, in bytes: one budget for all the
/// values of one step's parameters (`limits.template_output_bytes`).
#[derive(Debug)]
struct Budget(usize);

impl Budget {
    fn new() -> Self {
        Budget(max_output())
    }

    fn take(&mut self, bytes: usize) -> Result<(), TemplateError> {
        match self.0.checked_sub(bytes) {
            Some(left) => {
                self.0 = left;
                Ok(())
            }
            None => Err(TemplateError::new(format!(
                "rendered values are larger than {} bytes (limits.template_output_bytes)",
                max_output()
            ))),
        }
    }
}

/// Renders a template to a string.
pub fn render_str(text: &str, scope: &Scope) -> Result<String, TemplateError> {
    render_str_within(text, scope, &mut Budget::new())
}

fn render_str_within(
    text: &str,
    scope: &Scope,
    budget: &mut Budget,
) -> Result<String, TemplateError> {
    if !is_template(text) {
        return Ok(text.to_string());
    }
    let text = &*seed_syntax(text, false);
    let out = environment()
        .render_str(text, scope.context())
        .map_err(|e| TemplateError::from_jinja(&e))?;
    budget.take(out.len())?;
    Ok(out)
}

/// Renders one string value: a single expression keeps its native type.
pub fn render_string_value(text: &str, scope: &Scope) -> Result<Value, TemplateError> {
    render_string_value_within(text, scope, &mut Budget::new())
}

fn render_string_value_within(
    text: &str,
    scope: &Scope,
    budget: &mut Budget,
) -> Result<Value, TemplateError> {
    let text = &*seed_syntax(text, false);
    if let Some(expr) = single_expression(text) {
        let value = environment()
            .compile_expression(expr)
            .map_err(|e| TemplateError::from_jinja(&e))?
            .eval(scope.context())
            .map_err(|e| TemplateError::from_jinja(&e))?;
        if value.is_undefined() {
            return Err(TemplateError {
                message: format!("undefined value: '{expr}' is not defined"),
                line: None,
                undefined: true,
            });
        }
        // Measured before it is copied: a single expression can make a
        // value far larger than any text the template shows.
        budget.take(json_size(&value, budget.0)?)?;
        let json = to_json(&value)?;
        check_depth(&json)?;
        return Ok(json);
    }
    render_str_within(text, scope, budget).map(Value::String)
}

/// Renders every string inside a value (lists and maps deeply; keys are left
/// alone). All the rendered strings and values together stay within
/// `limits.template_output_bytes`.
pub fn render_value(value: &Value, scope: &Scope) -> Result<Value, TemplateError> {
    render_value_within(value, scope, &mut Budget::new())
}

fn render_value_within(
    value: &Value,
    scope: &Scope,
    budget: &mut Budget,
) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render_string_value_within(s, scope, budget)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render_value_within(v, scope, budget))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render_value_within(v, scope, budget)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// The size of a value written as JSON, counted without writing it; fails
/// as soon as it passes `max`.
fn json_size(value: &JValue, max: usize) -> Result<usize, TemplateError> {
    struct Counter {
        bytes: usize,
        max: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes += buf.len();
            if self.bytes > self.max {
                return Err(std::io::Error::other("too large"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { bytes: 0, max };
    match serde_json::to_writer(&mut counter, value) {
        Ok(()) => Ok(counter.bytes),
        Err(_) if counter.bytes > max => Err(TemplateError::new(format!(
            "rendered values are larger than {} bytes (limits.template_output_bytes)",
            max_output()
        ))),
        // Not serializable: `to_json` says why.
        Err(_) => Ok(counter.bytes),
    }
}

/// Fails when a rendered value nests deeper than [`MAX_RENDERED_DEPTH`].
fn check_depth(value: &Value) -> Result<(), TemplateError> {
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(map) => Box::new(map.values()),
            _ => continue,
        };
        if depth >= MAX_RENDERED_DEPTH {
            return Err(TemplateError::new(format!(
                "rendered value nests deeper than {MAX_RENDERED_DEPTH} levels"
            )));
        }
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    Ok(())
}

/// Converts a template value to JSON. Step envelopes become `{result, success, error}`.
pub fn to_json(value: &JValue) -> Result<Value, TemplateError> {
    // A step stands for its result (`{{ step }}` as a whole value).
    if let Some(env) = value.downcast_object_ref::<StepEnvelope>() {
        return Ok(env.result.clone());
    }
    serde_json::to_value(value)
        .map_err(|e| TemplateError::new(format!("value cannot be converted to JSON: {e}")))
}

/// Evaluates a condition: `{{ x > 3 }}`, `x > 3`, or a template rendering to
/// `true`/`false`. Never runs code beyond the sandboxed template language.
pub fn eval_condition(condition: &str, scope: &Scope) -> Result<bool, TemplateError> {
    let trimmed = condition.trim();
    let value = if is_template(trimmed) {
        render_string_value(trimmed, scope)?
    } else {
        let v = environment()
            .compile_expression(&seed_syntax(trimmed, true))
            .map_err(|e| TemplateError::from_jinja(&e))?
            .eval(scope.context())
            .map_err(|e| TemplateError::from_jinja(&e))?;
        if v.is_undefined() {
            return Err(TemplateError {
                message: format!("undefined value in condition '{trimmed}'"),
                line: None,
                undefined: true,
            });
        }
        to_json(&v)?
    };
    truthy(&value).ok_or_else(|| {
        TemplateError::new(format!(
            "condition rendered to {value}, which is not a boolean"
        ))
    })
}

/// The boolean meaning of a rendered value, if it has one.
pub fn truthy(value: &Value) -> Option<bool> {
    match value {
        Value::Bool(b) => Some(*b),
        Value::Null => Some(false),
        Value::Number(n) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" | "y" => Some(true),
            "false" | "no" | "off" | "0" | "n" | "" | "none" | "null" => Some(false),
            _ => None,
        },
        Value::Array(a) => Some(!a.is_empty()),
        Value::Object(m) => Some(!m.is_empty()),
    }
}

/// Parses a rendered output: a JSON literal (number, bool, list, object, null)
/// becomes that value; anything else stays a string.
pub fn parse_literal(text: &str) -> Value {
    let t = text.trim();
    let looks_literal = t.starts_with(['{', '[', '-'])
        || t.starts_with(|c: char| c.is_ascii_digit())
        || matches!(t, "true" | "false" | "null");
    if looks_literal && let Ok(v) = serde_json::from_str::<Value>(t) {
        return v;
    }
    match t {
        "True" => Value::Bool(true),
        "False" => Value::Bool(false),
        "None" => Value::Null,
        _ => Value::String(text.to_string()),
    }
}
