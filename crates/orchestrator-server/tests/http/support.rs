//! What every HTTP test shares: a real server on a real TCP port, its
//! client, and small readers of executions.

pub use std::time::Duration;

pub use orchestrator_server::config::Settings;
pub use orchestrator_store::testing::{TempDir, sqlite_url};
pub use serde_json::{Value, json};

pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) client: reqwest::Client,
    pub(crate) workspace: TempDir,
    pub(crate) _db_dir: TempDir,
    pub(crate) running: Option<orchestrator_server::RunningServer>,
}

impl Server {
    pub(crate) async fn start(database_url: String) -> Server {
        Self::start_with(database_url, |_| {}).await
    }

    pub(crate) async fn start_with(
        database_url: String,
        tweak: impl FnOnce(&mut Settings),
    ) -> Server {
        let workspace = TempDir::new("orch-http-ws");
        let db_dir = TempDir::new("orch-http-db");
        let mut settings = Settings {
            http: orchestrator_tools::http::HttpSettings {
                policy: orchestrator_tools::net::OutboundPolicy::new(&["127.0.0.1".into()], false)
                    .expect("policy"),
                ..Default::default()
            },
            bind: "127.0.0.1:0".parse().expect("addr"),
            database_url,
            workspace_root: workspace.path().to_path_buf(),
            max_body_bytes: 1024 * 1024,
            enable_terminal: true,
            ..Settings::default()
        };
        tweak(&mut settings);
        let running = orchestrator_server::start(settings, true)
            .await
            .expect("server starts");
        Server {
            base: format!("http://{}", running.addr),
            client: orchestrator_tools::net::default_client(),
            workspace,
            _db_dir: db_dir,
            running: Some(running),
        }
    }

    /// The running server's store, for setting up what the API cannot.
    pub(crate) fn store(&self) -> std::sync::Arc<dyn orchestrator_store::Store> {
        self.running
            .as_ref()
            .expect("running")
            .state
            .engine()
            .store()
            .clone()
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn post_yaml(&self, yaml: &str, query: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url(&format!("/executions{query}")))
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await
            .expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    pub(crate) async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client.get(self.url(path)).send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Polls the execution until `done` holds for it (or fails after `seconds`).
    pub(crate) async fn until(
        &self,
        id: &str,
        seconds: u64,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        loop {
            let (status, body) = self.get(&format!("/executions/{id}")).await;
            assert_eq!(status, 200, "{body}");
            if done(&body) {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "waited {seconds} s in vain: {body:#}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Polls until the execution has finished.
    pub(crate) async fn finished(&self, id: &str) -> Value {
        self.until(id, 20, |e| {
            matches!(
                e["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        })
        .await
    }

    pub(crate) async fn run_yaml(&self, yaml: &str, query: &str) -> Value {
        let (status, body) = self.post_yaml(yaml, query).await;
        assert_eq!(status, 201, "{body:#}");
        self.finished(body["id"].as_str().expect("id")).await
    }

    /// Posts a body of `size` bytes over a raw connection, reading the answer
    /// while still writing (the server may answer before the body is sent).
    pub(crate) async fn oversized_post(&self, size: usize) -> (u16, String, Value) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://").to_string();
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .expect("connect");
        let (mut read, mut write) = stream.into_split();
        let head = format!(
            "POST /executions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/yaml\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
        );
        let writer = tokio::spawn(async move {
            write.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 64 * 1024];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len());
                write.write_all(&chunk[..n]).await?;
                left -= n;
            }
            std::io::Result::Ok(())
        });
        let mut raw = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), read.read_to_end(&mut raw)).await;
        writer.abort();
        let text = String::from_utf8_lossy(&raw).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let ct = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-type: ")
                    .map(str::to_string)
            })
            .unwrap_or_default();
        (
            status,
            ct,
            serde_json::from_str(body.trim()).unwrap_or(Value::Null),
        )
    }

    pub(crate) fn file(&self, path: &str) -> String {
        std::fs::read_to_string(self.workspace.path().join(path))
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            r.shutdown_token().cancel();
        }
    }
}

pub(crate) fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .expect("example")
}

/// Whether the process at `proc` (`/proc/PID`) ends (or is a zombie) within `seconds`.
pub(crate) async fn gone(proc: &std::path::Path, seconds: u64) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    while proc.exists()
        && !std::fs::read_to_string(proc.join("stat")).is_ok_and(|st| st.contains(") Z "))
    {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

pub(crate) fn step<'a>(execution: &'a Value, id: &str) -> &'a Value {
    execution["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["id"] == id))
        .unwrap_or(&Value::Null)
}

impl Server {
    pub(crate) async fn send_json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut r = self.client.request(method, self.url(path));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.expect("send");
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// A connection that has sent `head` (and then sends nothing).
pub(crate) async fn connection_sending(addr: &str, head: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut c = tokio::net::TcpStream::connect(addr).await.expect("connect");
    c.write_all(head).await.expect("write");
    c
}

/// Reads until the server closes the connection; `true` when it did within `within`.
pub(crate) async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// The database URL itself, for tests that start their own server.
pub(crate) async fn database(url: String) -> String {
    url
}
