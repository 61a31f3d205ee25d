//! What the benchmarks share.

/// Submits `yaml` as an `application/yaml` body; the new execution's id.
pub async fn submit(client: &reqwest::Client, base: &str, yaml: &str) -> String {
    let r = client
        .post(format!("{base}/executions"))
        .header("content-type", "application/yaml")
        .body(yaml.to_string())
        .send()
        .await
        .expect("submit");
    assert_eq!(
        r.status().as_u16(),
        201,
        "{}",
        r.text().await.unwrap_or_default()
    );
    let v: serde_json::Value = r.json().await.expect("json");
    v["id"].as_str().expect("id").to_string()
}
