//! Unit tests of rendering, names and limits.

use super::*;
use serde_json::json;

fn scope() -> Scope {
    let mut s = Scope::new();
    s.set_inputs(
        &json!({"who": "world", "colours": ["red", "green"], "n": 3})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    s.set_step(
        "read",
        StepEnvelope {
            result: json!({"content": "hi\n", "path": "out/a.txt"}),
            success: true,
            error: None,
        },
    );
    s.set_step(
        "gen",
        StepEnvelope {
            result: json!("some text"),
            success: true,
            error: None,
        },
    );
    s.set_none("skipped");
    s
}

#[test]
fn strings_render_with_inputs_and_step_results() {
    let s = scope();
    assert_eq!(
        render_str("hello, {{ who }}", &s).ok(),
        Some("hello, world".into())
    );
    assert_eq!(
        render_str("{{ read.result.content }}", &s).ok(),
        Some("hi\n".into())
    );
    assert_eq!(
        render_str("{{ inputs.who }}/{{ parameters.n }}", &s).ok(),
        Some("world/3".into())
    );
    assert_eq!(render_str("{{ gen }}", &s).ok(), Some("some text".into()));
    assert_eq!(
        render_str("{{ read.content }}", &s).ok(),
        Some("hi\n".into())
    );
}

#[test]
fn trailing_newlines_are_kept() {
    assert_eq!(
        render_str("a {{ who }}\n", &scope()).ok(),
        Some("a world\n".into())
    );
    assert_eq!(render_str("x\n\n", &scope()).ok(), Some("x\n\n".into()));
}

#[test]
fn a_single_expression_keeps_its_type() {
    let s = scope();
    assert_eq!(
        render_string_value("{{ colours }}", &s).ok(),
        Some(json!(["red", "green"]))
    );
    assert_eq!(render_string_value("{{ n + 1 }}", &s).ok(), Some(json!(4)));
    assert_eq!(
        render_string_value("{{ skipped }}", &s).ok(),
        Some(json!(null))
    );
    assert_eq!(render_string_value(" {{ n }}", &s).ok(), Some(json!(" 3")));
}

#[test]
fn undefined_names_are_errors() {
    let err = render_str("{{ nope }}", &scope()).expect_err("strict");
    assert!(err.undefined, "{err:?}");
    let err = render_string_value("{{ read.result.missing }}", &scope()).expect_err("strict");
    assert!(err.message.contains("undefined"), "{err:?}");
}

#[test]
fn conditions_evaluate_to_booleans() {
    let s = scope();
    assert_eq!(
        eval_condition("{{ who | length > 3 }}", &s).ok(),
        Some(true)
    );
    assert_eq!(eval_condition("n > 5", &s).ok(), Some(false));
    assert_eq!(eval_condition("{{ 'yes' }}", &s).ok(), Some(true));
    assert!(eval_condition("{{ 'banana' }}", &s).is_err());
    assert!(eval_condition("import os", &s).is_err());
}

#[test]
fn filters_of_the_language_page_work() {
    let s = scope();
    let r = |t: &str| render_str(t, &s).unwrap_or_else(|e| panic!("{t}: {e}"));
    assert_eq!(r("{{ 'Hello, World!' | slugify }}"), "hello-world");
    assert_eq!(r("{{ 'a b c d' | truncate_words(2) }}"), "a b...");
    assert_eq!(
        r("{{ 'v1.25' | regex_search('[0-9]+\\\\.[0-9]+') }}"),
        "1.25"
    );
    assert_eq!(r("{{ 'a-b-c' | regex_replace('-', '+') }}"), "a+b+c");
    assert_eq!(r("{{ colours | to_json }}"), "[\"red\",\"green\"]");
    assert_eq!(r("{{ ('{\"a\": 2}' | from_json).a }}"), "2");
    assert_eq!(
        r("{{ '2024-03-05T10:00:00Z' | date('%d/%m/%Y') }}"),
        "05/03/2024"
    );
    assert_eq!(r("{{ read.result.path | basename }}"), "a.txt");
}

#[test]
fn runaway_templates_are_stopped() {
    let err = render_str(
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        &scope(),
    )
    .expect_err("fuel");
    assert!(err.message.contains("too long"), "{err:?}");
}

#[test]
fn references_list_root_names_only() {
    let names = referenced_names("{{ a.result.x }} {% for i in items %}{{ i }}{{ b }}{% endfor %}")
        .expect("parses");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["a", "b", "items"]
    );
    assert!(referenced_names("{{ a.b").is_err());
}

#[test]
fn literals_in_outputs_become_values() {
    assert_eq!(parse_literal("42"), json!(42));
    assert_eq!(parse_literal("[1, 2]"), json!([1, 2]));
    assert_eq!(parse_literal("true"), json!(true));
    assert_eq!(parse_literal("hello"), json!("hello"));
    assert_eq!(parse_literal("-"), json!("-"));
}
