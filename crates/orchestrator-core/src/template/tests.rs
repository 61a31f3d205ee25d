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
        StepEnvelope::finished(json!({"content": "hi\n", "path": "out/a.txt"}), true, None),
    );
    s.set_step(
        "gen",
        StepEnvelope::finished(json!("some text"), true, None),
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
    assert_eq!(
        r("{{ '2024-03-05 10:30:00' | date('%Y-%m %H:%M') }}"),
        "2024-03 10:30"
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

#[test]
fn jinja_text_filters_take_positional_and_keyword_arguments() {
    let s = scope();
    let long = "{% set t = 'the quick brown fox jumps over the lazy dog' %}";
    let r = |t: &str| render_str(&format!("{long}{t}"), &s).map_err(|e| e.message);
    assert_eq!(
        r("{{ t | truncate(20) }}").as_deref(),
        Ok("the quick brown...")
    );
    assert_eq!(
        r("{{ t | truncate(length=20, end='~', killwords=true) }}").as_deref(),
        Ok("the quick brown fox~")
    );
    assert_eq!(
        r("{{ t | truncate(100) }}").as_deref(),
        Ok("the quick brown fox jumps over the lazy dog")
    );
    assert_eq!(r("{{ t | wordcount }}").as_deref(), Ok("9"));
    assert_eq!(
        r("{{ t | wordwrap(20, wrapstring='|') }}").as_deref(),
        Ok("the quick brown fox|jumps over the lazy|dog")
    );
    assert_eq!(r("[{{ 'ab' | center(5) }}]").as_deref(), Ok("[  ab ]"));
    assert_eq!(r("[{{ 'abc' | center(6) }}]").as_deref(), Ok("[ abc  ]"));
    assert_eq!(
        r("{{ '<b>bold</b> text' | striptags }}").as_deref(),
        Ok("bold text")
    );
    assert_eq!(r("{{ 1500000 | filesizeformat }}").as_deref(), Ok("1.5 MB"));
    assert_eq!(r("{{ ['only'] | random }}").as_deref(), Ok("only"));
    assert!(r("{{ t | truncate(1, 2, 3, 4, 5) }}").is_err());
    assert!(r("{{ t | truncate(20, nonsense=1) }}").is_err());
}

#[test]
fn text_filters_refuse_output_past_the_limit_before_making_it() {
    let s = scope();
    let err = render_str("{{ 'x' | center(999999999999) }}", &s).expect_err("too wide");
    assert!(
        err.message.contains("limits.template_output_bytes"),
        "{}",
        err.message
    );
    let err = render_str(
        "{{ ('a ' * 100000) | wordwrap(1, wrapstring='-' * 100000) }}",
        &s,
    )
    .expect_err("too many wrap strings");
    assert!(
        err.message.contains("limits.template_output_bytes"),
        "{}",
        err.message
    );
}

#[test]
fn seed_loop_variables_with_a_dollar_read_the_plain_names() {
    assert_eq!(
        seed_syntax(
            "{{ $item }} costs $5 and {{ '$item' }} {% if $is_first %}1{% endif %}",
            false
        ),
        "{{ item }} costs $5 and {{ '$item' }} {% if is_first %}1{% endif %}"
    );
    assert_eq!(seed_syntax("$iteration < 3", true), "iteration < 3");
    assert_eq!(seed_syntax("no dollars", false), "no dollars");
    let names = referenced_names("{{ $item.name }}-{{ $index }}").expect("parses");
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["index".to_string(), "item".to_string()]
    );
    let mut s = scope();
    s.set("item", &json!({"name": "n"}));
    assert_eq!(
        render_str("{{ $item.name }}", &s).ok().as_deref(),
        Some("n")
    );
}

#[test]
fn a_step_that_did_not_run_has_a_status_and_a_step_stands_for_its_result() {
    let mut s = scope();
    s.set_step("never", StepEnvelope::not_run("skipped", None));
    s.set_step(
        "fetch",
        StepEnvelope::finished(json!({"status": 200, "body": "ok"}), true, None),
    );
    let r = |t: &str| render_str(t, &s).map_err(|e| e.message);
    assert_eq!(
        r("{% if never.status != 'skipped' %}ran{% else %}{{ never.status }}{% endif %}")
            .as_deref(),
        Ok("skipped")
    );
    assert_eq!(
        r("[{{ never }}]{{ never.skipped }}").as_deref(),
        Ok("[]True")
    );
    assert_eq!(
        r("{{ read.status }}/{{ read.skipped }}").as_deref(),
        Ok("succeeded/False")
    );
    // A result's own `status` field wins.
    assert_eq!(r("{{ fetch.status }}").as_deref(), Ok("200"));
    assert_eq!(
        render_string_value("{{ read }}", &s).ok(),
        Some(json!({"content": "hi\n", "path": "out/a.txt"}))
    );
}

#[test]
fn a_step_whose_result_is_text_is_that_text_in_comparisons_and_filters() {
    let s = scope();
    let r = |t: &str| render_str(t, &s).map_err(|e| e.message);
    assert_eq!(r("{{ gen == 'some text' }}").as_deref(), Ok("True"));
    assert_eq!(r("{{ 'some text' == gen }}").as_deref(), Ok("True"));
    assert_eq!(r("{{ gen != 'other' }}").as_deref(), Ok("True"));
    assert_eq!(
        r("{{ 'text' in gen }}, {{ 'MOCK' in gen }}").as_deref(),
        Ok("True, False")
    );
    assert_eq!(r("{{ gen | upper }}").as_deref(), Ok("SOME TEXT"));
    assert_eq!(
        r("{{ gen.result }}|{{ gen.success }}|{{ gen.status }}").as_deref(),
        Ok("some text|True|succeeded")
    );
    assert_eq!(r("{{ gen ~ '!' }}").as_deref(), Ok("some text!"));
    assert_eq!(
        r("{{ gen | slugify }}|{{ gen | wordcount }}|{{ gen | truncate(5, leeway=0) }}|{{ gen | replace('some', 'any') }}").as_deref(),
        Ok("some-text|2|so...|any text")
    );
    assert!(eval_condition("'some' in gen", &s).expect("evaluates"));
    assert!(!eval_condition("gen == 'x'", &s).expect("evaluates"));
}

#[test]
fn python_methods_work_as_in_the_seed() {
    let mut s = scope();
    s.set("state", &json!({"n": 1, "seen": ["a"]}));
    assert_eq!(
        render_str("{{ who.upper() }} {{ 'a,b'.split(',') | length }}", &s).ok(),
        Some("WORLD 2".into())
    );
    assert_eq!(
        eval_condition("state.get('n', 5) <= 1", &s).ok(),
        Some(true)
    );
    assert_eq!(
        eval_condition("state.get('missing', 5) <= 1", &s).ok(),
        Some(false)
    );
    assert_eq!(
        render_str("{% for k, v in state.items() %}{{ k }};{% endfor %}", &s).ok(),
        Some("n;seen;".into())
    );
}
