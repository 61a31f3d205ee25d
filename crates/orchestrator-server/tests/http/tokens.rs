//! Authentication: tokens, scopes, and loopback-only serving without them.

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_scopes_guard_the_api() {
    use orchestrator_server::auth::{Scope, Secret, new_token};
    let dir = TempDir::new("orch-http");
    let pepper = Secret("test-pepper".into());
    let s = Server::start_with(sqlite_url(&dir), |settings| {
        settings.auth.enabled = true;
        settings.auth.pepper = Secret("test-pepper".into());
        settings.auth.max_active_executions_per_token = 1;
    })
    .await;
    let store = s.store();
    let mut tokens = std::collections::HashMap::new();
    for scope in [Scope::Read, Scope::Submit, Scope::Admin] {
        let (record, text) = new_token(scope.as_str(), scope, &pepper);
        store.create_token(&record).await.expect("token");
        tokens.insert(scope, (record.id, text));
    }
    let call = |method: reqwest::Method, path: &str, token: Option<&str>, body: Option<Value>| {
        let mut r = s.client.request(method, s.url(path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let r = r.send().await.expect("send");
            let status = r.status().as_u16();
            let www = r.headers().get("www-authenticate").is_some();
            (status, www, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let read = tokens[&Scope::Read].1.clone();
    let submit = tokens[&Scope::Submit].1.clone();
    let admin = tokens[&Scope::Admin].1.clone();
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;

    // Open: liveness, readiness, the API document.
    for path in ["/health", "/ready", "/openapi.json"] {
        assert_eq!(call(get.clone(), path, None, None).await.0, 200, "{path}");
    }
    let (_, _, doc) = call(get.clone(), "/openapi.json", None, None).await;
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // 401 without a token or with a wrong one, with WWW-Authenticate.
    let (status, www, problem) = call(get.clone(), "/executions", None, None).await;
    assert_eq!(
        (status, www, problem["type"].clone()),
        (401, true, json!("/problems/unauthorized"))
    );
    let forged = format!("{}x", &read[..read.len() - 1]);
    for bad in ["nonsense", "orc_abc_def", forged.as_str()] {
        assert_eq!(
            call(get.clone(), "/executions", Some(bad), None).await.0,
            401,
            "{bad}"
        );
    }
    assert_eq!(
        call(get.clone(), "/metrics", None, None).await.0,
        401,
        "metrics closed by default"
    );
    // read: GET only.
    assert_eq!(
        call(get.clone(), "/executions", Some(&read), None).await.0,
        200
    );
    let submission = json!({"pipeline": "name: t\nsteps:\n  - id: a\n    tool: echo\n"});
    let (status, _, problem) = call(
        post.clone(),
        "/executions",
        Some(&read),
        Some(submission.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (403, json!("/problems/forbidden"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("'submit'")),
        "{problem}"
    );
    // submit: executions, not webhooks or tokens.
    assert_eq!(
        call(post.clone(), "/executions", Some(&submit), Some(submission))
            .await
            .0,
        201
    );
    assert_eq!(
        call(get.clone(), "/webhooks", Some(&submit), None).await.0,
        403
    );
    assert_eq!(
        call(
            post.clone(),
            "/models",
            Some(&submit),
            Some(json!({"id": "m", "provider": "openai", "model": "x"}))
        )
        .await
        .0,
        403
    );
    // admin: tokens; a created token works, a revoked one stops working.
    let (status, _, created) = call(
        post.clone(),
        "/tokens",
        Some(&admin),
        Some(json!({"name": "ci", "scope": "read"})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let fresh = created["token"].as_str().expect("shown once").to_string();
    assert_eq!(
        call(get.clone(), "/executions", Some(&fresh), None).await.0,
        200
    );
    let (_, _, listed) = call(get.clone(), "/tokens", Some(&admin), None).await;
    assert!(
        listed["items"]
            .as_array()
            .expect("items")
            .iter()
            .all(|t| t.get("token").is_none() && t.get("hash").is_none()),
        "{listed}"
    );
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        call(
            reqwest::Method::DELETE,
            &format!("/tokens/{id}"),
            Some(&admin),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        call(get.clone(), "/executions", Some(&fresh), None).await.0,
        401,
        "revoked"
    );

    // One execution in flight per token here: a second one waits its turn.
    let (record, limited) = new_token("limited", Scope::Submit, &pepper);
    store.create_token(&record).await.expect("token");
    let slow = json!({"pipeline": "name: slow\nsteps:\n  - id: nap\n    tool: terminal\n    action: run\n    parameters: {command: sleep 5}\n"});
    let (status, _, first) = call(
        post.clone(),
        "/executions",
        Some(&limited),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _, problem) = call(
        post.clone(),
        "/executions",
        Some(&limited),
        Some(slow.clone()),
    )
    .await;
    assert_eq!(
        (status, problem["type"].clone()),
        (429, json!("/problems/too-many-requests"))
    );
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("max_active_executions_per_token")),
        "{problem}"
    );
    let id = first["id"].as_str().expect("id");
    assert_eq!(
        call(
            post.clone(),
            &format!("/executions/{id}/cancel"),
            Some(&limited),
            None
        )
        .await
        .0,
        200
    );
    let (status, _, second) = call(post.clone(), "/executions", Some(&limited), Some(slow)).await;
    assert_eq!(status, 201, "a cancelled execution no longer counts");
    let id = second["id"].as_str().expect("id");
    call(
        post.clone(),
        &format!("/executions/{id}/cancel"),
        Some(&limited),
        None,
    )
    .await;
}

#[test]
fn without_authentication_only_loopback_is_served() {
    use orchestrator_server::cli::check_exposure;
    let mut settings = Settings {
        bind: "0.0.0.0:8080".parse().expect("addr"),
        ..Settings::default()
    };
    let err = check_exposure(&settings).expect_err("refused");
    assert!(err.contains("--allow-unauthenticated"), "{err}");
    settings.auth.allow_unauthenticated = true;
    assert!(check_exposure(&settings).is_ok());
    settings.auth.allow_unauthenticated = false;
    settings.auth.enabled = true;
    assert!(check_exposure(&settings).is_ok());
    settings.auth.enabled = false;
    settings.bind = "127.0.0.1:8080".parse().expect("addr");
    assert!(check_exposure(&settings).is_ok());
}
