//! `image-analysis` and `image-generation`, the seed's multimodal tools, on
//! the server's models: an image from the workspace (or inline) shown to a
//! model with the `vision` capability, and images drawn by a model with the
//! `image-generation` capability (the OpenAI-compatible images API) and
//! written into the workspace.

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::filesystem::resolve;
use crate::models::providers::{ChatRequest, GeneratedImage, ImageInput, ImageRequest, Message};
use crate::models::{ModelGateway, ModelSpec, Requirements};
use crate::{
    ActionSpec, ErrorKind, Tool, ToolContext, ToolError, action, optional_count, optional_str,
    required_str,
};

/// The largest image read or written (providers take 20 MB at most).
pub const MAX_IMAGE_BYTES: usize = 20 * 1024 * 1024;

/// An image's bytes, what kind it is and how big.
#[derive(Debug, Clone)]
struct Picture {
    bytes: Vec<u8>,
    media_type: &'static str,
    format: &'static str,
    width: usize,
    height: usize,
}

/// The kinds every provider accepts.
fn inspect(bytes: Vec<u8>, what: &str) -> Result<Picture, ToolError> {
    use imagesize::ImageType;
    let kind = imagesize::image_type(&bytes)
        .map_err(|_| ToolError::invalid(format!("{what} is not an image")))?;
    let (media_type, format) = match kind {
        ImageType::Png => ("image/png", "PNG"),
        ImageType::Jpeg => ("image/jpeg", "JPEG"),
        ImageType::Gif => ("image/gif", "GIF"),
        ImageType::Webp => ("image/webp", "WEBP"),
        other => {
            return Err(ToolError::invalid(format!(
                "{what} is a {other:?} image; models take PNG, JPEG, GIF or WebP"
            )));
        }
    };
    let size = imagesize::blob_size(&bytes)
        .map_err(|e| ToolError::invalid(format!("{what} cannot be read as {format}: {e}")))?;
    Ok(Picture {
        bytes,
        media_type,
        format,
        width: size.width,
        height: size.height,
    })
}

/// Reads `image`: a data URL, a file in the workspace, or base64 text.
async fn load(ctx: &ToolContext, image: &str) -> Result<Picture, ToolError> {
    let trimmed = image.trim();
    if let Some(rest) = trimmed.strip_prefix("data:") {
        let (_, data) = rest
            .split_once(',')
            .ok_or_else(|| ToolError::invalid("parameter 'image' is a data URL without data"))?;
        return decode(data, "parameter 'image' (a data URL)");
    }
    // Paths have a '.' or are short; base64 text has neither.
    let looks_like_base64 = trimmed.len() >= 64
        && trimmed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+/=\n\r".contains(&b));
    if !looks_like_base64 {
        let file = resolve(&ctx.workspace, trimmed)?;
        let meta = tokio::fs::metadata(&file.full).await.map_err(|e| {
            ToolError::new(
                ErrorKind::FileNotFoundError,
                format!("image '{trimmed}' cannot be read: {e}"),
            )
        })?;
        if meta.len() > MAX_IMAGE_BYTES as u64 {
            return Err(ToolError::new(
                ErrorKind::FileTooLargeError,
                format!(
                    "image '{trimmed}' has {} bytes, more than the limit of {MAX_IMAGE_BYTES}",
                    meta.len()
                ),
            ));
        }
        let bytes = tokio::fs::read(&file.full).await.map_err(|e| {
            ToolError::new(
                ErrorKind::FileNotFoundError,
                format!("image '{trimmed}' cannot be read: {e}"),
            )
        })?;
        return inspect(bytes, &format!("image '{trimmed}'"));
    }
    decode(trimmed, "parameter 'image' (base64)")
}

fn decode(data: &str, what: &str) -> Result<Picture, ToolError> {
    let cleaned: String = data.chars().filter(|c| !c.is_whitespace()).collect();
    if cleaned.len() / 4 * 3 > MAX_IMAGE_BYTES {
        return Err(ToolError::new(
            ErrorKind::ResponseTooLargeError,
            format!("{what} is larger than the limit of {MAX_IMAGE_BYTES} bytes"),
        ));
    }
    let bytes = STANDARD
        .decode(cleaned.as_bytes())
        .map_err(|e| ToolError::invalid(format!("{what} is not valid base64: {e}")))?;
    inspect(bytes, what)
}

/// The model a step names (which must have `capability`), else the
/// server's choice among those that have it.
async fn model_with(
    models: &dyn ModelGateway,
    named: Option<&str>,
    capability: &str,
) -> Result<ModelSpec, ToolError> {
    if let Some(name) = named.filter(|n| !n.trim().is_empty()) {
        let spec = models.named(name).await?;
        if !spec.has_capability(capability) {
            return Err(ToolError::new(
                ErrorKind::ModelUnavailableError,
                format!(
                    "model '{}' does not have the '{capability}' capability (add it to the model's capabilities if it has it)",
                    spec.id
                ),
            ));
        }
        return Ok(spec);
    }
    let requirements = Requirements {
        capabilities: vec![capability.to_string()],
        ..Requirements::default()
    };
    Ok(models.select(None, &requirements, None).await?.model)
}

const ANALYSIS_TYPES: &[&str] = &[
    "describe",
    "detect_objects",
    "extract_text",
    "detect_faces",
    "classify",
];

/// `image-analysis`: an image shown to a vision model.
#[derive(Debug, Clone, Default)]
pub struct ImageAnalysis;

#[async_trait]
impl Tool for ImageAnalysis {
    fn id(&self) -> &str {
        "image-analysis"
    }

    fn description(&self) -> &str {
        "Shows an image (a workspace file, a data URL or base64) to a model with the `vision` capability: {analysis, metadata}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Describe, list objects, read text, find faces or classify",
            json!({"type": "object", "required": ["image", "analysis_type"], "properties": {
                "image": {"type": "string", "description": "a file in the workspace, a data: URL, or base64 (PNG, JPEG, GIF or WebP; at most 20 MB)"},
                "analysis_type": {"enum": ANALYSIS_TYPES},
                "model": {"type": "string", "description": "a registered model with the vision capability (default: the server's choice among them)"},
                "detail_level": {"enum": ["low", "medium", "high"], "description": "default medium"},
                "output_format": {"enum": ["json", "text", "structured"], "description": "json (default): {analysis_type, result, image_info, model_used, detail_level}; text: the answer; structured: the JSON object in the answer"},
                "confidence_threshold": {"type": "number", "minimum": 0, "maximum": 1, "description": "detect_objects: only objects the model is at least this sure of"},
                "prompt_suffix": {"type": "string", "description": "added to the instructions"},
                "max_tokens": {"type": "integer", "minimum": 1, "description": "default 1000"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let models = ctx.models(self.id())?;
        let image = required_str(params, "image")?;
        let analysis_type = required_str(params, "analysis_type")?;
        if !ANALYSIS_TYPES.contains(&analysis_type) {
            return Err(ToolError::invalid(format!(
                "parameter 'analysis_type' is '{analysis_type}'; one of {}",
                ANALYSIS_TYPES.join(", ")
            )));
        }
        let detail = optional_str(params, "detail_level")?.unwrap_or("medium");
        let output_format = optional_str(params, "output_format")?.unwrap_or("json");
        if !["json", "text", "structured"].contains(&output_format) {
            return Err(ToolError::invalid(format!(
                "parameter 'output_format' is '{output_format}'; one of json, text, structured"
            )));
        }
        let threshold =
            match params.get("confidence_threshold") {
                None | Some(Value::Null) => None,
                Some(v) => Some(v.as_f64().filter(|t| (0.0..=1.0).contains(t)).ok_or_else(
                    || {
                        ToolError::invalid(
                            "parameter 'confidence_threshold' must be a number from 0 to 1",
                        )
                    },
                )?),
            };
        let max_tokens = optional_count(params, "max_tokens", 1..=u64::MAX)?.unwrap_or(1000);
        let picture = load(ctx, image).await?;
        let spec = model_with(models, optional_str(params, "model")?, "vision").await?;

        let mut prompt = match analysis_type {
            "describe" => format!("Describe this image in {detail} detail. What do you see?"),
            "detect_objects" => {
                "List all objects you can identify in this image with their locations.".to_string()
            }
            "extract_text" => "Extract and transcribe all text visible in this image.".to_string(),
            "detect_faces" => "Detect and describe any faces or people in this image.".to_string(),
            _ => "Classify this image into appropriate categories.".to_string(),
        };
        if let (Some(t), "detect_objects") = (threshold, analysis_type) {
            prompt.push_str(&format!(
                " Only list objects you are at least {:.0}% confident of.",
                t * 100.0
            ));
        }
        if output_format == "structured" {
            prompt.push_str(" Answer with one JSON object.");
        }
        if let Some(suffix) = optional_str(params, "prompt_suffix")?.filter(|s| !s.is_empty()) {
            prompt.push(' ');
            prompt.push_str(suffix);
        }
        let request = ChatRequest {
            messages: vec![Message {
                images: vec![ImageInput {
                    media_type: picture.media_type.to_string(),
                    base64: STANDARD.encode(&picture.bytes),
                }],
                ..Message::text("user", prompt)
            }],
            temperature: Some(0.1),
            max_tokens: Some(max_tokens),
            ..ChatRequest::default()
        };
        let reply = models.chat(&spec, &request).await?;
        let analysis = match output_format {
            "text" => Value::String(reply.text.clone()),
            "structured" => crate::models::extract_json(&reply.text)
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({"description": reply.text})),
            _ => json!({
                "analysis_type": analysis_type,
                "result": reply.text,
                "image_info": {
                    "width": picture.width,
                    "height": picture.height,
                    "format": picture.format,
                    "bytes": picture.bytes.len(),
                },
                "model_used": spec.id,
                "detail_level": detail,
            }),
        };
        Ok(json!({
            "analysis": analysis,
            "metadata": {
                "analysis_type": analysis_type,
                "model": spec.id,
                "tokens_used": {
                    "prompt_tokens": reply.input_tokens,
                    "completion_tokens": reply.output_tokens,
                },
                "cost": reply.cost,
            },
        }))
    }
}

const SIZES: &[&str] = &["256x256", "512x512", "1024x1024", "1024x1792", "1792x1024"];

/// `image-generation`: images drawn by an image-generation model.
#[derive(Debug, Clone, Default)]
pub struct ImageGeneration;

#[async_trait]
impl Tool for ImageGeneration {
    fn id(&self) -> &str {
        "image-generation"
    }

    fn description(&self) -> &str {
        "Draws images from a text prompt on a model with the `image-generation` capability (the OpenAI-compatible images API), as files in the workspace, base64 or URLs: {images, metadata}"
    }

    fn actions(&self) -> Vec<ActionSpec> {
        vec![action(
            "execute",
            "Draw num_images images",
            json!({"type": "object", "required": ["prompt"], "properties": {
                "prompt": {"type": "string", "minLength": 1},
                "model": {"type": "string", "description": "a registered model with the image-generation capability (default: the server's choice among them)"},
                "size": {"enum": SIZES, "description": "default 512x512"},
                "style": {"type": "string", "description": "added to the prompt as '…, STYLE style'"},
                "negative_prompt": {"type": "string", "description": "added to the prompt as '. Avoid: …'"},
                "num_images": {"type": "integer", "minimum": 1, "maximum": 10, "description": "default 1"},
                "output_format": {"enum": ["file", "base64", "url"], "description": "file (default): written under output_path; base64: data: URLs; url: the provider's URLs (data: URLs when it sent bytes)"},
                "output_path": {"type": "string", "description": "folder in the workspace (default generated_images)"},
                "filename": {"type": "string", "description": "the file's name; with several images, _0, _1, … go before its extension"}
            }}),
        )]
    }

    async fn execute(
        &self,
        _: &str,
        params: &Map<String, Value>,
        ctx: &ToolContext,
    ) -> Result<Value, ToolError> {
        let models = ctx.models(self.id())?;
        let prompt = required_str(params, "prompt")?;
        if prompt.trim().is_empty() {
            return Err(ToolError::invalid("parameter 'prompt' is empty"));
        }
        let size = optional_str(params, "size")?.unwrap_or("512x512");
        if !SIZES.contains(&size) {
            return Err(ToolError::invalid(format!(
                "parameter 'size' is '{size}'; one of {}",
                SIZES.join(", ")
            )));
        }
        let count = optional_count(params, "num_images", 1..=10)?.unwrap_or(1);
        let output_format = optional_str(params, "output_format")?.unwrap_or("file");
        if !["file", "base64", "url"].contains(&output_format) {
            return Err(ToolError::invalid(format!(
                "parameter 'output_format' is '{output_format}'; one of file, base64, url"
            )));
        }
        let folder = optional_str(params, "output_path")?.unwrap_or("generated_images");
        let filename = optional_str(params, "filename")?.filter(|f| !f.trim().is_empty());
        if let Some(name) = filename
            && (name.contains(['/', '\\']) || name == "." || name == "..")
        {
            return Err(ToolError::invalid(format!(
                "parameter 'filename' ('{name}') must be a file name, not a path (put folders in output_path)"
            )));
        }
        // Refuse a folder outside the workspace before anything is drawn.
        if output_format == "file" {
            resolve(&ctx.workspace, folder)?;
        }
        let mut full_prompt = prompt.to_string();
        if let Some(style) = optional_str(params, "style")?.filter(|s| !s.is_empty()) {
            full_prompt = format!("{full_prompt}, {style} style");
        }
        if let Some(avoid) = optional_str(params, "negative_prompt")?.filter(|s| !s.is_empty()) {
            full_prompt = format!("{full_prompt}. Avoid: {avoid}");
        }
        let spec = model_with(models, optional_str(params, "model")?, "image-generation").await?;
        let request = ImageRequest {
            prompt: full_prompt.clone(),
            size: size.to_string(),
        };
        let stamp = chrono::Utc::now().timestamp();
        let mut images = Vec::new();
        for i in 0..count {
            let drawn = models.image(&spec, &request).await?;
            let item = match (output_format, drawn) {
                ("url", GeneratedImage::Url(url)) => json!({"url": url, "format": "url"}),
                (format, drawn) => {
                    let bytes = match drawn {
                        GeneratedImage::Base64(b64) => {
                            decode(&b64, &format!("the image model '{}' drew", spec.id))?.bytes
                        }
                        GeneratedImage::Url(url) => {
                            models.download(&spec, &url, MAX_IMAGE_BYTES).await?
                        }
                    };
                    let picture = inspect(bytes, &format!("the image model '{}' drew", spec.id))?;
                    let data_url = || {
                        format!(
                            "data:{};base64,{}",
                            picture.media_type,
                            STANDARD.encode(&picture.bytes)
                        )
                    };
                    match format {
                        "file" => {
                            let ext = picture.format.to_ascii_lowercase().replace("jpeg", "jpg");
                            let name = match filename {
                                Some(f) if count == 1 => f.to_string(),
                                Some(f) => match f.rsplit_once('.') {
                                    Some((base, e)) => format!("{base}_{i}.{e}"),
                                    None => format!("{f}_{i}"),
                                },
                                None => format!("generated_{stamp}_{i}.{ext}"),
                            };
                            let relative = format!("{}/{name}", folder.trim_end_matches('/'));
                            crate::filesystem::write_bytes(ctx, &relative, &picture.bytes).await?;
                            json!({"path": relative, "format": "file", "width": picture.width,
                                   "height": picture.height, "bytes": picture.bytes.len()})
                        }
                        "base64" => json!({"data": data_url(), "format": "base64"}),
                        _ => json!({"url": data_url(), "format": "url"}),
                    }
                }
            };
            images.push(item);
        }
        Ok(json!({
            "images": images,
            "metadata": {
                "prompt": full_prompt,
                "size": size,
                "num_generated": images.len(),
                "model": spec.id,
            },
        }))
    }
}
