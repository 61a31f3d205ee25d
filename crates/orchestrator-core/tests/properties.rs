//! Property tests for the pure core: DAG levels, cycles, template round trips.

use std::collections::{HashMap, HashSet};

use orchestrator_core::template::{Scope, render_str, render_string_value};
use orchestrator_core::{CompileOptions, ErrorKind, builtin_catalog, compile_yaml};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// A random DAG: `deps[i]` are indices lower than `i`, then document order shuffled.
fn dag() -> impl Strategy<Value = (Vec<Vec<usize>>, Vec<usize>)> {
    (1usize..40).prop_flat_map(|n| {
        let deps = (0..n)
            .map(|i| {
                if i == 0 {
                    Just(vec![]).boxed()
                } else {
                    proptest::collection::vec(0..i, 0..4).boxed()
                }
            })
            .collect::<Vec<_>>();
        (deps, Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

fn pipeline_yaml(deps: &[Vec<usize>], order: &[usize]) -> String {
    let mut yaml = String::from("name: random\nsteps:\n");
    for &i in order {
        yaml.push_str(&format!("  - id: s{i}\n    tool: echo\n"));
        let d: Vec<String> = deps[i].iter().map(|d| format!("s{d}")).collect();
        if !d.is_empty() {
            // Mix explicit dependencies and template references.
            let (explicit, inferred) = d.split_at(d.len() / 2);
            if !explicit.is_empty() {
                yaml.push_str(&format!("    depends_on: [{}]\n", explicit.join(", ")));
            }
            if !inferred.is_empty() {
                yaml.push_str("    parameters:\n");
                for (k, name) in inferred.iter().enumerate() {
                    yaml.push_str(&format!("      p{k}: \"{{{{ {name}.result }}}}\"\n"));
                }
            }
        }
    }
    yaml
}

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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn levels_respect_every_edge_and_hold_every_step_once((deps, order) in dag()) {
        let yaml = pipeline_yaml(&deps, &order);
        let compiled = compile(&yaml).map_err(|e| TestCaseError::fail(format!("{e:?}\n{yaml}")))?;
        let mut level_of = HashMap::new();
        for (l, ids) in compiled.plan.levels.iter().enumerate() {
            for id in ids {
                prop_assert!(level_of.insert(id.clone(), l).is_none(), "{id} twice");
            }
        }
        prop_assert_eq!(level_of.len(), deps.len());
        for (i, ds) in deps.iter().enumerate() {
            for d in ds {
                let (before, after) = (level_of[&format!("s{d}")], level_of[&format!("s{i}")]);
                prop_assert!(before < after, "s{} not before s{}", d, i);
            }
            // A step is as early as its dependencies allow.
            let expected = ds.iter().map(|d| level_of[&format!("s{d}")] + 1).max().unwrap_or(0);
            prop_assert_eq!(level_of[&format!("s{i}")], expected);
        }
    }

    #[test]
    fn cyclic_graphs_are_rejected_with_a_real_cycle(
        (deps, order) in dag().prop_filter("needs two steps", |(d, _)| d.len() >= 2),
        pick in any::<proptest::sample::Index>(),
    ) {
        // Add a back edge from an ancestor to a descendant: a path hi -> ... -> lo exists?
        // Simplest guaranteed cycle: make lo depend on hi where hi depends (transitively) on lo.
        let mut deps = deps;
        let n = deps.len();
        let hi = 1 + pick.index(n - 1);
        let lo = match deps[hi].first() {
            Some(&lo) => lo,
            None => { deps[hi].push(0); 0 }
        };
        deps[lo].push(hi);
        let yaml = pipeline_yaml(&deps, &order);
        let err = match compile(&yaml) {
            Ok(_) => return Err(TestCaseError::fail(format!("compiled a cycle:\n{yaml}"))),
            Err(e) => e,
        };
        prop_assert_eq!(err.errors.len(), 1);
        let e = &err.errors[0];
        prop_assert_eq!(e.kind, ErrorKind::Cycle);
        let text = e.message.trim_start_matches("dependency cycle: ");
        let path: Vec<&str> = text.split(" -> ").collect();
        prop_assert!(path.len() >= 2);
        prop_assert_eq!(path.first(), path.last());
        let edges: HashSet<(String, String)> = deps.iter().enumerate()
            .flat_map(|(i, ds)| ds.iter().map(move |d| (format!("s{i}"), format!("s{d}"))))
            .collect();
        for w in path.windows(2) {
            prop_assert!(edges.contains(&(w[0].to_string(), w[1].to_string())), "{} does not depend on {}", w[0], w[1]);
        }
    }

    #[test]
    fn rendering_round_trips_json_values(value in json_value()) {
        let mut inputs = Map::new();
        inputs.insert("x".into(), value.clone());
        let mut scope = Scope::new();
        scope.set_inputs(&inputs);
        let native = render_string_value("{{ x }}", &scope).map_err(|e| TestCaseError::fail(e.message))?;
        prop_assert_eq!(&native, &value);
        let text = render_str("{{ x | to_json }}", &scope).map_err(|e| TestCaseError::fail(e.message))?;
        let parsed: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(parsed, value);
    }

    #[test]
    fn plain_strings_render_unchanged(s in "[^{}%#]*") {
        let scope = Scope::new();
        prop_assert_eq!(render_str(&s, &scope).ok(), Some(s.clone()));
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        ".*".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
