//! The filesystem and report tools on a real folder, and the sandbox.

use std::path::PathBuf;

use orchestrator_tools::{
    Tool, ToolContext, ToolError, filesystem::Filesystem, report::ReportGenerator,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

struct Dirs {
    base: PathBuf,
    ctx: ToolContext,
}

impl Drop for Dirs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn dirs() -> Dirs {
    let base = std::env::temp_dir().join(format!("orch-fs-{}", uuid::Uuid::new_v4().simple()));
    let workspace = base.join("workspace");
    std::fs::create_dir_all(&workspace).expect("workspace");
    std::fs::create_dir_all(base.join("outside")).expect("outside");
    std::fs::write(base.join("outside/secret.txt"), "secret").expect("secret");
    Dirs {
        ctx: ToolContext {
            workspace,
            cancel: CancellationToken::new(),
            execution_id: "e".into(),
            step_id: "s".into(),
            attempt: 1,
            http: orchestrator_tools::net::default_client(),
            memory: None,
            log: None,
            models: None,
        },
        base,
    }
}

fn params(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

async fn fs(d: &Dirs, action: &str, p: Value) -> Result<Value, ToolError> {
    Filesystem::default()
        .execute(action, &params(p), &d.ctx)
        .await
}

#[tokio::test]
async fn write_then_read_round_trips_bytes_exactly() {
    let d = dirs();
    let w = fs(
        &d,
        "write",
        json!({"path": "out/greeting.txt", "content": "hello\n\n"}),
    )
    .await
    .expect("write");
    assert_eq!(w, json!({"path": "out/greeting.txt", "size": 7}));
    let r = fs(&d, "read", json!({"path": "./out//greeting.txt"}))
        .await
        .expect("read");
    // The path comes back as the pipeline wrote it (the seed's results do).
    assert_eq!(
        r,
        json!({"path": "./out//greeting.txt", "content": "hello\n\n", "size": 7})
    );
    fs(
        &d,
        "write",
        json!({"path": "out/greeting.txt", "content": "more", "append": true}),
    )
    .await
    .expect("append");
    let r = fs(&d, "read", json!({"path": "out/greeting.txt"}))
        .await
        .expect("read");
    assert_eq!(r["content"], "hello\n\nmore");
}

#[tokio::test]
async fn other_actions_work_inside_the_workspace() {
    let d = dirs();
    fs(&d, "write", json!({"path": "a.txt", "content": "A"}))
        .await
        .expect("write");
    let c = fs(
        &d,
        "copy",
        json!({"source": "a.txt", "destination": "sub/b.txt"}),
    )
    .await
    .expect("copy");
    assert_eq!(c["size"], 1);
    // The seed names the source `path`.
    let c = fs(
        &d,
        "copy",
        json!({"path": "a.txt", "destination": "sub/seed.txt"}),
    )
    .await
    .expect("copy from path");
    assert_eq!(c["source"], "a.txt");
    fs(&d, "delete", json!({"path": "sub/seed.txt"}))
        .await
        .expect("delete");
    assert!(
        fs(&d, "copy", json!({"destination": "sub/none.txt"}))
            .await
            .is_err(),
        "a copy needs a source"
    );
    fs(
        &d,
        "move",
        json!({"source": "sub/b.txt", "destination": "sub/c.txt"}),
    )
    .await
    .expect("move");
    assert_eq!(
        fs(&d, "exists", json!({"path": "sub/c.txt"}))
            .await
            .expect("exists")["exists"],
        true
    );
    assert_eq!(
        fs(&d, "exists", json!({"path": "sub/b.txt"}))
            .await
            .expect("exists")["exists"],
        false
    );
    let l = fs(&d, "list", json!({"recursive": true}))
        .await
        .expect("list");
    let paths: Vec<&str> = l["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert_eq!(paths, vec!["a.txt", "sub", "sub/c.txt"]);
    assert_eq!(
        fs(&d, "mkdir", json!({"path": "x/y"}))
            .await
            .expect("mkdir")["created"],
        true
    );
    assert_eq!(
        fs(&d, "mkdir", json!({"path": "x/y"}))
            .await
            .expect("mkdir")["created"],
        false
    );
    let e = fs(&d, "delete", json!({"path": "sub"}))
        .await
        .expect_err("not empty");
    assert!(e.message.contains("recursive"), "{e:?}");
    fs(&d, "delete", json!({"path": "sub", "recursive": true}))
        .await
        .expect("delete");
    assert_eq!(
        fs(&d, "delete", json!({"path": "sub", "missing_ok": true}))
            .await
            .expect("ok")["deleted"],
        false
    );
}

#[tokio::test]
async fn failures_have_clear_types() {
    let d = dirs();
    let e = fs(&d, "read", json!({"path": "missing.txt"}))
        .await
        .expect_err("missing");
    assert_eq!(e.kind, "FileNotFoundError");
    let e = fs(&d, "read", json!({})).await.expect_err("no path");
    assert_eq!(
        (e.kind.as_str(), e.message.as_str()),
        ("ValidationError", "missing parameter 'path'")
    );
    let e = fs(&d, "read", json!({"path": 5}))
        .await
        .expect_err("bad type");
    assert_eq!(e.kind, "ValidationError");
    fs(&d, "mkdir", json!({"path": "dir"}))
        .await
        .expect("mkdir");
    assert_eq!(
        fs(&d, "read", json!({"path": "dir"}))
            .await
            .expect_err("dir")
            .kind,
        "IsADirectoryError"
    );
    let small = Filesystem { max_file_bytes: 4 };
    let e = small
        .execute(
            "write",
            &params(json!({"path": "big", "content": "12345"})),
            &d.ctx,
        )
        .await
        .expect_err("big");
    assert_eq!(e.kind, "FileTooLargeError");
    std::fs::write(d.ctx.workspace.join("big2"), "123456").expect("write");
    let e = small
        .execute("read", &params(json!({"path": "big2"})), &d.ctx)
        .await
        .expect_err("big");
    assert_eq!(e.kind, "FileTooLargeError");
}

#[cfg(unix)]
#[tokio::test]
async fn nothing_outside_the_workspace_is_read_or_written() {
    let d = dirs();
    let ws = &d.ctx.workspace;
    std::os::unix::fs::symlink(d.base.join("outside"), ws.join("link_out")).expect("symlink");
    std::os::unix::fs::symlink(d.base.join("outside/secret.txt"), ws.join("secret_link"))
        .expect("symlink");
    std::os::unix::fs::symlink(ws.join("loop_b"), ws.join("loop_a")).expect("symlink");
    std::os::unix::fs::symlink(ws.join("loop_a"), ws.join("loop_b")).expect("symlink");
    std::os::unix::fs::symlink("/nonexistent/target", ws.join("dangling")).expect("symlink");
    let long = "a".repeat(300);
    let very_long = "ab/".repeat(2000);
    let attempts: Vec<(&str, Value)> = vec![
        ("read", json!({"path": "../outside/secret.txt"})),
        ("read", json!({"path": "out/../../outside/secret.txt"})),
        (
            "read",
            json!({"path": d.base.join("outside/secret.txt").to_string_lossy()}),
        ),
        ("read", json!({"path": "/etc/passwd"})),
        ("read", json!({"path": "link_out/secret.txt"})),
        ("read", json!({"path": "secret_link"})),
        ("read", json!({"path": "loop_a"})),
        ("write", json!({"path": "link_out/new.txt", "content": "x"})),
        (
            "write",
            json!({"path": "secret_link", "content": "overwritten"}),
        ),
        ("write", json!({"path": "dangling", "content": "x"})),
        ("write", json!({"path": "../escape.txt", "content": "x"})),
        ("write", json!({"path": "a\u{0}b", "content": "x"})),
        ("write", json!({"path": long, "content": "x"})),
        ("write", json!({"path": very_long, "content": "x"})),
        (
            "copy",
            json!({"source": "secret_link", "destination": "copied.txt"}),
        ),
        (
            "copy",
            json!({"source": "../outside/secret.txt", "destination": "copied.txt"}),
        ),
        (
            "move",
            json!({"source": "link_out", "destination": "moved"}),
        ),
        ("delete", json!({"path": "link_out/secret.txt"})),
        ("delete", json!({"path": "."})),
        ("list", json!({"path": "link_out"})),
        ("mkdir", json!({"path": "link_out/sub"})),
        ("exists", json!({"path": "link_out/secret.txt"})),
    ];
    for (action, p) in attempts {
        let shown = p.to_string().chars().take(80).collect::<String>();
        let result = fs(&d, action, p).await;
        assert!(result.is_err(), "{action} {shown} was allowed: {result:?}");
    }
    assert_eq!(
        std::fs::read_to_string(d.base.join("outside/secret.txt")).expect("secret"),
        "secret"
    );
    let outside: Vec<_> = std::fs::read_dir(d.base.join("outside"))
        .expect("dir")
        .collect();
    assert_eq!(outside.len(), 1, "something was written outside");
    assert!(!d.base.join("escape.txt").exists());
    assert!(!ws.join("copied.txt").exists());
}

#[tokio::test]
async fn reports_come_from_content_or_sections() {
    let d = dirs();
    let r = ReportGenerator
        .execute(
            "generate",
            &params(json!({"content": "Hello World!"})),
            &d.ctx,
        )
        .await
        .expect("report");
    assert_eq!(r, json!({"content": "Hello World!"}));
    let r = ReportGenerator
        .execute(
            "generate",
            &params(json!({"title": "T", "sections": [{"title": "S", "content": "body"}], "path": "out/r.md"})),
            &d.ctx,
        )
        .await
        .expect("report");
    assert_eq!(r["content"], "# T\n\n## S\n\nbody\n");
    assert_eq!(
        std::fs::read_to_string(d.ctx.workspace.join("out/r.md")).expect("file"),
        "# T\n\n## S\n\nbody\n"
    );
    let r = ReportGenerator
        .execute(
            "generate",
            &params(json!({"title": "<T>", "sections": ["a & b"], "format": "html"})),
            &d.ctx,
        )
        .await
        .expect("html");
    let html = r["content"].as_str().unwrap_or_default();
    assert!(
        html.contains("<h1>&lt;T&gt;</h1>") && html.contains("<p>a &amp; b</p>"),
        "{html}"
    );
    let e = ReportGenerator
        .execute("generate", &params(json!({})), &d.ctx)
        .await
        .expect_err("empty");
    assert_eq!(e.kind, "ValidationError");
    let e = ReportGenerator
        .execute(
            "generate",
            &params(json!({"content": "x", "path": "../x"})),
            &d.ctx,
        )
        .await
        .expect_err("escape");
    assert_eq!(e.kind, "PermissionError");
}

#[cfg(unix)]
#[tokio::test]
async fn fifos_sockets_and_devices_are_refused() {
    let d = dirs();
    // A FIFO: reading it blocked a thread until a writer came, past the
    // step's timeout.
    nix::unistd::mkfifo(&d.ctx.workspace.join("pipe"), nix::sys::stat::Mode::S_IRWXU)
        .expect("mkfifo");
    let _socket =
        std::os::unix::net::UnixListener::bind(d.ctx.workspace.join("sock")).expect("socket");
    std::os::unix::fs::symlink("/dev/zero", d.ctx.workspace.join("zero")).expect("symlink");
    for (action, p) in [
        ("read", json!({"path": "pipe"})),
        ("write", json!({"path": "pipe", "content": "x"})),
        (
            "write",
            json!({"path": "pipe", "content": "x", "append": true}),
        ),
        ("copy", json!({"source": "pipe", "destination": "copy.txt"})),
        ("read", json!({"path": "sock"})),
        ("copy", json!({"source": "sock", "destination": "copy.txt"})),
    ] {
        let err =
            tokio::time::timeout(std::time::Duration::from_secs(5), fs(&d, action, p.clone()))
                .await
                .unwrap_or_else(|_| panic!("{action} {p} blocked"))
                .expect_err("refused");
        assert_eq!(err.kind, "PermissionError", "{action} {p}: {err:?}");
        assert!(
            err.message.contains("only regular files"),
            "{}",
            err.message
        );
    }
    // The symlink to a device leads outside the workspace: refused as before.
    assert!(fs(&d, "read", json!({"path": "zero"})).await.is_err());
}
