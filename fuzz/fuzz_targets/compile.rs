//! Parser + validator + planner on arbitrary bytes: must never panic, hang
//! or exhaust memory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use orchestrator_core::{CompileOptions, builtin_catalog, compile_yaml};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let catalog = builtin_catalog();
    let context = serde_json::Map::new();
    for ctx in [None, Some(&context)] {
        let _ = compile_yaml(
            text,
            CompileOptions {
                catalog: &catalog,
                context: ctx,
                auto_resolver: None,
            },
        );
    }
});
