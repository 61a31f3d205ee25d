//! Compiler diagnostics: every problem found in a pipeline, with its place.

use serde::{Deserialize, Serialize};

use crate::yaml::Pos;

/// What kind of problem a [`Diagnostic`] describes. The names are stable: API
/// clients and tests match on them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The text is not well-formed YAML (or is a second document, an alias bomb …).
    YamlSyntax,
    /// The document (or a step) is not a mapping where one is required.
    NotAMapping,
    /// A required key is missing (`name`, `steps`, a step's `id` …).
    MissingField,
    /// A key holds a value of the wrong type (`steps: 3`, `timeout: "soon"`).
    InvalidType,
    /// A value has the right type but is not allowed (`timeout: 0`, bad version).
    InvalidValue,
    /// An id does not match `^[A-Za-z][A-Za-z0-9_-]*$`.
    InvalidId,
    /// Two steps share an id.
    DuplicateId,
    /// A step id is one of the reserved words `fail`, `continue`, `skip`, `retry`.
    ReservedId,
    /// `depends_on` names a step that does not exist.
    UnknownDependency,
    /// The dependencies form a cycle.
    Cycle,
    /// `tool` names no known tool.
    UnknownTool,
    /// `action` is not one of the tool's actions (or no runtime action).
    UnknownAction,
    /// The step has neither a usable `action` nor a `tool` with a single action.
    MissingAction,
    /// `on_false`, `on_success` or `on_failure` names a step that does not exist.
    UnknownJumpTarget,
    /// A jump goes backwards or to the step itself.
    BackwardJump,
    /// A template does not parse.
    TemplateSyntax,
    /// A template refers to a name that can never be defined.
    UnknownReference,
    /// A caller-supplied input has the wrong type for its declaration.
    InputType,
    /// A required input has no value and no default.
    MissingInput,
    /// An input declaration is malformed (unknown type, default of the wrong type).
    InvalidInput,
    /// An `<AUTO>` tag could not be resolved.
    AutoTag,
    /// A loop is malformed (`for_each` without `steps`, both loops on one step …).
    InvalidLoop,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::YamlSyntax => "yaml_syntax",
            ErrorKind::NotAMapping => "not_a_mapping",
            ErrorKind::MissingField => "missing_field",
            ErrorKind::InvalidType => "invalid_type",
            ErrorKind::InvalidValue => "invalid_value",
            ErrorKind::InvalidId => "invalid_id",
            ErrorKind::DuplicateId => "duplicate_id",
            ErrorKind::ReservedId => "reserved_id",
            ErrorKind::UnknownDependency => "unknown_dependency",
            ErrorKind::Cycle => "cycle",
            ErrorKind::UnknownTool => "unknown_tool",
            ErrorKind::UnknownAction => "unknown_action",
            ErrorKind::MissingAction => "missing_action",
            ErrorKind::UnknownJumpTarget => "unknown_jump_target",
            ErrorKind::BackwardJump => "backward_jump",
            ErrorKind::TemplateSyntax => "template_syntax",
            ErrorKind::UnknownReference => "unknown_reference",
            ErrorKind::InputType => "input_type",
            ErrorKind::MissingInput => "missing_input",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::AutoTag => "auto_tag",
            ErrorKind::InvalidLoop => "invalid_loop",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem (or warning) found while compiling a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Diagnostic {
    pub kind: ErrorKind,
    pub message: String,
    /// 1-based line, when the problem has a place in the YAML text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// 1-based column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
    /// The step the problem belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// JSON pointer to the offending value (`/steps/2/timeout`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
}

impl Diagnostic {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Diagnostic {
            kind,
            message: message.into(),
            line: None,
            column: None,
            step: None,
            pointer: None,
        }
    }

    /// Sets the position, unless it is unknown (a pipeline given as JSON).
    pub fn at(mut self, pos: Pos) -> Self {
        if pos.line > 0 {
            self.line = Some(pos.line);
            self.column = Some(pos.column);
        }
        self
    }

    pub fn step(mut self, step: Option<&str>) -> Self {
        self.step = step.map(str::to_string);
        self
    }

    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = Some(pointer.into());
        self
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, "line {line}, column {column}: ")?;
        }
        if let Some(step) = &self.step {
            write!(f, "step '{step}': ")?;
        }
        write!(f, "{} [{}]", self.message, self.kind)
    }
}

/// A pipeline that failed to compile: every error found, plus the warnings.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[error("pipeline is invalid: {} error(s), first: {}", errors.len(), errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct CompileError {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}
