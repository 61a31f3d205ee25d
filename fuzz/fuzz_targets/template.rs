//! The template compiler and renderer on arbitrary text: parsing, the names a
//! template reads, rendering to text and to a value, and conditions must never
//! panic, overflow the stack, hang or exhaust memory. The scope holds inputs,
//! a step result and a skipped step, as a running step sees them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::template::{
    Scope, StepEnvelope, eval_condition, expression_names, referenced_names, render_str,
    render_string_value, render_value,
};
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut scope = Scope::new();
    let inputs = json!({"who": "world", "items": [1, 2, 3], "n": 3, "nested": {"a": [{"b": "c"}]}});
    if let Some(inputs) = inputs.as_object() {
        scope.set_inputs(inputs);
    }
    scope.set_step(
        "read",
        StepEnvelope {
            result: json!({"content": "hello\n", "rows": [{"x": 1}, {"x": 2}]}),
            success: true,
            error: None,
        },
    );
    scope.set_none("skipped");
    let _ = referenced_names(text);
    let _ = expression_names(text);
    let _ = render_str(text, &scope);
    let _ = render_string_value(text, &scope);
    let _ = render_value(&json!({"a": text, "b": [text]}), &scope);
    let _ = eval_condition(text, &scope);
});
