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

/// Runs `f`, which must end within seconds: these inputs took minutes, or
/// forever, before they were bounded. (The bound is loose so a busy machine
/// does not fail it; the benchmarks measure speed.)
fn quick<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = f();
    assert!(
        started.elapsed() < Duration::from_secs(5),
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

/// A template nested deeper than the parser allows, in every form it can take.
fn deep_templates(n: usize) -> Vec<String> {
    vec![
        format!("{{{{ 1{} }}}}", " + 1".repeat(n)),
        format!("{{{{ {}true }}}}", "not ".repeat(n)),
        format!("{{{{ {}1 }}}}", "-".repeat(n)),
        format!("{{{{ 'a'{} }}}}", "|upper".repeat(n)),
        format!("{{{{ x{} }}}}", ".y".repeat(n)),
        format!("{{{{ x{} }}}}", "[0]".repeat(n)),
        format!("{{{{ x{} }}}}", "()".repeat(n)),
        format!("{{{{ {}1 }}}}", "1 if x else ".repeat(n)),
        format!("{{{{ 1{} }}}}", " is number".repeat(n)),
        format!("{{% if x %}}{}{{% endif %}}", "{% elif x %}".repeat(n)),
        format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n)),
    ]
}

#[test]
fn deeply_nested_templates_are_refused_at_compile_time_naming_step_and_parameter() {
    // Each of these overflowed the stack and aborted the process.
    for t in deep_templates(5_000) {
        let yaml = format!(
            "name: deep\nsteps:\n  - id: s\n    tool: echo\n    parameters:\n      text: {}\n",
            serde_json::to_string(&t).expect("json")
        );
        let err = quick("deep template", || compile(&yaml)).expect_err("refused");
        let e = &err.errors[0];
        assert_eq!(e.kind, ErrorKind::TemplateSyntax, "{t:.40}: {e:?}");
        assert_eq!(e.step.as_deref(), Some("s"), "{t:.40}: {e:?}");
        assert_eq!(e.pointer.as_deref(), Some("/steps/0/parameters/text"));
        assert!(e.message.contains("recursion"), "{t:.40}: {}", e.message);
    }
    // Within the bound they still work.
    let scope = Scope::default();
    let fine = format!("{{{{ 1{} }}}}", " + 1".repeat(100));
    assert_eq!(render_str(&fine, &scope).ok().as_deref(), Some("101"));
}

#[test]
fn templates_cannot_build_values_deeper_than_the_bound_at_run_time() {
    let scope = Scope::default();
    for t in [
        // One level deeper per loop iteration: aborted the process, and the
        // recovered step aborted the next one.
        "{% set ns = namespace(x=[]) %}{% for i in range(50000) %}{% set ns.x = [ns.x] %}{% endfor %}{{ ns.x|length }}".to_string(),
        // One level deeper per statement.
        format!("{{% set x = 1 %}}{}{{{{ x }}}}", "{% set x = [x] %}".repeat(5_000)),
        // A namespace inside itself, and two namespaces holding each other.
        "{% set ns = namespace(x=1) %}{% set ns.x = [ns] %}{{ ns }}".to_string(),
        "{% set a = namespace(x=1) %}{% set b = namespace(x=[a]) %}{% set a.x = [b] %}{{ a }}".to_string(),
        // A chain of namespaces built in a loop.
        "{% set ns = namespace(c=none) %}{% for i in range(50000) %}{% set ns.c = namespace(n=ns.c) %}{% endfor %}{{ ns.c }}".to_string(),
    ] {
        let err = quick(&t, || render_str(&t, &scope)).expect_err(&t);
        assert!(
            err.message.contains("nests deeper") || err.message.contains("cannot hold a namespace"),
            "{t:.60}: {}",
            err.message
        );
    }
    // Shared structure is checked once per container, not once per path.
    let wide = "{% set ns = namespace(x=[1]) %}{% for i in range(60) %}{% set ns.x = [ns.x, ns.x] %}{% endfor %}{{ ns.x|length }}";
    assert_eq!(
        quick(wide, || render_str(wide, &scope)).ok().as_deref(),
        Some("2")
    );
}

#[test]
fn the_output_limit_holds_for_every_rendered_value() {
    use orchestrator_core::template::{render_string_value, render_value};
    let scope = Scope::default();
    // One expression kept its native type and skipped the limit: 100 MB
    // went into the step's parameters, its checkpoint and the database.
    // Refused before the 100 MB are made: the fuel cannot pay for them.
    let err = render_string_value("{{ 'a' * 100000000 }}", &scope).expect_err("too large");
    assert!(err.message.contains("too much data"), "{}", err.message);
    let err = render_string_value("{{ [('a' * 1000000)] * 100 }}", &scope).expect_err("too large");
    assert!(err.message.contains("larger than"), "{}", err.message);
    // The limit is for all of a step's parameters together.
    let params = serde_json::json!({
        "a": "{{ 'a' * 10000000 }}",
        "b": ["{{ 'b' * 10000000 }}"],
    });
    let err = render_value(&params, &scope).expect_err("too large together");
    assert!(err.message.contains("larger than"), "{}", err.message);
    let fine = serde_json::json!({"a": "{{ 'a' * 1000 }}", "b": "x{{ 'b' * 1000 }}"});
    assert!(render_value(&fine, &scope).is_ok());
}

#[test]
fn a_rendered_value_too_deep_to_read_back_is_refused() {
    use orchestrator_core::template::render_string_value;
    let mut deep = serde_json::json!(1);
    for _ in 0..120 {
        deep = serde_json::json!([deep]);
    }
    let mut scope = Scope::default();
    scope.set("deep", &deep);
    let err = render_string_value("{{ deep }}", &scope).expect_err("too deep");
    assert!(err.message.contains("nests deeper"), "{}", err.message);
    assert!(
        render_string_value(
            "{{ deep[0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0][0] }}",
            &scope
        )
        .is_ok()
    );
}

#[test]
fn aliases_of_a_large_scalar_are_bounded_by_bytes() {
    // 67 KB of text: 40,000 copies of a 256 KiB string once expanded (10 GB).
    let big = "x".repeat(256 * 1024);
    let hundred = vec!["*s"; 100].join(", ");
    let four_hundred = vec!["*h"; 400].join(", ");
    let yaml = format!(
        "big: &s '{big}'\nh: &h [{hundred}]\nall: [{four_hundred}]\nname: n\nsteps:\n  - id: s\n    tool: echo\n"
    );
    let err = quick("alias bytes", || compile(&yaml)).expect_err("refused");
    assert_eq!(err.errors[0].kind, ErrorKind::YamlSyntax);
    assert!(
        err.errors[0]
            .message
            .contains("limits.max_yaml_alias_bytes"),
        "{}",
        err.errors[0].message
    );
    // A few aliases of a modest anchor still work.
    let ok = "base: &b {x: 1, y: 'some text'}\nname: n\nsteps:\n  - id: s\n    tool: echo\n    parameters: {a: *b, b: *b}\n";
    assert!(compile(ok).is_ok());
}

#[test]
fn a_mapping_with_many_keys_is_read_in_linear_time() {
    // 150,000 keys (under 2 MB) took up to a minute of CPU: each key was
    // compared with every earlier one. Eight times the keys must take far
    // less than the 64 times the time a quadratic reader needs.
    fn wide(keys: usize, merge: bool) -> String {
        let entries: String = (0..keys).map(|i| format!("  k{i}: {i}\n")).collect();
        if merge {
            format!(
                "base: &m\n{entries}other:\n  <<: *m\n  k1: replaced\nname: n\nsteps:\n  - id: s\n    tool: echo\n"
            )
        } else {
            format!("name: n\nparameters:\n{entries}steps:\n  - id: s\n    tool: echo\n")
        }
    }
    for merge in [false, true] {
        let (small, large) = (wide(10_000, merge), wide(80_000, merge));
        let started = Instant::now();
        compile(&small).expect("valid");
        let small_took = started.elapsed();
        let started = Instant::now();
        compile(&large).expect("valid");
        let large_took = started.elapsed();
        assert!(
            large_took < small_took * 24,
            "merge {merge}: 10,000 keys {small_took:?}, 80,000 keys {large_took:?}"
        );
    }
    let duplicate = format!(
        "{}  k7: again\n",
        wide(1_000, false).replace("steps:\n  - id: s\n    tool: echo\n", "")
    );
    // Kept (the last value), as the seed does, and reported.
    let compiled = compile(&format!("{duplicate}steps:\n  - id: s\n    tool: echo\n"))
        .expect("a duplicate key is a warning");
    assert!(
        compiled.warnings[0].message.contains("duplicate key 'k7'"),
        "{:?}",
        compiled.warnings
    );
}

#[test]
fn nested_loops_count_every_level_against_max_steps() {
    // 100 x 1,000 planned 100,101 steps; 100 x 100 x 100 validated as 101.
    let hundred = (0..100)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let thousand = (0..1000)
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    for yaml in [
        format!(
            "name: n\nsteps:\n  - id: a\n    for_each: [{hundred}]\n    steps:\n      - id: b\n        for_each: [{thousand}]\n        steps:\n          - id: c\n            tool: echo\n"
        ),
        format!(
            "name: n\nsteps:\n  - id: a\n    for_each: [{hundred}]\n    steps:\n      - id: b\n        for_each: [{hundred}]\n        steps:\n          - id: c\n            for_each: [{hundred}]\n            steps:\n              - id: d\n                tool: echo\n"
        ),
    ] {
        let err = quick("nested loops", || compile(&yaml)).expect_err("refused");
        let e = &err.errors[0];
        assert_eq!(
            (e.kind, e.step.as_deref()),
            (ErrorKind::InvalidLoop, Some("a"))
        );
        assert!(e.message.contains("limits.max_steps"), "{}", e.message);
    }
    let fine = format!(
        "name: n\nsteps:\n  - id: a\n    for_each: [1, 2, 3]\n    steps:\n      - id: b\n        for_each: [{hundred}]\n        steps:\n          - id: c\n            tool: echo\n"
    );
    assert!(compile(&fine).is_ok());
}
