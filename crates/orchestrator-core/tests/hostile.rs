//! Hostile input is refused quickly and with bounded memory: alias bombs,
//! deep nesting, step-count bombs, templates that would render gigabytes.

use std::time::{Duration, Instant};

use orchestrator_core::template::{Scope, render_str};
use orchestrator_core::{CompileOptions, ErrorKind, builtin_catalog, compile_yaml};

fn compile(yaml: &str) -> Result<orchestrator_core::Compiled, orchestrator_core::CompileError> {
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

/// Runs `f`, which must take less than a second.
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{what} took {:?}",
        started.elapsed()
    );
    out
}

#[test]
fn a_billion_laughs_document_is_refused() {
    let mut yaml = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..10 {
        let prev = format!("*a{}", i - 1);
        yaml.push_str(&format!("a{i}: &a{i} [{}]\n", vec![prev; 10].join(", ")));
    }
    yaml.push_str("name: lol\nsteps:\n  - id: s\n    tool: echo\n    parameters: {x: *a9}\n");
    let err = quick("billion laughs", || compile(&yaml)).expect_err("refused");
    assert_eq!(err.errors[0].kind, ErrorKind::YamlSyntax);
    assert!(
        err.errors[0].message.contains("aliases expand"),
        "{}",
        err.errors[0].message
    );
}

#[test]
fn ten_thousand_nested_lists_are_refused() {
    let yaml = format!(
        "name: deep\nsteps: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let err = quick("deep nesting", || compile(&yaml)).expect_err("refused");
    let m = &err.errors[0].message;
    assert!(
        m.contains("nesting deeper than") || m.contains("recursion limit"),
        "{m}"
    );
    let yaml = format!(
        "name: deep\nsteps:\n{}",
        (0..10_000)
            .map(|i| format!("{}- \n", "  ".repeat(i)))
            .collect::<String>()
    );
    let err = quick("deep block nesting", || compile(&yaml)).expect_err("refused");
    assert!(!err.errors.is_empty());
}

#[test]
fn a_step_count_bomb_is_refused_before_it_is_built() {
    // 100,000 items, each expanding a three-step body.
    let items: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let yaml = format!(
        "name: bomb\nsteps:\n  - id: l\n    for_each: [{}]\n    steps:\n      - id: a\n        tool: echo\n      - id: b\n        tool: echo\n      - id: c\n        tool: echo\n",
        items.join(", ")
    );
    let err = quick("step bomb", || compile(&yaml)).expect_err("refused");
    let e = &err.errors[0];
    assert_eq!(
        (e.kind, e.step.as_deref()),
        (ErrorKind::InvalidLoop, Some("l"))
    );
    assert!(e.message.contains("10000"), "{}", e.message);
    let err = compile("name: w\nsteps:\n  - id: l\n    while: 'true'\n    max_iterations: 100000000\n    steps:\n      - id: a\n        tool: echo\n")
        .expect_err("too many iterations");
    assert!(
        err.errors
            .iter()
            .any(|e| e.message.contains("'max_iterations' may be at most")),
        "{:?}",
        err.errors
    );
}

#[test]
fn templates_that_would_render_gigabytes_are_refused() {
    let scope = Scope::default();
    for t in [
        "{{ 'x' * 1000000000 }}",
        "{{ ('x' * 10000) | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') | replace('x', 'xxxxxxxxxx') }}",
        "{{ ('x' * 10000) | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') | regex_replace('x', '$0$0$0$0$0$0$0$0$0$0') }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    ] {
        let err = quick(t, || render_str(t, &scope)).expect_err(t);
        assert!(!err.message.is_empty());
    }
}
