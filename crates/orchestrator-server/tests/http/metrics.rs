//! Prometheus metrics move by what a run did.

use crate::support::*;

/// A strict reader of the Prometheus text format (0.0.4): every line is a
/// `# HELP`, a `# TYPE` or a sample `name{label="value",...} number`, label
/// values with their escapes; samples belong to a declared metric; histogram
/// buckets are cumulative and end with `+Inf` equal to `_count`.
fn parse_prometheus(text: &str) -> Result<std::collections::BTreeMap<String, f64>, String> {
    use std::collections::BTreeMap;
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars().enumerate().all(|(i, c)| {
                c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = |m: &str| format!("line {}: {m}: {line}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name, tail) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            if !name_ok(name) {
                return Err(at("bad metric name"));
            }
            match kind {
                Some("HELP") => {}
                Some("TYPE")
                    if ["counter", "gauge", "histogram", "summary", "untyped"].contains(&tail) =>
                {
                    if types.insert(name.to_string(), tail.to_string()).is_some() {
                        return Err(at("metric declared twice"));
                    }
                }
                _ => return Err(at("bad comment")),
            }
            continue;
        }
        let (name, rest) = line.split_at(line.find(['{', ' ']).ok_or_else(|| at("no value"))?);
        if !name_ok(name) {
            return Err(at("bad metric name"));
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        let mut chars = rest.chars().peekable();
        if chars.peek() == Some(&'{') {
            chars.next();
            loop {
                match chars.peek() {
                    Some('}') => {
                        chars.next();
                        break;
                    }
                    Some(',') => {
                        chars.next();
                    }
                    _ => {}
                }
                if chars.peek() == Some(&'}') {
                    continue;
                }
                let key: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
                if !name_ok(&key) || chars.next() != Some('=') || chars.next() != Some('"') {
                    return Err(at("bad label"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some('\\') => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            _ => return Err(at("bad escape")),
                        },
                        Some('"') => break,
                        Some(c) => value.push(c),
                        None => return Err(at("unterminated label value")),
                    }
                }
                labels.push((key, value));
            }
        }
        let tail: String = chars.collect();
        let mut fields = tail.split_whitespace();
        let value = match fields.next().ok_or_else(|| at("no value"))? {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse::<f64>().map_err(|_| at("value is not a number"))?,
        };
        if fields.nth(1).is_some() {
            return Err(at("trailing text"));
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(name);
        if !types.contains_key(family) {
            return Err(at("sample of an undeclared metric"));
        }
        labels.sort();
        let key = format!(
            "{name}{{{}}}",
            labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        );
        if out.insert(key, value).is_some() {
            return Err(at("duplicate sample"));
        }
    }
    // Histograms: cumulative buckets, +Inf equals _count.
    for (family, _) in types.iter().filter(|(_, t)| *t == "histogram") {
        let prefix = format!("{family}_bucket{{");
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for (k, v) in out
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
        {
            let inner = &k[prefix.len()..k.len() - 1];
            let (rest, le): (Vec<&str>, Vec<&str>) =
                inner.split(',').partition(|p| !p.starts_with("le="));
            let le = le
                .first()
                .ok_or("bucket without le")?
                .trim_start_matches("le=")
                .trim_matches('"');
            let bound = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| "bad le")?
            };
            series.entry(rest.join(",")).or_default().push((bound, *v));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1)
                || buckets.last().map(|b| b.0) != Some(f64::INFINITY)
            {
                return Err(format!(
                    "{family}{{{labels}}}: buckets are not cumulative up to +Inf"
                ));
            }
            let count = out.get(&format!("{family}_count{{{labels}}}")).copied();
            if count != buckets.last().map(|b| b.1) {
                return Err(format!(
                    "{family}{{{labels}}}: +Inf bucket differs from _count"
                ));
            }
        }
    }
    Ok(out)
}

async fn scrape(s: &Server) -> std::collections::BTreeMap<String, f64> {
    let r = s.client.get(s.url("/metrics")).send().await.expect("send");
    assert!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/plain; version=0.0.4"))
    );
    let text = r.text().await.expect("text");
    parse_prometheus(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn delta(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
    key: &str,
) -> f64 {
    after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_by_what_a_run_did() {
    let dir = TempDir::new("orch-http");
    let s = Server::start(sqlite_url(&dir)).await;
    let before = scrape(&s).await;
    let ok = s
        .run_yaml("name: three\nsteps:\n  - id: a\n    tool: echo\n  - id: b\n    tool: echo\n    depends_on: [a]\n  - id: c\n    tool: echo\n    depends_on: [a]\n", "")
        .await;
    assert_eq!(ok["status"], "succeeded");
    let bad = s
        .run_yaml("name: bad\nsteps:\n  - id: r\n    tool: filesystem\n    action: read\n    max_retries: 2\n    retry: {delay: 0.01}\n    parameters: {path: missing.txt}\n", "")
        .await;
    assert_eq!(bad["status"], "failed");
    let after = scrape(&s).await;
    let d = |k: &str| delta(&before, &after, k);
    assert_eq!(d("orchestrator_executions{status=\"succeeded\"}"), 1.0);
    assert_eq!(d("orchestrator_executions{status=\"failed\"}"), 1.0);
    assert_eq!(
        d("orchestrator_steps_finished_total{status=\"succeeded\",tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_steps_finished_total{status=\"failed\",tool=\"filesystem\"}"),
        2.0
    );
    assert_eq!(
        d("orchestrator_step_retries_total{tool=\"filesystem\"}"),
        1.0
    );
    assert_eq!(
        d("orchestrator_step_duration_seconds_count{tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_step_duration_seconds_bucket{le=\"+Inf\",tool=\"echo\"}"),
        3.0
    );
    assert_eq!(
        d("orchestrator_step_queue_wait_seconds_count{tool=\"filesystem\"}"),
        2.0
    );
    assert_eq!(
        d("orchestrator_http_requests_total{method=\"POST\",route=\"/executions\",status=\"201\"}"),
        2.0
    );
    assert!(
        d(
            "orchestrator_http_requests_total{method=\"GET\",route=\"/executions/{id}\",status=\"200\"}"
        ) >= 2.0,
        "polling counted under the route template: {:#?}",
        after
            .keys()
            .filter(|k| k.contains("http_requests"))
            .collect::<Vec<_>>()
    );
    assert_eq!(after.get("orchestrator_queue_ready_steps{}"), Some(&0.0));
    assert_eq!(after.get("orchestrator_worker_slots_total{}"), Some(&10.0));

    let (status, summary) = s.get("/metrics/summary").await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            summary["total_executions"].clone(),
            summary["successful_executions"].clone(),
            summary["failed_executions"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(summary["success_rate"], 0.5);
    assert!(
        summary["average_execution_time"]
            .as_f64()
            .is_some_and(|t| t >= 0.0)
    );
    assert!(
        summary["resource_utilization"]["memory_mb"]
            .as_f64()
            .is_some_and(|m| m > 1.0),
        "{summary}"
    );
    assert!(
        summary["resource_utilization"]["cpu_percent"]
            .as_f64()
            .is_some(),
        "{summary}"
    );

    let (status, health) = s.get("/health/components").await;
    assert_eq!(status, 200);
    assert_eq!(health["store"]["status"], "healthy", "{health}");
    assert_eq!(health["worker_pool"]["status"], "healthy", "{health}");
    assert_eq!(
        health["model_registry"]["status"], "warning",
        "no models yet: {health}"
    );
    assert_eq!(health["overall"], "warning");

    // A model whose endpoint answers is usable; one nobody listens for is named.
    let here = s.url("/v1");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    for (id, base) in [
        ("near", here),
        ("gone", format!("http://127.0.0.1:{closed}/v1")),
    ] {
        let (status, body) = s
            .send_json(
                reqwest::Method::POST,
                "/models",
                Some(
                    json!({"id": id, "provider": "openai", "model": "m", "base_url": base,
                    "capabilities": ["generate"], "context_window": 4096, "cost_per_1k_tokens": 0}),
                ),
            )
            .await;
        assert_eq!(status, 201, "{body:#}");
        let (_, health) = s.get("/health/components").await;
        let registry = &health["model_registry"];
        if id == "near" {
            assert_eq!(registry["status"], "healthy", "{health}");
        } else {
            assert_eq!(registry["status"], "warning", "{health}");
            assert!(
                registry["detail"]
                    .as_str()
                    .is_some_and(|m| m.contains("1 of 2 models usable") && m.contains("gone")),
                "{health}"
            );
        }
    }
}
