//! Unit tests of the reader: positions, limits, aliases, scalars.

use super::*;

#[test]
fn scalars_follow_the_core_schema() {
    let node = parse("a: 1\nb: 1.5\nc: true\nd: ~\ne: '1'\nf: hello\ng: 0x1F\nh: 1e3\ni: yes\n")
        .expect("valid yaml");
    let json = node.to_json();
    assert_eq!(
        json,
        serde_json::json!({"a": 1, "b": 1.5, "c": true, "d": null, "e": "1", "f": "hello", "g": 31, "h": 1000.0, "i": "yes"})
    );
}

#[test]
fn keys_and_values_keep_their_positions() {
    let node = parse("name: x\nsteps:\n  - id: a\n    tool: echo\n").expect("valid");
    let steps = node.get("steps").expect("steps");
    assert_eq!(steps.pos.line, 3);
    let NodeValue::Seq(items) = &steps.value else {
        panic!("not a list")
    };
    let tool = items[0].as_map().expect("map")[1].0.clone();
    assert_eq!(
        (tool.name.as_str(), tool.pos.line, tool.pos.column),
        ("tool", 4, 5)
    );
}

#[test]
fn duplicate_keys_keep_the_last_value_when_lenient() {
    let (node, duplicates) =
        super::parse_lenient("a: 1\nb: {c: 2, c: 3}\na: 4\n").expect("lenient");
    assert_eq!(node.to_json(), serde_json::json!({"a": 4, "b": {"c": 3}}));
    let found: Vec<(String, u32)> = duplicates
        .iter()
        .map(|d| (d.message.clone(), d.pos.line))
        .collect();
    assert_eq!(
        found,
        vec![
            ("duplicate key 'c' (first at line 2)".to_string(), 2),
            ("duplicate key 'a' (first at line 1)".to_string(), 3)
        ]
    );
}

#[test]
fn duplicate_keys_are_rejected_with_both_lines() {
    let err = parse("a: 1\nb: 2\na: 3\n").expect_err("duplicate");
    assert_eq!(err.pos.line, 3);
    assert!(err.message.contains("first at line 1"), "{}", err.message);
}

#[test]
fn anchors_aliases_and_merge_keys_expand() {
    let node = parse("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n").expect("valid");
    assert_eq!(
        node.get("other").expect("other").to_json(),
        serde_json::json!({"y": 3, "x": 1})
    );
}

#[test]
fn alias_bombs_are_refused() {
    let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        let prev = i - 1;
        doc.push_str(&format!(
            "a{i}: &a{i} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    let err = parse(&doc).expect_err("bomb");
    assert!(err.message.contains("aliases expand"), "{}", err.message);
}

#[test]
fn syntax_errors_carry_a_position() {
    let err = parse("a: [1, 2\nb: 3\n").expect_err("bad");
    assert!(err.pos.line >= 1);
    let err = parse("a: b: c\n").expect_err("bad");
    assert_eq!(err.pos.line, 1);
}

#[test]
fn a_second_document_is_an_error() {
    let err = parse("a: 1\n---\nb: 2\n").expect_err("two docs");
    assert_eq!(err.pos.line, 2);
}
