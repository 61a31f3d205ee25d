//! `POST /executions` through the real router, on an in-memory SQLite store:
//! arbitrary bodies, content types and query strings must never make the
//! server panic or answer 5xx.
#![no_main]

use std::sync::OnceLock;

use axum::body::Body;
use axum::http::Request;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/yaml",
    "text/yaml",
    "text/plain",
    "application/x-www-form-urlencoded",
    "application/json; charset=utf-8",
    "",
];

fn app() -> &'static (tokio::runtime::Runtime, axum::Router) {
    static APP: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    APP.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let router = rt.block_on(async {
            let dir = std::env::temp_dir().join(format!("orchestrator-fuzz-{}", std::process::id()));
            let settings = orchestrator_server::config::Settings {
                database_url: "sqlite::memory:".into(),
                workspace_root: dir,
                max_body_bytes: 256 * 1024,
                ..Default::default()
            };
            let engine = orchestrator_server::app::build_engine(&settings)
                .await
                .expect("engine");
            orchestrator_server::router(orchestrator_server::AppState::new(engine, settings))
        });
        (rt, router)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector) % CONTENT_TYPES.len()];
    // The query string is the first line, the body the rest.
    let (query, body) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&rest[..0], rest),
    };
    let query: String = String::from_utf8_lossy(query)
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .collect();
    let (rt, router) = app();
    let mut request = Request::post(format!("/executions?{query}"));
    if !content_type.is_empty() {
        request = request.header("content-type", content_type);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else {
        return;
    };
    let response = rt
        .block_on(router.clone().oneshot(request))
        .expect("the router always answers");
    assert!(
        !response.status().is_server_error(),
        "5xx for content type {content_type:?}, query {query:?}"
    );
});
