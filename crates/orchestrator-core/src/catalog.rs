//! Which tools and actions a pipeline may name.
//!
//! The compiler is pure, so it does not know the running tool registry; it is
//! given a [`ToolCatalog`]. [`BuiltinCatalog`] lists the tools the language
//! page defines; the tool registry builds a catalog of what is really enabled.

use std::collections::BTreeMap;

/// The tool that runs another pipeline from a step.
pub const PIPELINE_EXECUTOR: &str = "pipeline-executor";

/// Whether a step (as written) runs another pipeline whose text is its
/// `parameters.pipeline`: that text is the child's, with its own templates
/// and `<AUTO>` tags, neither read nor rendered for the parent.
pub fn runs_child_pipeline(step: &crate::yaml::Node) -> bool {
    step.get("tool").and_then(crate::yaml::Node::as_str) == Some(PIPELINE_EXECUTOR)
}

/// The tool that model actions may name explicitly.
pub const LLM_TOOL: &str = "llm-generate";

/// Actions that run on a model rather than a tool.
pub const MODEL_ACTIONS: &[&str] = &[
    "generate",
    "complete",
    "chat",
    "generate_structured",
    "analyze_text",
];

/// `validation`'s action that runs on a model: the data a JSON Schema
/// describes, extracted from text.
pub const EXTRACT_STRUCTURED: &str = "extract_structured";

/// The action that evaluates a step's condition and needs no tool.
pub const EVALUATE_CONDITION: &str = "evaluate_condition";

/// Actions a step may name without `tool`.
pub const RUNTIME_ACTIONS: &[&str] = &[
    "generate",
    "generate_structured",
    "analyze_text",
    EVALUATE_CONDITION,
];

/// Maps a tool's action alias to the canonical name: the seed's names for
/// the same actions (its terminal runs its command whatever the action is
/// called; `execute` is what its examples write), then the tool-independent
/// aliases of [`canonical_action`].
pub fn canonical_tool_action<'a>(tool: &str, action: &'a str) -> &'a str {
    match (tool, action) {
        ("terminal", "execute" | "exec" | "run_command" | "shell") => "run",
        ("filesystem", "list_directory" | "list_files" | "ls") => "list",
        ("filesystem", "remove") => "delete",
        ("filesystem", "read_file") => "read",
        ("filesystem", "write_file") => "write",
        ("report-generator", "create" | "generate_report") => "generate",
        ("web-search", "web_search") => "search",
        ("headless-browser", "extract" | "extract_text" | "scrape_page") => "scrape",
        ("headless-browser", "web_search") => "search",
        _ => canonical_action(action),
    }
}

/// Maps an action alias to its canonical name.
pub fn canonical_action(action: &str) -> &str {
    match action {
        "generate_text" | "generate-text" => "generate",
        "generate-structured" => "generate_structured",
        "analyze-text" => "analyze_text",
        "evaluate-condition" => EVALUATE_CONDITION,
        other => other,
    }
}

/// The tools and actions that exist.
pub trait ToolCatalog {
    /// The actions of `tool`, or `None` when there is no such tool.
    fn actions(&self, tool: &str) -> Option<Vec<String>>;
    /// Every tool id, sorted.
    fn tool_ids(&self) -> Vec<String>;
    /// Why a tool that exists in the language is not available here (for
    /// example "is disabled on this server"), if that is the case.
    fn unavailable(&self, _tool: &str) -> Option<String> {
        None
    }
}

/// A catalog held in memory.
#[derive(Debug, Clone, Default)]
pub struct StaticCatalog {
    tools: BTreeMap<String, Vec<String>>,
}

impl StaticCatalog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_tool(mut self, id: &str, actions: &[&str]) -> Self {
        self.insert(id, actions.iter().map(|a| a.to_string()).collect());
        self
    }

    pub fn insert(&mut self, id: &str, actions: Vec<String>) {
        self.tools.insert(id.to_string(), actions);
    }
}

impl ToolCatalog for StaticCatalog {
    fn actions(&self, tool: &str) -> Option<Vec<String>> {
        self.tools.get(tool).cloned()
    }

    fn tool_ids(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }
}

/// The built-in tools of the language page, each with its actions.
pub fn builtin_catalog() -> StaticCatalog {
    StaticCatalog::new()
        .with_tool("echo", &["echo"])
        .with_tool(
            "filesystem",
            &[
                "read", "write", "copy", "move", "delete", "list", "exists", "mkdir",
            ],
        )
        .with_tool("terminal", &["run"])
        .with_tool("python-executor", &["execute"])
        .with_tool("report-generator", &["generate"])
        .with_tool(
            "data-processing",
            &[
                "filter",
                "convert",
                "aggregate",
                "transform",
                "profile",
                "pivot",
                "clean",
                "merge",
            ],
        )
        .with_tool(
            "validation",
            &["validate", "infer_schema", EXTRACT_STRUCTURED],
        )
        .with_tool("web-search", &["search"])
        .with_tool("http", &["request"])
        .with_tool("user-prompt", &["execute"])
        .with_tool("approval-gate", &["execute"])
        .with_tool("feedback-collection", &["execute"])
        .with_tool(PIPELINE_EXECUTOR, &["execute"])
        .with_tool(
            "recursion-control",
            &["check_condition", "update_state", "get_state", "reset"],
        )
        .with_tool("mcp-memory", &["store", "retrieve", "list", "clear"])
        .with_tool(
            "http-client",
            &["get", "post", "put", "patch", "delete", "head", "request"],
        )
        .with_tool(
            "visualization",
            &["create_charts", "create_dashboard", "export_figures"],
        )
        .with_tool(
            "mcp-server",
            &[
                "connect",
                "list_tools",
                "execute_tool",
                "list_resources",
                "read_resource",
                "list_prompts",
                "get_prompt",
                "disconnect",
            ],
        )
        .with_tool(
            "headless-browser",
            &["scrape", "verify", "search", "scrape_js"],
        )
        .with_tool("web-scraper", &["scrape", "extract_text", "extract_links"])
        .with_tool("markdown-to-html", &["convert"])
        .with_tool("pdf-compiler", &["compile"])
        .with_tool("image-analysis", &["execute"])
        .with_tool("image-generation", &["execute"])
        .with_tool("task-delegation", &["execute"])
        .with_tool(
            "multi-model-routing",
            &["execute", "route", "optimize_batch"],
        )
        .with_tool("prompt-optimization", &["execute"])
        .with_tool(LLM_TOOL, MODEL_ACTIONS)
}
