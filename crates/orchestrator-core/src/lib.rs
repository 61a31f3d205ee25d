//! Orchestrator's pipeline compiler: YAML text plus caller inputs in, a
//! validated [`ExecutionPlan`] out, or every problem with its line, column and
//! step. Pure: no I/O, no async runtime, no HTTP or database crates.
//!
//! ```
//! use orchestrator_core::{builtin_catalog, compile_yaml, CompileOptions};
//! let yaml = "name: demo\nsteps:\n  - id: a\n    tool: echo\n    action: echo\n  - id: b\n    tool: echo\n    parameters: {x: '{{ a.result }}'}\n";
//! let catalog = builtin_catalog();
//! let options = CompileOptions { catalog: &catalog, context: None, auto_resolver: None };
//! let compiled = compile_yaml(yaml, options).unwrap();
//! assert_eq!(compiled.plan.levels, vec![vec!["a".to_string()], vec!["b".to_string()]]);
//! ```

pub mod auto;
pub mod catalog;
pub mod compile;
pub mod error;
pub mod flow;
pub mod limits;
pub mod model;
pub mod plan;
pub mod template;
pub mod yaml;

pub use auto::{AutoResolver, AutoTag};
pub use catalog::{StaticCatalog, ToolCatalog, builtin_catalog};
pub use compile::{
    CompileOptions, Compiled, compile_json, compile_node, compile_yaml, find_auto_tags,
    parse_pipeline,
};
pub use error::{CompileError, Diagnostic, ErrorKind};
pub use model::{InputSpec, InputType, LoopSpec, OnFailure, Pipeline, RetryPolicy, Step};
pub use plan::{ExecutionPlan, PlannedStep, StepKind};
