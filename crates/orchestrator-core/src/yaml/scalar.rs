//! Plain scalars as YAML 1.2's core schema reads them (booleans, integers,
//! floats, null), and merge keys.

use super::*;

/// `<<: *base` or `<<: [*a, *b]`: keys already present win.
pub(super) fn merge_into(
    entries: &mut Vec<(Key, Node)>,
    index: &mut HashMap<String, usize>,
    merged: &mut HashSet<String>,
    node: Node,
) -> Result<(), YamlError> {
    let sources = match node.value {
        NodeValue::Map(m) => vec![m],
        NodeValue::Seq(items) => {
            let mut maps = Vec::new();
            for item in items {
                match item.value {
                    NodeValue::Map(m) => maps.push(m),
                    _ => {
                        return Err(YamlError {
                            message: "merge key '<<' takes a mapping or a list of mappings"
                                .to_string(),
                            pos: item.pos,
                        });
                    }
                }
            }
            maps
        }
        _ => {
            return Err(YamlError {
                message: "merge key '<<' takes a mapping or a list of mappings".to_string(),
                pos: node.pos,
            });
        }
    };
    for source in sources {
        for (k, v) in source {
            if !index.contains_key(&k.name) {
                merged.insert(k.name.clone());
                index.insert(k.name.clone(), entries.len());
                entries.push((k, v));
            }
        }
    }
    Ok(())
}

pub(super) fn resolve_scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&Tag>,
    pos: Pos,
) -> Result<Node, YamlError> {
    let node = |value| Ok(Node { value, pos });
    if let Some(tag) = tag {
        if tag.is_yaml_core_schema() {
            let bad = |kind: &str| YamlError {
                message: format!("'{text}' is not a valid {kind}"),
                pos,
            };
            return match tag.suffix.as_str() {
                "str" => node(NodeValue::Str(text.into_owned())),
                "null" => node(NodeValue::Null),
                "bool" => parse_bool(&text)
                    .map(NodeValue::Bool)
                    .ok_or_else(|| bad("boolean"))
                    .and_then(node),
                "int" => parse_int(&text)
                    .map(NodeValue::Int)
                    .ok_or_else(|| bad("integer"))
                    .and_then(node),
                "float" => parse_float(&text)
                    .or_else(|| parse_int(&text).map(|i| i as f64))
                    .map(NodeValue::Float)
                    .ok_or_else(|| bad("number"))
                    .and_then(node),
                _ => node(plain_value(&text)),
            };
        }
        // Application tags (`!something`) carry no meaning here: keep the text.
        return node(NodeValue::Str(text.into_owned()));
    }
    if style != ScalarStyle::Plain {
        return node(NodeValue::Str(text.into_owned()));
    }
    node(plain_value(&text))
}

fn plain_value(text: &str) -> NodeValue {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return NodeValue::Null,
        _ => {}
    }
    if let Some(b) = parse_bool(text) {
        return NodeValue::Bool(b);
    }
    if let Some(i) = parse_int(text) {
        return NodeValue::Int(i);
    }
    if let Some(f) = parse_float(text) {
        return NodeValue::Float(f);
    }
    NodeValue::Str(text.to_string())
}

fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn parse_int(text: &str) -> Option<i64> {
    if let Some(hex) = text.strip_prefix("0x") {
        return i64::from_str_radix(hex, 16).ok();
    }
    if let Some(oct) = text.strip_prefix("0o") {
        return i64::from_str_radix(oct, 8).ok();
    }
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn parse_float(text: &str) -> Option<f64> {
    match text {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    // YAML 1.2 core: [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
    let body = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mantissa_ok = match mantissa.split_once('.') {
        Some((int, frac)) => {
            (!int.is_empty() || !frac.is_empty())
                && int.bytes().all(|b| b.is_ascii_digit())
                && frac.bytes().all(|b| b.is_ascii_digit())
                && !(int.is_empty() && frac.is_empty())
        }
        None => !mantissa.is_empty() && mantissa.bytes().all(|b| b.is_ascii_digit()),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    if mantissa_ok && exponent_ok {
        text.parse().ok()
    } else {
        None
    }
}
