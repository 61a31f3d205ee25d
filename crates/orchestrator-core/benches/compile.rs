//! Compile-time benchmarks: `cargo bench -p orchestrator-core`.

use orchestrator_core::{CompileOptions, builtin_catalog, compile_yaml};

fn main() {
    divan::main();
}

/// A pipeline of `steps` steps with two dependencies each (one explicit, one
/// inferred from a template), like a wide, deep real-world DAG.
fn pipeline(steps: usize) -> String {
    let mut yaml =
        String::from("name: bench\ninputs:\n  prefix: {type: string, default: out}\nsteps:\n");
    for i in 0..steps {
        yaml.push_str(&format!(
            "  - id: s{i}\n    tool: filesystem\n    action: write\n"
        ));
        if i >= 2 {
            let a = i / 2;
            let b = i - 1;
            yaml.push_str(&format!("    depends_on: [s{a}]\n"));
            yaml.push_str(&format!(
                "    parameters:\n      path: \"{{{{ prefix }}}}/{i}.txt\"\n      content: \"{{{{ s{b}.result.path }}}}\"\n"
            ));
        } else {
            yaml.push_str(&format!(
                "    parameters: {{path: \"{i}.txt\", content: x}}\n"
            ));
        }
    }
    yaml
}

#[divan::bench(args = [100, 1000])]
fn compile_pipeline(bencher: divan::Bencher, steps: usize) {
    let yaml = pipeline(steps);
    let catalog = builtin_catalog();
    bencher.bench(|| {
        let compiled = compile_yaml(
            divan::black_box(&yaml),
            CompileOptions {
                catalog: &catalog,
                context: None,
                auto_resolver: None,
            },
        );
        assert!(compiled.is_ok());
        compiled
    });
}
