//! The layers, the sections and the models file, as an operator writes them.

use super::*;

#[test]
fn the_seed_file_loads_as_it_is() {
    let text = "orchestrator:\n  max_concurrent_tasks: 20\n  enable_checkpointing: true\n  log_level: DEBUG\nmodels:\n  default_provider: openai\n  routing_strategy: ucb\n  cost_optimization: true\ntools:\n  enable_web_search: true\n  enable_filesystem: true\n  sandbox_mode: false\n";
    let f = parse_file(text, "orchestrator.yaml").expect("loads");
    assert_eq!(f.orchestrator.max_concurrent_tasks, Some(20));
    assert_eq!(f.models.routing_strategy.as_deref(), Some("ucb"));
}

#[test]
fn unknown_keys_are_errors() {
    let err = parse_file("orchestrator:\n  max_concurent_tasks: 2\n", "x.yaml").expect_err("typo");
    assert!(err.to_string().contains("max_concurent_tasks"), "{err}");
}

fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let dir = std::env::temp_dir().join(format!("orch-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("orchestrator.yaml");
    std::fs::write(&file, text).expect("write");
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let loaded = load(
        &Overrides {
            config: Some(file),
            ..Default::default()
        },
        &env,
    );
    std::fs::remove_dir_all(&dir).ok();
    loaded
}

#[test]
fn search_backends_take_their_keys_from_the_environment() {
    let text = "tools:\n  web_search:\n    backends:\n      - kind: searxng\n        url: http://search.internal:8888\n      - kind: brave\n      - kind: tavily\n        api_key_env: MY_TAVILY\n";
    let err = load_text(text, &[]).expect_err("no brave key");
    assert!(err.to_string().contains("BRAVE_API_KEY"), "{err}");
    let s = load_text(text, &[("BRAVE_API_KEY", "b"), ("MY_TAVILY", "t")]).expect("keys");
    let names: Vec<&str> = s.search_backends.iter().map(|b| b.name()).collect();
    assert_eq!(names, ["searxng", "brave", "tavily"]);
    assert!(
        !format!("{s:?}").contains("MY_TAVILY\", \"t"),
        "keys stay out of debug output"
    );

    for (bad, says) in [
        (
            "tools:\n  web_search:\n    backends: [{kind: google}]\n",
            "kind 'google'",
        ),
        (
            "tools:\n  web_search:\n    backends: [{kind: searxng}]\n",
            "needs the instance's url",
        ),
        (
            "tools:\n  web_search:\n    backends: [{kind: searxng, url: 'not a url'}]\n",
            "is not a URL",
        ),
    ] {
        let err = load_text(bad, &[]).expect_err(bad);
        assert!(err.to_string().contains(says), "{err}");
    }

    // Nothing configured: the environment decides, and the switch wins.
    let s = load_text(
        "",
        &[("TAVILY_API_KEY", "t"), ("SEARXNG_URL", "http://s:8080")],
    )
    .expect("env");
    let names: Vec<&str> = s.search_backends.iter().map(|b| b.name()).collect();
    // DuckDuckGo, which needs no key, comes last (and alone without keys).
    assert_eq!(names, ["searxng", "tavily", "duckduckgo"]);
    let s = load_text("", &[]).expect("nothing");
    let names: Vec<&str> = s.search_backends.iter().map(|b| b.name()).collect();
    assert_eq!(names, ["duckduckgo"]);
    let s = load_text(
        "tools:\n  web_search:\n    backends: [{kind: duckduckgo, url: 'http://127.0.0.1:9/html/'}]\n",
        &[],
    )
    .expect("configured");
    assert_eq!(s.search_backends[0].url(), "http://127.0.0.1:9/html/");
    let s = load_text(
        "tools:\n  enable_web_search: false\n",
        &[("TAVILY_API_KEY", "t")],
    )
    .expect("off");
    assert!(s.search_backends.is_empty());
}

#[test]
fn tools_over_http_are_checked_when_loaded() {
    let good = "tools:\n  remote:\n    - id: sentiment\n      url: http://127.0.0.1:9000/run\n      bearer_token_env: SENTIMENT_TOKEN\n      headers: {X-Team: data}\n      actions:\n        - analyze\n        - name: score\n          description: Scores a text\n          parameters: {type: object, required: [text]}\n";
    let err = load_text(good, &[]).expect_err("token missing");
    assert!(err.to_string().contains("SENTIMENT_TOKEN"), "{err}");
    let s = load_text(good, &[("SENTIMENT_TOKEN", "tok")]).expect("loads");
    let tool = &s.remote_tools[0];
    assert_eq!(tool.actions.len(), 2);
    assert_eq!(tool.actions[1].parameters["required"][0], "text");
    assert!(
        tool.headers
            .contains(&("Authorization".into(), "Bearer tok".into()))
    );
    assert!(
        !format!("{tool:?}").contains("tok\""),
        "tokens stay out of debug output"
    );

    for (bad, says) in [
        (
            "tools:\n  remote:\n    - {id: filesystem, url: 'http://x/', actions: [a]}\n",
            "is taken",
        ),
        (
            "tools:\n  remote:\n    - {id: 'a b', url: 'http://x/', actions: [a]}\n",
            "letters, digits",
        ),
        (
            "tools:\n  remote:\n    - {id: t, url: 'ftp://x/', actions: [a]}\n",
            "not an http(s) URL",
        ),
        (
            "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: []}\n",
            "at least one action",
        ),
        (
            "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: [{name: a, parameters: {type: 12}}]}\n",
            "not a valid JSON Schema",
        ),
        (
            "tools:\n  remote:\n    - {id: t, url: 'http://x/', actions: [a]}\n    - {id: t, url: 'http://y/', actions: [b]}\n",
            "is taken",
        ),
    ] {
        let err = load_text(bad, &[]).expect_err(bad);
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
}

#[test]
fn the_http_allow_list_is_parsed_when_loaded() {
    let err =
        load_text("tools:\n  http:\n    allowed_hosts: ['http://x']\n", &[]).expect_err("url");
    assert!(err.to_string().contains("http.allowed_hosts"), "{err}");
    let s = load_text(
        "",
        &[(
            "ORCHESTRATOR_HTTP_ALLOWED_HOSTS",
            "api.example.com, 10.0.0.0/8",
        )],
    )
    .expect("env");
    assert!(
        s.http
            .policy
            .allows("api.example.com", "93.184.216.34".parse().expect("ip"))
            .is_ok()
    );
    assert!(
        s.http
            .policy
            .allows("db", "10.1.1.1".parse().expect("ip"))
            .is_ok()
    );
    assert!(
        s.http
            .policy
            .allows("other.com", "93.184.216.34".parse().expect("ip"))
            .is_err()
    );
}

#[test]
fn models_read_only_allowed_key_variables_and_trust_their_files_endpoints() {
    let path = format!(
        "{}/../../examples/config/models.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = format!("models:\n  file: {path}\n");
    let env = [
        ("OPENAI_API_KEY", "sk-1"),
        ("ORCHESTRATOR_AUTH_PEPPER", "secret"),
        ("DATABASE_URL", "postgres://u:p@h/db"),
    ];
    let s = load_text(&text, &env).expect("loads");
    let mut keys: Vec<&String> = s.models.env.keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        vec!["OPENAI_API_KEY"],
        "only key variables reach models"
    );
    assert!(
        s.models
            .trusted_base_urls
            .contains("http://localhost:11434/v1")
    );
    assert!(s.models.egress.is_some());
    let text = format!(
        "models:\n  file: {path}\n  api_key_env_allowed: [MY_TOKEN]\n  allowed_hosts: ['*.example.com']\n"
    );
    let s = load_text(&text, &[("MY_TOKEN", "t"), ("OPENAI_API_KEY", "sk")]).expect("loads");
    assert!(s.models.allows_key_env("MY_TOKEN"));
    assert!(!s.models.allows_key_env("OPENAI_API_KEY"));
    let err = load_text("models:\n  allowed_hosts: ['http://x']\n", &[]).expect_err("bad host");
    assert!(err.to_string().contains("models.allowed_hosts"), "{err}");
}

#[test]
fn the_example_models_file_loads_and_bad_ones_say_why() {
    let path = format!(
        "{}/../../examples/config/models.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).expect("example");
    let (specs, default) = parse_models_file(&text, &path).expect("loads");
    assert_eq!(specs.len(), 5);
    assert_eq!(default.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(specs[4].cost_per_image, Some(0.04));
    assert!(specs[4].has_capability("image_generation"));
    for (bad, says) in [
        ("models:\n  - {id: a, provider: openai}\n", "models[0]"),
        (
            "models:\n  - {id: a, provider: cohere, model: m}\n",
            "cohere",
        ),
        (
            "models:\n  - {id: a, provider: openai, model: m}\n  - {id: a, provider: openai, model: n}\n",
            "used twice",
        ),
        (
            "default: b\nmodels:\n  - {id: a, provider: openai, model: m}\n",
            "'b' is not defined",
        ),
        ("modles: []\n", "unknown key 'modles'"),
        (
            "models:\n  - {id: a, provider: openai, model: m, base_url: 'ftp://x'}\n",
            "not an http(s) URL",
        ),
    ] {
        let err = parse_models_file(bad, "models.yaml").expect_err(bad);
        assert!(err.to_string().contains(says), "{bad}: {err}");
    }
    let err = load_text("models:\n  routing_strategy: random\n", &[]).expect_err("strategy");
    assert!(err.to_string().contains("'random'"), "{err}");
}

#[test]
fn layers_apply_in_order() {
    let dir = std::env::temp_dir().join(format!("orch-config-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("orchestrator.yaml");
    std::fs::write(&file, "orchestrator:\n  max_concurrent_tasks: 20\n  log_level: DEBUG\nserver:\n  bind: 127.0.0.1:9000\n").expect("write");
    let overrides = Overrides {
        config: Some(file.clone()),
        ..Default::default()
    };
    let s = load(&overrides, &HashMap::new()).expect("load");
    assert_eq!(
        (s.max_concurrent, s.log_level.as_str(), s.bind.port()),
        (20, "debug", 9000)
    );

    let env = HashMap::from([
        ("ORCHESTRATOR_MAX_CONCURRENT".to_string(), "7".to_string()),
        ("DATABASE_URL".to_string(), "postgres://x/y".to_string()),
    ]);
    let s = load(&overrides, &env).expect("load");
    assert_eq!(
        (s.max_concurrent, s.database_url.as_str()),
        (7, "postgres://x/y")
    );

    let flags = Overrides {
        max_concurrent: Some(3),
        bind: Some("127.0.0.1:0".into()),
        ..overrides
    };
    let s = load(&flags, &env).expect("load");
    assert_eq!((s.max_concurrent, s.bind.port()), (3, 0));

    let bad = HashMap::from([(
        "ORCHESTRATOR_MAX_CONCURRENT".to_string(),
        "many".to_string(),
    )]);
    assert!(load(&flags, &bad).is_err());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_key_has_a_variable_named_after_it() {
    assert_eq!(variable_for("server.bind"), "ORCHESTRATOR_SERVER__BIND");
    assert_eq!(
        variable_for("tools.http.allowed_hosts"),
        "ORCHESTRATOR_TOOLS__HTTP__ALLOWED_HOSTS"
    );
    let s = load_text(
        "limits:\n  template_fuel: 900\n",
        &[
            ("ORCHESTRATOR_LIMITS__TEMPLATE_FUEL", "1234"),
            ("ORCHESTRATOR_SERVER__MAX_CONNECTIONS", "12"),
            ("ORCHESTRATOR_ORCHESTRATOR__LOG_LEVEL", "WARNING"),
            ("ORCHESTRATOR_TOOLS__ENABLE_TERMINAL", "true"),
            ("ORCHESTRATOR_ENABLE_PYTHON", "true"),
            ("ORCHESTRATOR_TOOLS__PYTHON_INTERPRETER", "python3.11"),
            ("ORCHESTRATOR_RETENTION__FAILED__MAX_AGE_HOURS", "48"),
            (
                "ORCHESTRATOR_TOOLS__TERMINAL_ALLOWED_PROGRAMS",
                "[echo, wc]",
            ),
            ("ORCHESTRATOR_DATABASE__URL", "sqlite://generated.db"),
            // Not configuration keys: left alone.
            ("ORCHESTRATOR_TEST_POSTGRES_URL", "postgres://elsewhere"),
            ("ORCHESTRATOR_AUTH_PEPPER", "secret"),
        ],
    )
    .expect("loads");
    assert_eq!(s.core_limits.template_fuel, 1234);
    assert_eq!(s.connections.max_connections, 12);
    assert_eq!(s.log_level, "warn");
    assert!(s.enable_terminal);
    assert_eq!(s.python.as_deref(), Some("python3.11"));
    assert_eq!(s.retention.rules.len(), 1);
    assert_eq!(s.retention.rules[0].max_age_ms, Some(48 * 3_600_000));
    assert_eq!(
        s.terminal_allowed_programs.as_deref(),
        Some(&["echo".to_string(), "wc".to_string()][..])
    );
    assert_eq!(s.database_url, "sqlite://generated.db");
}

#[test]
fn a_generated_name_wins_over_the_short_one_and_flags_over_both() {
    let env = [
        ("DATABASE_URL", "postgres://plain/db"),
        ("ORCHESTRATOR_DATABASE_URL", "postgres://short/db"),
    ];
    let s = load_text("", &env).expect("loads");
    assert_eq!(s.database_url, "postgres://short/db");
    assert_eq!(
        s.notices,
        vec![
            "DATABASE_URL is ignored: ORCHESTRATOR_DATABASE_URL also sets database.url, to another value, and wins"
        ]
    );
    let same = load_text(
        "",
        &[
            ("DATABASE_URL", "postgres://a/db"),
            ("ORCHESTRATOR_DATABASE_URL", "postgres://a/db"),
        ],
    )
    .expect("loads");
    assert!(same.notices.is_empty(), "{:?}", same.notices);
    let mut env = env.to_vec();
    env.push(("ORCHESTRATOR_DATABASE__URL", "postgres://generated/db"));
    let s = load_text("", &env).expect("loads");
    assert_eq!(s.database_url, "postgres://generated/db");
}

#[test]
fn a_variable_naming_no_key_or_holding_the_wrong_type_is_refused_by_name() {
    let err =
        load_text("", &[("ORCHESTRATOR_SERVER__BINDD", "127.0.0.1:1")]).expect_err("unknown key");
    assert!(err.to_string().contains("bindd"), "{err}");
    assert!(
        err.to_string().contains("ORCHESTRATOR_SERVER__BINDD"),
        "{err}"
    );
    let err =
        load_text("", &[("ORCHESTRATOR_SERVER__MAX_CONNECTIONS", "lots")]).expect_err("wrong type");
    assert!(
        err.to_string()
            .contains("ORCHESTRATOR_SERVER__MAX_CONNECTIONS"),
        "{err}"
    );
    let err =
        load_text("", &[("ORCHESTRATOR_ENABLE_TERMINAL", "maybe")]).expect_err("not a boolean");
    assert!(
        err.to_string()
            .contains("ORCHESTRATOR_ENABLE_TERMINAL=maybe"),
        "{err}"
    );
    // The file's own mistakes name the file.
    let err = load_text("server:\n  max_connections: lots\n", &[]).expect_err("file type");
    assert!(err.to_string().contains("orchestrator.yaml"), "{err}");
}

#[test]
fn without_a_models_file_the_keys_in_the_environment_register_their_providers_models() {
    let env = HashMap::from([
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant".to_string()),
        ("GOOGLE_API_KEY".to_string(), " ".to_string()),
    ]);
    let ids: Vec<String> = default_models(&env).into_iter().map(|m| m.id).collect();
    assert_eq!(ids, ["claude-haiku", "claude-sonnet"]);
    // No models file configured (nor one found here or in ~/.orchestrator):
    // the environment decides.
    let s = load(&Overrides::default(), &env).expect("loads");
    if s.models_file.is_none() {
        let ids: Vec<&str> = s.model_specs.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["claude-haiku", "claude-sonnet"]);
        assert_eq!(s.models.default_model.as_deref(), Some("claude-haiku"));
    }
    assert!(default_models(&HashMap::new()).is_empty());
    let all = HashMap::from([
        ("OPENAI_API_KEY".to_string(), "k".to_string()),
        ("ANTHROPIC_API_KEY".to_string(), "k".to_string()),
        ("GOOGLE_API_KEY".to_string(), "k".to_string()),
    ]);
    assert_eq!(default_models(&all).len(), 6);
}
