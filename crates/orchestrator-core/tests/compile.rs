//! Compiler behaviour on whole pipelines: the shipped examples, and one
//! broken pipeline per error kind.

use orchestrator_core::{
    CompileOptions, ErrorKind, StepKind, builtin_catalog, compile_json, compile_yaml,
};
use serde_json::{Map, Value, json};

fn validate(yaml: &str) -> Result<orchestrator_core::Compiled, orchestrator_core::CompileError> {
    let catalog = builtin_catalog();
    compile_yaml(
        yaml,
        CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: None,
        },
    )
}

fn with_context(
    yaml: &str,
    ctx: Value,
) -> Result<orchestrator_core::Compiled, orchestrator_core::CompileError> {
    let catalog = builtin_catalog();
    let ctx: Map<String, Value> = ctx.as_object().cloned().unwrap_or_default();
    compile_yaml(
        yaml,
        CompileOptions {
            catalog: &catalog,
            context: Some(&ctx),
            auto_resolver: None,
        },
    )
}

fn example(name: &str) -> String {
    let path = format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn every_example_compiles() {
    let dir = format!("{}/../../examples", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("examples folder") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        if let Err(e) = validate(&text) {
            panic!("{} does not compile: {:#?}", path.display(), e.errors);
        }
        count += 1;
    }
    assert!(count >= 7, "only {count} examples found");
}

#[test]
fn fan_out_fan_in_levels_follow_inferred_dependencies() {
    let compiled = validate(&example("fan_out_fan_in.yaml")).expect("compiles");
    assert_eq!(
        compiled.plan.levels,
        vec![
            vec!["left", "right"],
            vec!["read_left", "read_right"],
            vec!["join"]
        ]
    );
}

#[test]
fn for_each_over_an_input_expands_at_compile_time() {
    let compiled = validate(&example("for_each.yaml")).expect("compiles");
    let ids: Vec<&str> = compiled.plan.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec![
            "per_colour_0_write",
            "per_colour_1_write",
            "per_colour_2_write",
            "per_colour"
        ]
    );
    // Iterations run in order (max_parallel 1).
    assert_eq!(
        compiled.plan.steps[1].depends_on,
        vec!["per_colour_0_write"]
    );
    let join = &compiled.plan.steps[3];
    assert_eq!(join.kind, StepKind::Join);
    let binding = compiled.plan.steps[2].binding.as_ref().expect("binding");
    assert_eq!(binding.values["item"], json!("blue"));
    assert_eq!(binding.values["position"], json!(3));
    assert_eq!(binding.values["is_last"], json!(true));
}

#[test]
fn for_each_with_max_parallel_runs_iterations_side_by_side() {
    let yaml = "name: p\nsteps:\n  - id: l\n    for_each: [a, b, c, d]\n    max_parallel: 2\n    steps:\n      - id: w\n        tool: echo\n        parameters: {x: '{{ item }}'}\n";
    let plan = validate(yaml).expect("compiles").plan;
    assert_eq!(plan.levels[0], vec!["l_0_w", "l_1_w"]);
    assert_eq!(plan.levels[1], vec!["l_2_w", "l_3_w"]);
}

#[test]
fn for_each_over_step_results_expands_at_run_time() {
    let yaml = "name: p\nsteps:\n  - id: list\n    tool: echo\n    parameters: {items: [1, 2]}\n  - id: l\n    for_each: '{{ list.result.items }}'\n    steps:\n      - id: w\n        tool: echo\n        parameters: {x: '{{ item }}', prev: '{{ list.result }}'}\n";
    let plan = validate(yaml).expect("compiles").plan;
    let l = plan.steps.iter().find(|s| s.id == "l").expect("loop");
    assert_eq!(l.kind, StepKind::ForEach);
    assert_eq!(l.depends_on, vec!["list"]);
    let expansion =
        orchestrator_core::plan::expand_for_each(l, &[json!(1), json!(2)], &Default::default())
            .expect("expands");
    let ids: Vec<&str> = expansion.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, vec!["l_0_w", "l_1_w"]);
    assert_eq!(expansion.join_deps, vec!["l_0_w", "l_1_w"]);
}

#[test]
fn body_steps_depend_on_their_siblings_within_an_iteration() {
    let yaml = "name: p\nsteps:\n  - id: l\n    for_each: [a, b]\n    steps:\n      - id: first\n        tool: echo\n      - id: second\n        tool: echo\n        parameters: {x: '{{ first.result }}'}\n";
    let plan = validate(yaml).expect("compiles").plan;
    let second = plan
        .steps
        .iter()
        .find(|s| s.id == "l_1_second")
        .expect("step");
    assert_eq!(second.depends_on, vec!["l_1_first"]);
    let first = plan
        .steps
        .iter()
        .find(|s| s.id == "l_1_first")
        .expect("step");
    assert_eq!(first.depends_on, vec!["l_0_second"]);
}

#[test]
fn the_seeds_action_in_parameters_names_the_tools_action() {
    let yaml = "name: m\nsteps:\n  - id: keep\n    tool: mcp-memory\n    action: execute\n    parameters: {action: store, key: k, value: 1}\n  - id: bare\n    tool: mcp-memory\n    parameters: {action: list}\n";
    let compiled = validate(yaml).expect("compiles");
    let action = |id: &str| {
        compiled
            .plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.step.action.clone())
    };
    assert_eq!(action("keep").as_deref(), Some("store"));
    assert_eq!(action("bare").as_deref(), Some("list"));
    // A parameter that names no action leaves `action` to be judged alone.
    let err = validate(
        "name: m\nsteps:\n  - id: x\n    tool: mcp-memory\n    action: execute\n    parameters: {action: forget}\n",
    )
    .expect_err("refused");
    assert_eq!(err.errors[0].kind, ErrorKind::UnknownAction, "{err:?}");
    // A tool that has `execute` keeps it whatever its parameters say.
    let compiled = validate(
        "name: m\nsteps:\n  - id: ask\n    tool: user-prompt\n    action: execute\n    parameters: {prompt: p, action: store}\n",
    )
    .expect("compiles");
    assert_eq!(compiled.plan.steps[0].step.action, "execute");
}

#[test]
fn model_steps_and_runtime_actions_compile() {
    let compiled = validate(&example("llm_summary.yaml")).expect("compiles");
    let s = compiled
        .plan
        .steps
        .iter()
        .find(|s| s.id == "summarise")
        .expect("step");
    assert!(s.step.is_model_action());
    assert_eq!(s.depends_on, vec!["read"]);
}

#[test]
fn undeclared_names_are_warnings_when_validating_and_errors_when_running() {
    let yaml = example("report.yaml");
    let compiled = validate(&yaml).expect("compiles");
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.kind == ErrorKind::UnknownReference)
    );
    let err = with_context(&yaml, json!({})).expect_err("name missing");
    assert_eq!(err.errors[0].kind, ErrorKind::UnknownReference);
    assert_eq!(err.errors[0].step.as_deref(), Some("hello"));
    with_context(&yaml, json!({"name": "World"})).expect("name given");
}

#[test]
fn a_missing_input_is_reported_once_not_at_every_template() {
    let yaml = "name: t\ninputs:\n  topic: {type: string, required: true}\nsteps:\n  - id: a\n    tool: echo\n    parameters: {text: '{{ topic }}'}\n  - id: b\n    tool: echo\n    parameters: {text: '{{ topic | upper }}'}\n";
    let err = with_context(yaml, json!({})).expect_err("no value");
    assert_eq!(err.errors.len(), 1, "{:?}", err.errors);
    assert_eq!(err.errors[0].kind, ErrorKind::MissingInput);
    assert!(
        err.errors[0].message.contains("required input 'topic'"),
        "{}",
        err.errors[0].message
    );
    with_context(yaml, json!({"topic": "tides"})).expect("given");
}

#[test]
fn caller_inputs_override_defaults_and_are_type_checked() {
    let yaml = example("hello.yaml");
    let plan = with_context(&yaml, json!({"who": "there"}))
        .expect("ok")
        .plan;
    assert_eq!(plan.inputs["who"], json!("there"));
    let err = with_context(&yaml, json!({"who": 5})).expect_err("wrong type");
    assert_eq!(err.errors[0].kind, ErrorKind::InputType);
    assert_eq!(err.errors[0].line, Some(5));
}

#[test]
fn a_pipeline_given_as_json_compiles() {
    let catalog = builtin_catalog();
    let value = json!({"name": "j", "steps": [{"id": "a", "tool": "echo", "action": "echo"}]});
    let compiled = compile_json(
        &value,
        CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: None,
        },
    )
    .expect("compiles");
    assert_eq!(compiled.plan.levels, vec![vec!["a"]]);
}

#[test]
fn auto_tags_resolve_through_the_resolver() {
    struct Answer;
    impl orchestrator_core::AutoResolver for Answer {
        fn resolve(&self, _: &orchestrator_core::AutoTag) -> Result<Value, String> {
            Ok(json!("5"))
        }
    }
    let yaml = "name: p\nsteps:\n  - id: s\n    tool: web-search\n    parameters:\n      query: rust\n      max_results: <AUTO type=\"integer\">how many results?</AUTO>\n";
    let catalog = builtin_catalog();
    let compiled = compile_yaml(
        yaml,
        CompileOptions {
            catalog: &catalog,
            context: None,
            auto_resolver: Some(&Answer),
        },
    )
    .expect("resolves");
    assert_eq!(
        compiled.plan.steps[0].step.parameters["max_results"],
        json!(5)
    );
}

#[test]
fn structural_and_graph_errors_are_reported_together() {
    let yaml = "steps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    depends_on: [c]\n    parameters: {x: '{{ zz.result }}'}\n";
    let err = validate(yaml).expect_err("invalid");
    let kinds: Vec<ErrorKind> = err.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ErrorKind::MissingField,
            ErrorKind::UnknownTool,
            ErrorKind::UnknownDependency,
            ErrorKind::UnknownReference
        ]
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let yaml = "name: p\nsteps:\n  - id: a\n    tool: nope\n  - id: b\n    tool: echo\n    timeout: 0\n  - id: a\n    tool: echo\n";
    let err = validate(yaml).expect_err("invalid");
    let kinds: Vec<ErrorKind> = err.errors.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        vec![
            ErrorKind::UnknownTool,
            ErrorKind::InvalidValue,
            ErrorKind::DuplicateId
        ]
    );
}

/// One broken pipeline per error kind: (name, yaml, kind, step, line).
const BROKEN: &[(&str, &str, ErrorKind, Option<&str>, u32)] = &[
    (
        "malformed yaml",
        "name: p\nsteps: [\n",
        ErrorKind::YamlSyntax,
        None,
        3,
    ),
    (
        "bad indentation",
        "name: p\n steps:\n- id: a\n",
        ErrorKind::YamlSyntax,
        None,
        2,
    ),
    ("empty document", "", ErrorKind::NotAMapping, None, 1),
    (
        "document is a list",
        "- a\n- b\n",
        ErrorKind::NotAMapping,
        None,
        1,
    ),
    (
        "missing name",
        "steps:\n  - id: a\n    tool: echo\n",
        ErrorKind::MissingField,
        None,
        1,
    ),
    (
        "empty name",
        "name: ''\nsteps:\n  - id: a\n    tool: echo\n",
        ErrorKind::InvalidValue,
        None,
        1,
    ),
    (
        "missing steps",
        "name: p\n",
        ErrorKind::MissingField,
        None,
        1,
    ),
    (
        "empty steps",
        "name: p\nsteps: []\n",
        ErrorKind::MissingField,
        None,
        2,
    ),
    (
        "steps not a list",
        "name: p\nsteps: 3\n",
        ErrorKind::InvalidType,
        None,
        2,
    ),
    (
        "step not a mapping",
        "name: p\nsteps:\n  - just text\n",
        ErrorKind::NotAMapping,
        None,
        3,
    ),
    (
        "missing step id",
        "name: p\nsteps:\n  - tool: echo\n",
        ErrorKind::MissingField,
        None,
        3,
    ),
    (
        "bad step id",
        "name: p\nsteps:\n  - id: 1abc\n    tool: echo\n",
        ErrorKind::InvalidId,
        Some("1abc"),
        3,
    ),
    (
        "reserved step id",
        "name: p\nsteps:\n  - id: retry\n    tool: echo\n",
        ErrorKind::ReservedId,
        Some("retry"),
        3,
    ),
    (
        "duplicate step id",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n  - id: a\n    tool: echo\n",
        ErrorKind::DuplicateId,
        Some("a"),
        5,
    ),
    (
        "bad pipeline id",
        "name: p\nid: 'has space'\nsteps:\n  - id: a\n    tool: echo\n",
        ErrorKind::InvalidId,
        None,
        2,
    ),
    (
        "bad version",
        "name: p\nversion: '1.0'\nsteps:\n  - id: a\n    tool: echo\n",
        ErrorKind::InvalidValue,
        None,
        2,
    ),
    (
        "unknown dependency",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    depends_on: [b]\n",
        ErrorKind::UnknownDependency,
        Some("a"),
        5,
    ),
    (
        "self dependency",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    depends_on: a\n",
        ErrorKind::Cycle,
        Some("a"),
        3,
    ),
    (
        "two-step cycle",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    depends_on: [b]\n  - id: b\n    tool: echo\n    depends_on: [a]\n",
        ErrorKind::Cycle,
        Some("a"),
        3,
    ),
    (
        "cycle through templates",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    parameters: {x: '{{ c.result }}'}\n  - id: b\n    tool: echo\n    parameters: {x: '{{ a.result }}'}\n  - id: c\n    tool: echo\n    depends_on: [b]\n",
        ErrorKind::Cycle,
        Some("a"),
        3,
    ),
    (
        "unknown tool",
        "name: p\nsteps:\n  - id: a\n    tool: filesytem\n    action: read\n",
        ErrorKind::UnknownTool,
        Some("a"),
        4,
    ),
    (
        "unknown action",
        "name: p\nsteps:\n  - id: a\n    tool: filesystem\n    action: explode\n",
        ErrorKind::UnknownAction,
        Some("a"),
        5,
    ),
    (
        "unknown runtime action",
        "name: p\nsteps:\n  - id: a\n    action: dance\n",
        ErrorKind::UnknownAction,
        Some("a"),
        4,
    ),
    (
        "missing action",
        "name: p\nsteps:\n  - id: a\n    tool: filesystem\n",
        ErrorKind::MissingAction,
        Some("a"),
        3,
    ),
    (
        "no tool and no action",
        "name: p\nsteps:\n  - id: a\n    parameters: {}\n",
        ErrorKind::MissingAction,
        Some("a"),
        3,
    ),
    (
        "jump to unknown step",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_success: zzz\n",
        ErrorKind::UnknownJumpTarget,
        Some("a"),
        5,
    ),
    (
        "goto to unknown step",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    goto: zzz\n",
        ErrorKind::UnknownJumpTarget,
        Some("a"),
        5,
    ),
    (
        "goto and on_success together",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_success: b\n    goto: b\n  - id: b\n    tool: echo\n",
        ErrorKind::InvalidValue,
        Some("a"),
        6,
    ),
    (
        "on_error handler step unknown",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_error:\n      handler_task_id: nowhere\n",
        ErrorKind::UnknownJumpTarget,
        Some("a"),
        6,
    ),
    (
        "on_error handler with nothing to do",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_error:\n      error_types: [ValueError]\n",
        ErrorKind::InvalidValue,
        Some("a"),
        6,
    ),
    (
        "on_error handler with a bad pattern",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_error:\n      fallback_value: 1\n      error_patterns: ['(']\n",
        ErrorKind::InvalidValue,
        Some("a"),
        7,
    ),
    (
        "on_error as a number",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    on_error: 3\n",
        ErrorKind::InvalidValue,
        Some("a"),
        5,
    ),
    (
        "until on a for_each loop",
        "name: p\nsteps:\n  - id: a\n    for_each: [1, 2]\n    until: 'true'\n    steps:\n      - id: b\n        tool: echo\n",
        ErrorKind::InvalidLoop,
        Some("a"),
        5,
    ),
    (
        "backward jump",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    on_failure: a\n",
        ErrorKind::BackwardJump,
        Some("b"),
        7,
    ),
    (
        "jump to itself",
        "name: p\nsteps:\n  - id: a\n    action: evaluate_condition\n    condition: 'true'\n    on_false: a\n",
        ErrorKind::BackwardJump,
        Some("a"),
        6,
    ),
    (
        "template syntax",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    parameters: {x: '{{ oops'}\n",
        ErrorKind::TemplateSyntax,
        Some("a"),
        5,
    ),
    (
        "condition syntax",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    condition: 'x >'\n",
        ErrorKind::TemplateSyntax,
        Some("a"),
        5,
    ),
    (
        "unknown step reference",
        "name: p\nsteps:\n  - id: read\n    tool: echo\n  - id: b\n    tool: echo\n    parameters: {x: '{{ raed.result.content }}'}\n",
        ErrorKind::UnknownReference,
        Some("b"),
        7,
    ),
    (
        "timeout zero",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    timeout: 0\n",
        ErrorKind::InvalidValue,
        Some("a"),
        5,
    ),
    (
        "timeout text",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    timeout: soon\n",
        ErrorKind::InvalidValue,
        Some("a"),
        5,
    ),
    (
        "max_retries zero",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    max_retries: 0\n",
        ErrorKind::InvalidValue,
        Some("a"),
        5,
    ),
    (
        "bad backoff",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    retry: {backoff: sometimes}\n",
        ErrorKind::InvalidValue,
        Some("a"),
        5,
    ),
    (
        "parameters not a mapping",
        "name: p\nsteps:\n  - id: a\n    tool: echo\n    parameters: [1]\n",
        ErrorKind::InvalidType,
        Some("a"),
        5,
    ),
    (
        "unknown input type",
        "name: p\ninputs:\n  n: {type: integr}\nsteps:\n  - id: a\n    tool: echo\n",
        ErrorKind::InvalidInput,
        None,
        3,
    ),
    (
        "default of wrong type",
        "name: p\ninputs:\n  n: {type: integer, default: many}\nsteps:\n  - id: a\n    tool: echo\n",
        ErrorKind::InvalidInput,
        None,
        3,
    ),
    (
        "loop without steps",
        "name: p\nsteps:\n  - id: l\n    for_each: [1, 2]\n",
        ErrorKind::InvalidLoop,
        Some("l"),
        3,
    ),
    (
        "both loops",
        "name: p\nsteps:\n  - id: l\n    for_each: [1]\n    while: 'true'\n    steps:\n      - id: a\n        tool: echo\n",
        ErrorKind::InvalidLoop,
        Some("l"),
        3,
    ),
    (
        "for_each of a number",
        "name: p\nsteps:\n  - id: l\n    for_each: 3\n    steps:\n      - id: a\n        tool: echo\n",
        ErrorKind::InvalidType,
        Some("l"),
        4,
    ),
    (
        "evaluate_condition without condition",
        "name: p\nsteps:\n  - id: a\n    action: evaluate_condition\n",
        ErrorKind::MissingField,
        Some("a"),
        4,
    ),
];

#[test]
fn broken_pipelines_report_the_exact_error() {
    assert!(BROKEN.len() >= 25);
    for (name, yaml, kind, step, line) in BROKEN {
        let err = match validate(yaml) {
            Ok(_) => panic!("{name}: compiled, but should fail with {kind}"),
            Err(e) => e,
        };
        let found = err
            .errors
            .iter()
            .find(|e| e.kind == *kind)
            .unwrap_or_else(|| panic!("{name}: expected {kind}, got {:#?}", err.errors));
        assert_eq!(found.step.as_deref(), *step, "{name}: step of {found:?}");
        assert_eq!(found.line, Some(*line), "{name}: line of {found:?}");
        assert!(found.column.is_some(), "{name}: no column");
        assert_eq!(
            err.errors.len(),
            1,
            "{name}: expected one error, got {:#?}",
            err.errors
        );
    }
}

#[test]
fn inputs_errors_need_a_context() {
    let yaml = "name: p\ninputs:\n  who: {type: string, required: true}\nsteps:\n  - id: a\n    tool: echo\n    parameters: {x: '{{ who }}'}\n";
    let compiled = validate(yaml).expect("validating does not need the input");
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.kind == ErrorKind::MissingInput)
    );
    let err = with_context(yaml, json!({})).expect_err("missing input");
    assert_eq!(err.errors[0].kind, ErrorKind::MissingInput);
    assert_eq!(err.errors[0].line, Some(3));
    let err = with_context(yaml, json!({"who": [1]})).expect_err("wrong type");
    assert_eq!(err.errors[0].kind, ErrorKind::InputType);
}

#[test]
fn unknown_keys_are_warnings_with_their_line() {
    let yaml = "name: p\nfoo: 1\nsteps:\n  - id: a\n    tool: echo\n    colour: blue\n";
    let compiled = validate(yaml).expect("compiles");
    let lines: Vec<Option<u32>> = compiled.warnings.iter().map(|w| w.line).collect();
    assert_eq!(lines, vec![Some(2), Some(6)]);
}

#[test]
fn cycle_messages_name_the_cycle() {
    let yaml = "name: p\nsteps:\n  - id: a\n    tool: echo\n    depends_on: [b]\n  - id: b\n    tool: echo\n    depends_on: [a]\n";
    let err = validate(yaml).expect_err("cycle");
    assert!(
        err.errors[0].message.contains("a -> b -> a"),
        "{}",
        err.errors[0].message
    );
}

#[test]
fn auto_tags_are_warnings_when_validating_and_errors_without_a_model_when_executing() {
    let yaml = "name: p\nsteps:\n  - id: a\n    tool: echo\n    parameters:\n      x: <AUTO>pick one</AUTO>\n";
    let compiled = validate(yaml).expect("validates");
    let w = compiled
        .warnings
        .iter()
        .find(|w| w.kind == ErrorKind::AutoTag)
        .expect("a warning");
    assert_eq!((w.step.as_deref(), w.line), (Some("a"), Some(6)));
    let err = with_context(yaml, json!({})).expect_err("no model to answer");
    let e = &err.errors[0];
    assert_eq!(
        (e.kind, e.step.as_deref(), e.line),
        (ErrorKind::AutoTag, Some("a"), Some(6))
    );
    assert!(e.message.contains("pick one"), "{}", e.message);
    let tags =
        orchestrator_core::find_auto_tags(&orchestrator_core::yaml::parse(yaml).expect("yaml"));
    assert_eq!(tags.len(), 1);
    assert_eq!(
        (tags[0].step.as_deref(), tags[0].pointer.as_str()),
        (Some("a"), "/steps/0/parameters/x")
    );
}

/// The diagnostics of a pipeline with one of many mistakes per step, as a
/// client receives them: kind, message, line, column, step and pointer.
#[test]
fn every_mistake_of_a_broken_pipeline_is_reported_at_its_place() {
    let yaml = "\
name: broken
steps:
  - id: read
    tool: filesystem
    action: raed
    parameters: {path: in.txt}
  - id: write
    tool: filesytem
    depends_on: [reed]
  - id: say
    tool: echo
    parameters: {text: '{{ nobody.result }}'}
  - id: loop
    for_each: 42
    steps: []
  - id: read
    tool: echo
    timeout: soon
";
    let err = validate(yaml).expect_err("broken");
    insta::assert_json_snapshot!(err.errors);
}

/// The seed's names for the same actions compile to ours; a name no tool
/// has is still refused.
#[test]
fn the_seeds_action_names_compile_to_their_actions() {
    let yaml = "name: aliases\nsteps:\n  - id: t\n    tool: terminal\n    action: execute\n    parameters: {command: ls}\n  - id: l\n    tool: filesystem\n    action: list_directory\n    parameters: {path: .}\n  - id: r\n    tool: report-generator\n    action: create\n    parameters: {content: x}\n";
    let compiled = validate(yaml).expect("compiles");
    let actions: Vec<(&str, &str)> = compiled
        .plan
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.step.action.as_str()))
        .collect();
    assert_eq!(actions, [("t", "run"), ("l", "list"), ("r", "generate")]);
    let err = validate("name: x\nsteps:\n  - id: t\n    tool: terminal\n    action: explode\n")
        .expect_err("no such action");
    assert_eq!(err.errors[0].kind, ErrorKind::UnknownAction);
    assert!(
        err.errors[0].message.contains("'explode'"),
        "{}",
        err.errors[0].message
    );
}

/// A literal `for_each` text is read as the same text rendered by a
/// template is: a list written out (JSON or YAML), else comma-separated.
#[test]
fn literal_for_each_text_is_read_as_rendered_text_is() {
    let items = |for_each: &str| -> Vec<Value> {
        let yaml = format!(
            "name: l\nsteps:\n  - id: each\n    for_each: {for_each}\n    steps:\n      - id: w\n        tool: echo\n"
        );
        let compiled = validate(&yaml).expect("compiles");
        compiled
            .plan
            .steps
            .iter()
            .filter_map(|s| s.binding.as_ref().map(|b| b.values["item"].clone()))
            .collect()
    };
    assert_eq!(items(r#"'["x", "y"]'"#), [json!("x"), json!("y")]);
    assert_eq!(
        items(r#""[a, 'b c', 3]""#),
        [json!("a"), json!("b c"), json!(3)]
    );
    assert_eq!(items("'a, b'"), [json!("a"), json!("b")]);
    assert_eq!(
        orchestrator_core::plan::items_from_value(json!("[a, 'b c', 3]")).expect("reads"),
        [json!("a"), json!("b c"), json!(3)]
    );
}

/// `continue_on_error: true` is `on_failure: continue`; `add_completion_task`
/// is accepted on loops (a loop always finishes after its iterations).
#[test]
fn the_seeds_error_and_loop_keys_are_understood() {
    use orchestrator_core::OnFailure;
    let compiled = validate(
        "name: c\nsteps:\n  - id: a\n    tool: echo\n    continue_on_error: true\n  - id: b\n    tool: echo\n    continue_on_error: true\n    on_failure: fail\n  - id: l\n    for_each: [x]\n    add_completion_task: true\n    steps:\n      - id: w\n        tool: echo\n",
    )
    .expect("compiles");
    let mode = |id: &str| {
        compiled
            .plan
            .steps
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.step.on_failure.clone())
    };
    assert_eq!(mode("a"), Some(OnFailure::Continue));
    assert_eq!(mode("b"), Some(OnFailure::Fail));
    assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    let err =
        validate("name: c\nsteps:\n  - id: a\n    tool: echo\n    continue_on_error: maybe\n")
            .expect_err("not a boolean");
    assert_eq!(err.errors[0].kind, ErrorKind::InvalidType);
    let warned =
        validate("name: c\nsteps:\n  - id: a\n    tool: echo\n    add_completion_task: true\n")
            .expect("compiles");
    assert!(
        warned.warnings[0].message.contains("only applies to loops"),
        "{:?}",
        warned.warnings
    );
}

/// A name declared under `parameters` and again under `inputs` with the
/// first declaration as the second's default (a YAML alias) takes the
/// declaration's default, with a warning; a default of the wrong type is
/// still refused.
#[test]
fn an_input_declared_twice_through_an_alias_takes_the_declared_default() {
    let yaml = "name: twice\nparameters:\n  out: &decl\n    type: string\n    default: results\n    description: where\nsteps:\n  - id: w\n    tool: filesystem\n    action: write\n    parameters: {path: '{{ out }}/a.txt', content: x}\ninputs:\n  out:\n    type: string\n    default: *decl\n";
    let compiled = with_context(yaml, json!({})).expect("compiles");
    assert_eq!(
        compiled.plan.steps[0].step.parameters["path"],
        json!("{{ out }}/a.txt")
    );
    assert_eq!(compiled.plan.inputs.get("out"), Some(&json!("results")));
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.message.contains("declared twice")),
        "{:?}",
        compiled.warnings
    );
    // The first declaration's type holds too: a list, though the second
    // says string.
    let compiled = with_context(
        "name: twice\nparameters:\n  goals: &g\n    type: array\n    default: [clarity, brevity]\nsteps:\n  - id: e\n    tool: echo\ninputs:\n  goals:\n    type: string\n    default: *g\n",
        json!({}),
    )
    .expect("the declared list default compiles");
    assert_eq!(
        compiled.plan.inputs.get("goals"),
        Some(&json!(["clarity", "brevity"]))
    );
    // A number given to a text input is its text, with a warning.
    let compiled = with_context(
        "name: t\ninputs:\n  size:\n    type: string\n    default: 1000\nsteps:\n  - id: e\n    tool: echo\n",
        json!({}),
    )
    .expect("a number default of a string input compiles");
    assert_eq!(compiled.plan.inputs.get("size"), Some(&json!("1000")));
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.message.contains("used as \"1000\"")),
        "{:?}",
        compiled.warnings
    );
    let err = validate("name: t\ninputs:\n  out:\n    type: string\n    default: {a: 1}\nsteps:\n  - id: e\n    tool: echo\n")
        .expect_err("an object is not a string");
    assert!(
        err.errors[0].message.contains("must be of type string"),
        "{}",
        err.errors[0].message
    );
}

/// Diagnostics are listed up to a bound, then counted: a pipeline full of
/// unknown keys (or mistakes) cannot make an answer, or a stored execution,
/// hundreds of times its own size.
#[test]
fn diagnostics_are_listed_up_to_a_bound_then_counted() {
    let mut yaml = String::from("name: many\nsteps:\n  - id: a\n    tool: echo\n");
    for i in 0..500 {
        yaml.push_str(&format!("    unknown_{i}: 1\n"));
    }
    let compiled = validate(&yaml).expect("compiles");
    assert_eq!(compiled.warnings.len(), 101);
    assert_eq!(
        compiled.warnings[100].message,
        "400 more warnings like these are not listed"
    );
    let mut yaml = String::from("name: bad\nsteps:\n");
    for i in 0..300 {
        yaml.push_str(&format!("  - id: s{i}\n    tool: nope\n"));
    }
    let err = validate(&yaml).expect_err("unknown tools");
    assert_eq!(err.errors.len(), 101);
    assert!(
        err.errors[100].message.starts_with("200 more errors"),
        "{}",
        err.errors[100].message
    );
}

/// A key written twice keeps its last value, as the seed's YAML loader
/// does, with a warning at the second place naming the first.
#[test]
fn a_key_written_twice_keeps_its_last_value_with_a_warning() {
    let compiled = validate(
        "name: first\nsteps:\n  - id: a\n    tool: echo\n    parameters:\n      mode: strict\n      n: 1\n      mode: lenient\nname: last\n",
    )
    .expect("compiles");
    assert_eq!(compiled.plan.pipeline.name, "last");
    assert_eq!(
        compiled.plan.steps[0].step.parameters["mode"],
        serde_json::json!("lenient")
    );
    let found: Vec<(Option<u32>, &str)> = compiled
        .warnings
        .iter()
        .map(|w| (w.line, w.message.as_str()))
        .collect();
    assert_eq!(
        found[..2],
        [
            (
                Some(8),
                "duplicate key 'mode' (first at line 6): the last value is used"
            ),
            (
                Some(9),
                "duplicate key 'name' (first at line 1): the last value is used"
            ),
        ]
    );
}

#[test]
fn a_described_action_of_a_one_action_tool_runs_that_action() {
    let yaml = "name: t\nsteps:\n  - id: nap\n    tool: terminal\n    action: \"Sleep for 5 seconds to test timeout\"\n    parameters: {command: 'sleep 5'}\n";
    let compiled = validate(yaml).expect("compiles");
    assert_eq!(compiled.plan.steps[0].step.action, "run");
    assert!(
        compiled
            .warnings
            .iter()
            .any(|w| w.kind == ErrorKind::UnknownAction && w.message.contains("only action 'run'")),
        "{:?}",
        compiled.warnings
    );
    // One word that is no action is a mistake, even on a one-action tool.
    let err = validate("name: t\nsteps:\n  - id: nap\n    tool: terminal\n    action: rnu\n    parameters: {command: x}\n")
        .expect_err("typo");
    assert_eq!(err.errors[0].kind, ErrorKind::UnknownAction);
    // A tool with several actions needs a real one.
    let err = validate("name: t\nsteps:\n  - id: r\n    tool: filesystem\n    action: read the notes\n    parameters: {path: x}\n")
        .expect_err("ambiguous");
    assert_eq!(err.errors[0].kind, ErrorKind::UnknownAction);
}
