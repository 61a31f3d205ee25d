//! Unit tests of the compiler's helpers (whole pipelines are in `tests/compile.rs`).

use super::*;

#[test]
fn suggestions_pick_the_closest_name() {
    assert_eq!(
        suggest("raed", ["read", "write"].into_iter()),
        " (did you mean 'read'?)"
    );
    assert_eq!(suggest("zzzzzz", ["a", "b"].into_iter()), "; choices: a, b");
}

#[test]
fn ids_follow_the_pattern() {
    assert!(is_valid_id("a_b-1"));
    assert!(!is_valid_id("1a"));
    assert!(!is_valid_id("a b"));
    assert!(!is_valid_id(""));
}
