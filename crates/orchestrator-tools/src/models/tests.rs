//! Unit tests of model specs and selection.

use super::*;

fn spec(id: &str, caps: &[&str], cost: f64, ctx: u64) -> ModelSpec {
    ModelSpec {
        id: id.into(),
        provider: Provider::Openai,
        model: id.into(),
        base_url: Some("http://127.0.0.1:1/v1".into()),
        api_key_env: None,
        capabilities: caps.iter().map(|c| c.to_string()).collect(),
        context_window: ctx,
        cost_per_1k_tokens: Cost {
            input: cost,
            output: cost,
        },
        max_output_tokens: None,
        cost_per_image: None,
    }
}

#[test]
fn costs_read_as_a_number_or_a_pair() {
    let one: ModelSpec = serde_json::from_value(serde_json::json!({"id": "a", "provider": "openai", "model": "m", "cost_per_1k_tokens": 0.01})).expect("one");
    assert_eq!(
        one.cost_per_1k_tokens,
        Cost {
            input: 0.01,
            output: 0.01
        }
    );
    let two: ModelSpec = serde_json::from_value(serde_json::json!({"id": "a", "provider": "gemini", "model": "m", "cost_per_1k_tokens": {"input": 0.001, "output": 0.004}})).expect("two");
    assert_eq!(two.provider, Provider::Google);
    assert!((two.cost_per_1k_tokens.blended() - 0.0025).abs() < 1e-12);
    assert!((two.cost_per_1k_tokens.of(2000, 500) - 0.004).abs() < 1e-12);
}

#[test]
fn ineligible_models_say_what_they_lack() {
    let models = vec![
        spec("small", &["generate"], 0.001, 4096),
        spec("big", &["generate", "reasoning"], 0.03, 128_000),
    ];
    let req = Requirements {
        tasks: vec!["reasoning".into()],
        max_cost_per_1k: Some(0.01),
        ..Default::default()
    };
    let err = select(
        &models,
        &HashMap::new(),
        &req,
        Strategy::Ucb,
        None,
        &HashMap::new(),
    )
    .expect_err("none");
    let text = err.to_string();
    assert!(
        text.contains("'small' lacks capability 'reasoning'"),
        "{text}"
    );
    assert!(
        text.contains("'big' costs 0.03 per 1k tokens > 0.01"),
        "{text}"
    );

    let keyed = ModelSpec {
        base_url: None,
        ..spec("official", &[], 0.0, 8192)
    };
    let err = select(
        std::slice::from_ref(&keyed),
        &HashMap::new(),
        &Requirements::default(),
        Strategy::Ucb,
        None,
        &HashMap::new(),
    )
    .expect_err("no key");
    assert!(
        err.to_string().contains("OPENAI_API_KEY is not set"),
        "{err}"
    );
    let env = HashMap::from([("OPENAI_API_KEY".to_string(), "k".to_string())]);
    assert!(
        select(
            &[keyed],
            &HashMap::new(),
            &Requirements::default(),
            Strategy::Ucb,
            None,
            &env
        )
        .is_ok()
    );
}

#[test]
fn cheapest_fastest_and_fixed_choose_as_named() {
    let models = vec![
        spec("a", &[], 0.02, 8192),
        spec("b", &[], 0.001, 8192),
        spec("c", &[], 0.001, 8192),
    ];
    let env = HashMap::new();
    let req = Requirements::default();
    let none = HashMap::new();
    assert_eq!(
        select(&models, &none, &req, Strategy::Cheapest, None, &env)
            .expect("pick")
            .model
            .id,
        "b"
    );
    assert_eq!(
        select(&models, &none, &req, Strategy::Fixed, Some("c"), &env)
            .expect("pick")
            .model
            .id,
        "c"
    );
    assert_eq!(
        select(&models, &none, &req, Strategy::Fixed, Some("zzz"), &env)
            .expect("pick")
            .model
            .id,
        "a"
    );
    let measured = |ms: f64| ModelStats {
        calls: 3,
        latency_p50_ms: Some(ms),
        ..Default::default()
    };
    let stats = HashMap::from([
        ("a".to_string(), measured(900.0)),
        ("b".to_string(), measured(120.0)),
        ("c".to_string(), measured(400.0)),
    ]);
    assert_eq!(
        select(&models, &stats, &req, Strategy::Fastest, None, &env)
            .expect("pick")
            .model
            .id,
        "b"
    );
}
