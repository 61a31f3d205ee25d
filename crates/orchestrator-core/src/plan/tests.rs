//! Unit tests of planning.

use super::*;
use crate::model::OnFailure;

fn step(id: &str, deps: &[&str]) -> PlannedStep {
    PlannedStep {
        id: id.into(),
        kind: StepKind::Task,
        step: Step {
            id: id.into(),
            tool: Some("echo".into()),
            action: "echo".into(),
            parameters: Map::new(),
            depends_on: vec![],
            depends_on_pos: vec![],
            condition: None,
            on_false: None,
            on_success: None,
            on_failure: OnFailure::Fail,
            on_error: Vec::new(),
            timeout: None,
            retry: Default::default(),
            retry_explicit: false,
            loop_spec: None,
            model: None,
            requires_model: None,
            produces: None,
            location: None,
            format: None,
            line: 0,
        },
        depends_on: deps.iter().map(|d| d.to_string()).collect(),
        scope: String::new(),
        order: 0,
        binding: None,
        iterations: 0,
    }
}

#[test]
fn levels_group_independent_steps() {
    let steps = vec![
        step("a", &[]),
        step("b", &[]),
        step("c", &["a", "b"]),
        step("d", &["c"]),
        step("e", &["a"]),
    ];
    assert_eq!(
        levels(&steps),
        vec![vec!["a", "b"], vec!["c", "e"], vec!["d"]]
    );
}

#[test]
fn cycles_are_named_from_the_earliest_step() {
    let steps = vec![
        step("x", &[]),
        step("a", &["c"]),
        step("b", &["a"]),
        step("c", &["b"]),
    ];
    let cycle = find_cycle(&steps).expect("cycle");
    assert_eq!(cycle, vec!["a", "c", "b", "a"]);
    let steps = vec![step("a", &["a"])];
    assert_eq!(
        find_cycle(&steps),
        Some(vec!["a".to_string(), "a".to_string()])
    );
}
