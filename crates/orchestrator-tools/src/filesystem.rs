//! `filesystem`: read, write, copy, move, delete, list, exists and mkdir,
//! confined to the execution's workspace.
//!
//! Paths are relative to the workspace. Absolute paths, `..`, NUL bytes and
//! symlinks that lead outside are refused before anything is touched.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde_json::{Map, Value, json};

use crate::ErrorKind;
use crate::{
    ActionSpec, Tool, ToolContext, ToolError, action, as_text, optional_bool, required_str,
};

/// Largest file `read` returns and `write` writes, in bytes.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
const MAX_PATH_BYTES: usize = 4096;
const MAX_NAME_BYTES: usize = 255;
const MAX_LIST_ENTRIES: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Filesystem {
    pub max_file_bytes: u64,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
        }
    }
}

fn denied(message: impl Into<String>) -> ToolError {
    ToolError::new(ErrorKind::PermissionError, message)
}

fn io_error(path: &str, e: &std::io::Error) -> ToolError {
    match e.kind() {
        std::io::ErrorKind::NotFound => ToolError::new(
            ErrorKind::FileNotFoundError,
            format!("'{path}' does not exist"),
        ),
        std::io::ErrorKind::PermissionDenied => denied(format!("'{path}': permission denied")),
        std::io::ErrorKind::AlreadyExists => ToolError::new(
            ErrorKind::FileExistsError,
            format!("'{path}' already exists"),
        ),
        _ => ToolError::new(ErrorKind::IOError, format!("'{path}': {e}")),
    }
}

/// A path inside the workspace: the absolute location, the clean relative
/// name, and the path as the pipeline wrote it (results echo it, as the
/// seed's do: `./out/a.txt` comes back as `./out/a.txt`).
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPath {
    pub full: PathBuf,
    pub relative: String,
    pub requested: String,
}

/// Resolves `requested` inside `root`, refusing anything that could leave it.
pub fn resolve(root: &Path, requested: &str) -> Result<SandboxPath, ToolError> {
    if requested.contains('\0') {
        return Err(denied("path contains a NUL byte"));
    }
    if requested.len() > MAX_PATH_BYTES {
        return Err(ToolError::invalid(format!(
            "path is longer than {MAX_PATH_BYTES} bytes"
        )));
    }
    let path = Path::new(requested);
    let mut parts: Vec<&str> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => {
                let name = name
                    .to_str()
                    .ok_or_else(|| ToolError::invalid("path is not valid UTF-8"))?;
                if name.len() > MAX_NAME_BYTES {
                    return Err(ToolError::invalid(format!(
                        "a path component is longer than {MAX_NAME_BYTES} bytes"
                    )));
                }
                parts.push(name);
            }
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(denied(format!(
                    "'{requested}' leaves the workspace ('..' is not allowed)"
                )));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(denied(format!(
                    "'{requested}' is absolute; paths are relative to the workspace"
                )));
            }
        }
    }
    let relative = if parts.is_empty() {
        ".".to_string()
    } else {
        parts.join("/")
    };
    let full = parts.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    check_symlinks(root, &full, requested)?;
    Ok(SandboxPath {
        full,
        relative,
        requested: requested.to_string(),
    })
}

/// The deepest part of `full` that exists must resolve inside `root`.
fn check_symlinks(root: &Path, full: &Path, requested: &str) -> Result<(), ToolError> {
    let real_root = root.canonicalize().map_err(|e| io_error(".", &e))?;
    for existing in full.ancestors() {
        let Ok(meta) = std::fs::symlink_metadata(existing) else {
            continue;
        };
        if existing == root {
            return Ok(());
        }
        let real = match existing.canonicalize() {
            Ok(r) => r,
            Err(_) if meta.file_type().is_symlink() => {
                return Err(denied(format!(
                    "'{requested}' goes through a symlink that leads nowhere"
                )));
            }
            Err(e) => return Err(io_error(requested, &e)),
        };
        if !real.starts_with(&real_root) {
            return Err(denied(format!(
                "'{requested}' leads outside the workspace through a symlink"
            )));
        }
        return Ok(());
    }
    Ok(())
}

/// Only regular files and folders are read or written: opening a FIFO
/// blocks until another process writes to it (a thread stuck past the step's
/// timeout), and devices and sockets are not workspace content.
fn refuse_special(meta: &std::fs::Metadata, relative: &str) -> Result<(), ToolError> {
    if meta.is_file() || meta.is_dir() {
        return Ok(());
    }
    #[cfg(unix)]
    let kind = {
        use std::os::unix::fs::FileTypeExt;
        let t = meta.file_type();
        if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_block_device() || t.is_char_device() {
            "a device"
        } else {
            "a special file"
        }
    };
    #[cfg(not(unix))]
    let kind = "a special file";
    Err(ToolError::new(
        ErrorKind::PermissionError,
        format!("'{relative}' is {kind}; only regular files and folders are used"),
    ))
}

/// Opens a file for reading without waiting on a FIFO that replaced it after
/// it was checked; the opened handle is checked again.
async fn open_regular(full: &Path, relative: &str) -> Result<tokio::fs::File, ToolError> {
    let mut options = tokio::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    options.custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits());
    let file = options
        .open(full)
        .await
        .map_err(|e| io_error(relative, &e))?;
    let meta = file.metadata().await.map_err(|e| io_error(relative, &e))?;
    refuse_special(&meta, relative)?;
    Ok(file)
}

fn entry_type(meta: &std::fs::Metadata) -> &'static str {
    if meta.is_dir() {
        "directory"
    } else if meta.file_type().is_symlink() {
        "symlink"
    } else {
        "file"
    }
}

impl Filesystem {
    async fn workspace(ctx: &ToolContext) -> Result<(), ToolError> {
        tokio::fs::create_dir_all(&ctx.workspace)
            .await
            .map_err(|e| io_error(".", &e))
    }

    async fn read(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let p = resolve(root, required_str(params, "path")?)?;
        let meta = tokio::fs::metadata(&p.full)
            .await
            .map_err(|e| io_error(&p.relative, &e))?;
        refuse_special(&meta, &p.relative)?;
        if meta.is_dir() {
            return Err(ToolError::new(
                ErrorKind::IsADirectoryError,
                format!("'{}' is a directory", p.relative),
            ));
        }
        if meta.len() > self.max_file_bytes {
            return Err(ToolError::new(
                ErrorKind::FileTooLargeError,
                format!(
                    "'{}' has {} bytes; the limit is {}",
                    p.relative,
                    meta.len(),
                    self.max_file_bytes
                ),
            ));
        }
        let mut bytes = Vec::new();
        {
            use tokio::io::AsyncReadExt;
            open_regular(&p.full, &p.relative)
                .await?
                .take(self.max_file_bytes.saturating_add(1))
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
        }
        if bytes.len() as u64 > self.max_file_bytes {
            return Err(ToolError::new(
                ErrorKind::FileTooLargeError,
                format!(
                    "'{}' grew past the limit of {} bytes while it was read",
                    p.relative, self.max_file_bytes
                ),
            ));
        }
        let size = bytes.len();
        let content = String::from_utf8(bytes).map_err(|_| {
            ToolError::new(
                ErrorKind::UnicodeDecodeError,
                format!("'{}' is not UTF-8 text", p.relative),
            )
        })?;
        Ok(json!({"path": p.requested, "content": content, "size": size}))
    }

    async fn write(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let p = resolve(root, required_str(params, "path")?)?;
        if p.relative == "." {
            return Err(ToolError::invalid("'path' must name a file"));
        }
        let content = params.get("content").map(as_text).unwrap_or_default();
        if content.len() as u64 > self.max_file_bytes {
            return Err(ToolError::new(
                ErrorKind::FileTooLargeError,
                format!(
                    "content has {} bytes; the limit is {}",
                    content.len(),
                    self.max_file_bytes
                ),
            ));
        }
        let append = optional_bool(params, "append")?.unwrap_or(false);
        if let Some(parent) = p.full.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
            // Creating folders may not have crossed a symlink out of the workspace.
            check_symlinks(root, &p.full, &p.relative)?;
        }
        if tokio::fs::symlink_metadata(&p.full)
            .await
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            check_symlinks(root, &p.full, &p.relative)?;
        }
        if let Ok(meta) = tokio::fs::metadata(&p.full).await {
            refuse_special(&meta, &p.relative)?;
        }
        if append {
            use tokio::io::AsyncWriteExt;
            let mut f = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&p.full)
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
            f.write_all(content.as_bytes())
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
            f.flush().await.map_err(|e| io_error(&p.relative, &e))?;
        } else {
            tokio::fs::write(&p.full, content.as_bytes())
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
        }
        let size = tokio::fs::metadata(&p.full)
            .await
            .map(|m| m.len())
            .unwrap_or(content.len() as u64);
        Ok(json!({"path": p.requested, "size": size}))
    }

    async fn copy_or_move(
        &self,
        params: &Map<String, Value>,
        root: &Path,
        is_move: bool,
    ) -> Result<Value, ToolError> {
        // The seed names the source `path`.
        let source = if params.contains_key("source") || !params.contains_key("path") {
            "source"
        } else {
            "path"
        };
        let src = resolve(root, required_str(params, source)?)?;
        let dst = resolve(root, required_str(params, "destination")?)?;
        if src.relative == "." || dst.relative == "." {
            return Err(denied(
                "the workspace itself cannot be copied, moved or replaced",
            ));
        }
        let meta = tokio::fs::metadata(&src.full)
            .await
            .map_err(|e| io_error(&src.relative, &e))?;
        refuse_special(&meta, &src.relative)?;
        if let Ok(existing) = tokio::fs::metadata(&dst.full).await {
            refuse_special(&existing, &dst.relative)?;
        }
        if let Some(parent) = dst.full.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| io_error(&dst.relative, &e))?;
            check_symlinks(root, &dst.full, &dst.relative)?;
        }
        if is_move {
            tokio::fs::rename(&src.full, &dst.full)
                .await
                .map_err(|e| io_error(&src.relative, &e))?;
            return Ok(json!({"source": src.requested, "destination": dst.requested}));
        }
        if meta.is_dir() {
            return Err(ToolError::new(
                ErrorKind::IsADirectoryError,
                format!("'{}' is a directory; copy works on files", src.relative),
            ));
        }
        let size = tokio::fs::copy(&src.full, &dst.full)
            .await
            .map_err(|e| io_error(&src.relative, &e))?;
        Ok(json!({"source": src.requested, "destination": dst.requested, "size": size}))
    }

    async fn delete(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let p = resolve(root, required_str(params, "path")?)?;
        if p.relative == "." {
            return Err(denied("the workspace itself cannot be deleted"));
        }
        let recursive = optional_bool(params, "recursive")?.unwrap_or(false);
        let missing_ok = optional_bool(params, "missing_ok")?.unwrap_or(false);
        let meta = match tokio::fs::symlink_metadata(&p.full).await {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && missing_ok => {
                return Ok(json!({"path": p.requested, "deleted": false}));
            }
            Err(e) => return Err(io_error(&p.relative, &e)),
        };
        let result = if meta.is_dir() {
            if recursive {
                tokio::fs::remove_dir_all(&p.full).await
            } else {
                tokio::fs::remove_dir(&p.full).await
            }
        } else {
            tokio::fs::remove_file(&p.full).await
        };
        result.map_err(|e| match e.kind() {
            std::io::ErrorKind::DirectoryNotEmpty => ToolError::new(
                ErrorKind::OSError,
                format!("'{}' is not empty; pass recursive: true", p.relative),
            ),
            _ => io_error(&p.relative, &e),
        })?;
        Ok(json!({"path": p.requested, "deleted": true}))
    }

    async fn list(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let requested = match params.get("path") {
            None | Some(Value::Null) => ".",
            Some(_) => required_str(params, "path")?,
        };
        let p = resolve(root, requested)?;
        let recursive = optional_bool(params, "recursive")?.unwrap_or(false);
        let mut entries = Vec::new();
        let mut pending = vec![(
            p.full.clone(),
            if p.relative == "." {
                String::new()
            } else {
                p.relative.clone()
            },
        )];
        while let Some((dir, rel)) = pending.pop() {
            let mut reader = tokio::fs::read_dir(&dir)
                .await
                .map_err(|e| io_error(&p.relative, &e))?;
            while let Some(entry) = reader
                .next_entry()
                .await
                .map_err(|e| io_error(&p.relative, &e))?
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}/{name}")
                };
                let meta = entry.metadata().await.map_err(|e| io_error(&path, &e))?;
                let kind = entry_type(&meta);
                if recursive && meta.is_dir() {
                    pending.push((entry.path(), path.clone()));
                }
                entries.push(json!({"name": name, "path": path, "type": kind, "size": meta.len()}));
                if entries.len() > MAX_LIST_ENTRIES {
                    return Err(ToolError::invalid(format!(
                        "more than {MAX_LIST_ENTRIES} entries"
                    )));
                }
            }
        }
        entries.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
        Ok(json!({"path": p.requested, "entries": entries}))
    }

    async fn exists(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let p = resolve(root, required_str(params, "path")?)?;
        Ok(match tokio::fs::metadata(&p.full).await {
            Ok(meta) => json!({"path": p.requested, "exists": true, "type": entry_type(&meta)}),
            Err(_) => json!({"path": p.requested, "exists": false, "type": null}),
        })
    }

    async fn mkdir(&self, params: &Map<String, Value>, root: &Path) -> Result<Value, ToolError> {
        let p = resolve(root, required_str(params, "path")?)?;
        let existed = tokio::fs::metadata(&p.full).await.is_ok_and(|m| m.is_dir());
        tokio::fs::create_dir_all(&p.full)
            .await
            .map_err(|e| io_error(&p.relative, &e))?;
        check_symlinks(root, &p.full, &p.relative)?;
        Ok(json!({"path": p.requested, "created": !existed}))
    }
}

fn path_param(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

#[async_trait]
impl Tool for Filesystem {
    fn id(&self) -> &str {
        "filesystem"
    }

    fn description(&self) -> &str {
        "Files in the execution's workspace: read, write, copy, move, delete, list, exists, mkdir"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        let path = path_param("path relative to the workspace");
        vec![
            action(
                "read",
                "Read a UTF-8 text file: {path, content, size}",
                json!({"type": "object", "required": ["path"], "properties": {"path": path}}),
            ),
            action(
                "write",
                "Write (or append to) a file, creating parent folders: {path, size}",
                json!({"type": "object", "required": ["path"], "properties": {"path": path, "content": {"description": "text; other values are written as JSON"}, "append": {"type": "boolean"}}}),
            ),
            action(
                "copy",
                "Copy a file from `source` (or `path`) to `destination`",
                json!({"type": "object", "required": ["destination"], "anyOf": [{"required": ["source"]}, {"required": ["path"]}], "properties": {"source": path, "path": path, "destination": path}}),
            ),
            action(
                "move",
                "Move or rename a file or folder from `source` (or `path`) to `destination`",
                json!({"type": "object", "required": ["destination"], "anyOf": [{"required": ["source"]}, {"required": ["path"]}], "properties": {"source": path, "path": path, "destination": path}}),
            ),
            action(
                "delete",
                "Delete a file or folder",
                json!({"type": "object", "required": ["path"], "properties": {"path": path, "recursive": {"type": "boolean"}, "missing_ok": {"type": "boolean"}}}),
            ),
            action(
                "list",
                "List a folder: {path, entries: [{name, path, type, size}]}",
                json!({"type": "object", "properties": {"path": path, "recursive": {"type": "boolean"}}}),
            ),
            action(
                "exists",
                "Whether a path exists: {path, exists, type}",
                json!({"type": "object", "required": ["path"], "properties": {"path": path}}),
            ),
            action(
                "mkdir",
                "Create a folder and its parents: {path, created}",
                json!({"type": "object", "required": ["path"], "properties": {"path": path}}),
            ),
        ]
    }

    async fn execute(
        &self,
        action: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        Self::workspace(ctx).await?;
        let root = ctx.workspace.as_path();
        match action {
            "read" => self.read(params, root).await,
            "write" => self.write(params, root).await,
            "copy" => self.copy_or_move(params, root, false).await,
            "move" => self.copy_or_move(params, root, true).await,
            "delete" => self.delete(params, root).await,
            "list" => self.list(params, root).await,
            "exists" => self.exists(params, root).await,
            "mkdir" => self.mkdir(params, root).await,
            other => Err(ToolError::invalid(format!(
                "filesystem has no action '{other}'"
            ))),
        }
    }
}

/// Writes `bytes` to a workspace file, making its folders; the file's path
/// relative to the workspace.
pub(crate) async fn write_bytes(
    ctx: &ToolContext,
    relative: &str,
    bytes: &[u8],
) -> Result<String, ToolError> {
    let target = resolve(&ctx.workspace, relative)?;
    if let Some(parent) = target.full.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            ToolError::new(ErrorKind::IOError, format!("'{}': {e}", target.relative))
        })?;
    }
    // Resolve again now that the folders exist (a symlink made meanwhile).
    let target = resolve(&ctx.workspace, relative)?;
    tokio::fs::write(&target.full, bytes)
        .await
        .map_err(|e| ToolError::new(ErrorKind::IOError, format!("'{}': {e}", target.relative)))?;
    Ok(target.relative)
}
