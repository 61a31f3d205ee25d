//! Model providers against real local servers speaking each provider's JSON,
//! and model selection.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use orchestrator_tools::models::providers::{ChatRequest, Message, RetryPolicy, chat};
use orchestrator_tools::models::{
    Cost, ModelSpec, ModelStats, Provider, Requirements, Strategy, reward, select,
};
use orchestrator_tools::testing::services::{self, Service, Wire};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn spec(provider: Provider, base_url: String) -> ModelSpec {
    ModelSpec {
        id: format!("{}-test", provider.as_str()),
        provider,
        model: "test-model-1".into(),
        base_url: Some(base_url),
        api_key_env: Some("TEST_KEY".into()),
        capabilities: vec!["generate".into()],
        context_window: 8192,
        cost_per_1k_tokens: Cost {
            input: 0.5,
            output: 1.5,
        },
        max_output_tokens: None,
        cost_per_image: None,
    }
}

fn ask(prompt: &str) -> ChatRequest {
    ChatRequest {
        system: Some("Be brief.".into()),
        messages: vec![Message::text("user", prompt)],
        temperature: Some(0.2),
        max_tokens: Some(64),
        json: false,
    }
}

async fn call(
    spec: &ModelSpec,
    key: &str,
    req: &ChatRequest,
    policy: RetryPolicy,
) -> Result<orchestrator_tools::models::providers::ChatResponse, orchestrator_tools::ToolError> {
    let client = orchestrator_tools::net::default_client();
    chat(
        &client,
        spec,
        Some(key),
        req,
        &CancellationToken::new(),
        Duration::from_secs(10),
        policy,
    )
    .await
}

#[tokio::test]
async fn openai_compatible_requests_and_answers() {
    let svc = Service::start(services::provider(Wire::OpenAi, Some("sk-test"))).await;
    let spec = spec(Provider::Openai, svc.url("/v1"));
    let r = call(
        &spec,
        "sk-test",
        &ask("hello there\nsecond line"),
        RetryPolicy::default(),
    )
    .await
    .expect("answer");
    assert_eq!(r.text, "Summary: hello there");
    assert_eq!((r.input_tokens, r.output_tokens), (6, 3));
    assert_eq!(r.finish_reason.as_deref(), Some("stop"));
    let sent = &svc.requests()[0];
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(sent.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(
        sent.json(),
        json!({"model": "test-model-1", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there\nsecond line"}], "temperature": 0.2, "max_tokens": 64})
    );
    let e = call(&spec, "wrong", &ask("x"), RetryPolicy::default())
        .await
        .expect_err("bad key");
    assert_eq!(e.kind, "ModelAuthenticationError");
    assert!(
        e.message.contains("Incorrect API key provided."),
        "{}",
        e.message
    );
    assert!(!e.message.contains("wrong"), "the key is not repeated");
    let e = call(&spec, "sk-test", &ask("[bad]"), RetryPolicy::default())
        .await
        .expect_err("400");
    assert_eq!(e.kind, "ModelRequestError");
    assert!(
        e.message.contains("the prompt is malformed"),
        "{}",
        e.message
    );
    let mut structured = ask("[json]");
    structured.json = true;
    call(&spec, "sk-test", &structured, RetryPolicy::default())
        .await
        .expect("json");
    assert_eq!(
        svc.requests()
            .last()
            .map(|r| r.json()["response_format"].clone()),
        Some(json!({"type": "json_object"}))
    );
}

#[tokio::test]
async fn anthropic_messages_requests_and_answers() {
    let svc = Service::start(services::provider(Wire::Anthropic, Some("ak-test"))).await;
    let spec = spec(Provider::Anthropic, svc.url(""));
    let mut req = ask("write a haiku");
    req.max_tokens = None;
    let r = call(&spec, "ak-test", &req, RetryPolicy::default())
        .await
        .expect("answer");
    assert_eq!(r.text, "Summary: write a haiku");
    assert_eq!((r.input_tokens, r.output_tokens), (5, 4));
    assert_eq!(r.finish_reason.as_deref(), Some("end_turn"));
    let sent = &svc.requests()[0];
    assert_eq!(sent.path, "/v1/messages");
    assert_eq!(sent.header("x-api-key"), Some("ak-test"));
    assert_eq!(sent.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(
        sent.json(),
        json!({"model": "test-model-1", "max_tokens": 1024, "messages": [{"role": "user", "content": "write a haiku"}], "system": "Be brief.", "temperature": 0.2})
    );
    let quick = RetryPolicy {
        retries: 1,
        max_wait: Duration::from_millis(50),
    };
    let e = call(&spec, "ak-test", &ask("[overloaded]"), quick)
        .await
        .expect_err("529");
    assert_eq!(e.kind, "ModelProviderError");
    assert!(
        e.message.contains("Overloaded (overloaded_error)"),
        "{}",
        e.message
    );
    assert_eq!(svc.requests().len(), 3, "one retry after the first 529");
}

#[tokio::test]
async fn gemini_generate_content_requests_and_answers() {
    let svc = Service::start(services::provider(Wire::Gemini, Some("g-test"))).await;
    let spec = spec(Provider::Google, svc.url(""));
    let r = call(
        &spec,
        "g-test",
        &ask("list three colours"),
        RetryPolicy::default(),
    )
    .await
    .expect("answer");
    assert_eq!(r.text, "Summary: list three colours");
    assert_eq!((r.input_tokens, r.output_tokens), (5, 4));
    let sent = &svc.requests()[0];
    assert_eq!(sent.path, "/v1beta/models/test-model-1:generateContent");
    assert_eq!(sent.header("x-goog-api-key"), Some("g-test"));
    assert_eq!(
        sent.json(),
        json!({"contents": [{"role": "user", "parts": [{"text": "list three colours"}]}], "systemInstruction": {"parts": [{"text": "Be brief."}]}, "generationConfig": {"temperature": 0.2, "maxOutputTokens": 64}})
    );
    let e = call(&spec, "nope", &ask("x"), RetryPolicy::default())
        .await
        .expect_err("bad key");
    assert!(e.message.contains("API key not valid"), "{}", e.message);
}

#[tokio::test]
async fn rate_limits_wait_as_retry_after_says() {
    for wire in [Wire::OpenAi, Wire::Anthropic, Wire::Gemini] {
        let svc = Service::start(services::provider(wire, Some("k"))).await;
        let provider = match wire {
            Wire::OpenAi => Provider::Openai,
            Wire::Anthropic => Provider::Anthropic,
            Wire::Gemini => Provider::Google,
        };
        let base = if wire == Wire::OpenAi {
            svc.url("/v1")
        } else {
            svc.url("")
        };
        let started = Instant::now();
        let r = call(
            &spec(provider, base.clone()),
            "k",
            &ask("[rate-limit] go"),
            RetryPolicy::default(),
        )
        .await
        .expect("after the wait");
        assert_eq!(r.attempts, 2, "{wire:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{wire:?} waited {:?}",
            started.elapsed()
        );
        assert_eq!(svc.requests().len(), 2);
        // A wait longer than allowed here goes back to the step instead.
        let impatient = RetryPolicy {
            retries: 3,
            max_wait: Duration::from_millis(100),
        };
        let e = call(
            &spec(provider, base),
            "k",
            &ask("[rate-limit] again"),
            impatient,
        )
        .await
        .expect_err("too long");
        assert_eq!(e.kind, "ModelRateLimitError", "{wire:?}");
        assert!(e.message.contains("retry after 1s"), "{}", e.message);
    }
}

/// Three models whose calls succeed with different probabilities: UCB tries
/// each once, then converges on the best one while still sampling the rest.
#[test]
fn ucb_explores_then_converges_on_the_best_model() {
    let models: Vec<ModelSpec> = ["weak", "good", "best"]
        .iter()
        .map(|id| ModelSpec {
            id: id.to_string(),
            provider: Provider::Openai,
            model: id.to_string(),
            base_url: Some("http://127.0.0.1:1/v1".into()),
            api_key_env: None,
            capabilities: vec![],
            context_window: 8192,
            cost_per_1k_tokens: Cost::default(),
            max_output_tokens: None,
            cost_per_image: None,
        })
        .collect();
    let success = HashMap::from([("weak", 0.2), ("good", 0.6), ("best", 0.95)]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut stats: HashMap<String, ModelStats> = HashMap::new();
    let mut picks: Vec<String> = Vec::new();
    let env = HashMap::new();
    for _ in 0..600 {
        let chosen = select(
            &models,
            &stats,
            &Requirements::default(),
            Strategy::Ucb,
            None,
            &env,
        )
        .expect("select");
        let id = chosen.model.id.clone();
        let ok = rng.random::<f64>() < success[id.as_str()];
        let s = stats.entry(id.clone()).or_default();
        s.calls += 1;
        s.reward_sum += reward(ok, 500.0, 0.0);
        picks.push(id);
    }
    assert_eq!(
        picks[..3],
        ["weak", "good", "best"],
        "every model is tried once first"
    );
    let late = &picks[400..];
    let best = late.iter().filter(|p| *p == "best").count();
    assert!(
        best > late.len() * 3 / 4,
        "best picked {best} of the last {} times",
        late.len()
    );
    assert!(
        picks.iter().filter(|p| *p == "weak").count() >= 4,
        "the others are still sampled"
    );
}

/// An image goes to each provider in its own format: OpenAI `image_url`
/// parts with a data URL, Anthropic `image` blocks before the text, Gemini
/// `inlineData` parts.
#[tokio::test]
async fn images_reach_each_provider_in_its_wire_format() {
    use orchestrator_tools::models::providers::ImageInput;
    let png = services::drawn_png();
    let b64 = services::DRAWN_PNG_BASE64;
    let mut asked = ask("What is this?");
    asked.messages[0].images = vec![ImageInput {
        media_type: "image/png".into(),
        base64: b64.into(),
    }];
    for (wire, provider, path) in [
        (Wire::OpenAi, Provider::Openai, "/v1"),
        (Wire::Anthropic, Provider::Anthropic, ""),
        (Wire::Gemini, Provider::Google, ""),
    ] {
        let svc = Service::start(services::provider(wire, Some("k"))).await;
        let spec = spec(provider, svc.url(path));
        let r = call(&spec, "k", &asked, RetryPolicy::default())
            .await
            .expect("answer");
        assert_eq!(
            r.text,
            format!("Saw 1 image(s): image/png {} bytes", png.len()),
            "{provider:?}"
        );
        let sent = svc.requests()[0].json();
        let expected = match provider {
            Provider::Openai => json!([
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{b64}")}}
            ]),
            Provider::Anthropic => json!([
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": b64}},
                {"type": "text", "text": "What is this?"}
            ]),
            Provider::Google => json!([
                {"inlineData": {"mimeType": "image/png", "data": b64}},
                {"text": "What is this?"}
            ]),
        };
        let got = match provider {
            Provider::Openai => sent["messages"][1]["content"].clone(),
            Provider::Anthropic => sent["messages"][0]["content"].clone(),
            Provider::Google => sent["contents"][0]["parts"].clone(),
        };
        assert_eq!(got, expected, "{provider:?}: {sent:#}");
    }
}

/// The images endpoint: one image per request, no `response_format` (the
/// newest models refuse it), `b64_json` or `url` read back; providers
/// without the OpenAI images API are refused before anything is sent.
#[tokio::test]
async fn images_are_drawn_by_the_openai_images_api() {
    use orchestrator_tools::models::providers::{GeneratedImage, ImageRequest, generate_image};
    let svc = Service::start(services::provider(Wire::OpenAi, Some("k"))).await;
    let spec = spec(Provider::Openai, svc.url("/v1"));
    let draw = |prompt: &str, spec: ModelSpec| {
        let req = ImageRequest {
            prompt: prompt.into(),
            size: "256x256".into(),
        };
        async move {
            generate_image(
                &orchestrator_tools::net::default_client(),
                &spec,
                Some("k"),
                &req,
                &CancellationToken::new(),
                Duration::from_secs(10),
                RetryPolicy::default(),
            )
            .await
        }
    };
    assert_eq!(
        draw("a cat", spec.clone()).await.expect("drawn"),
        GeneratedImage::Base64(services::DRAWN_PNG_BASE64.into())
    );
    assert_eq!(
        svc.requests()[0].json(),
        json!({"model": "test-model-1", "prompt": "a cat", "n": 1, "size": "256x256"})
    );
    assert_eq!(
        draw("[url] a cat", spec.clone()).await.expect("drawn"),
        GeneratedImage::Url(svc.url("/v1/images/files/drawn.png"))
    );
    let e = draw("[refused] a cat", spec.clone())
        .await
        .expect_err("refused");
    assert_eq!(e.kind, "ModelRequestError");
    assert!(e.message.contains("safety system"), "{}", e.message);
    let before = svc.requests().len();
    let e = draw(
        "a cat",
        ModelSpec {
            provider: Provider::Anthropic,
            ..spec.clone()
        },
    )
    .await
    .expect_err("not openai");
    assert!(e.message.contains("cannot draw here"), "{}", e.message);
    assert_eq!(svc.requests().len(), before);
}
