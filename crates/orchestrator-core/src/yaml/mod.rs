//! A small YAML loader that keeps the position of every node.
//!
//! Serde-based loaders stop at the first problem and forget where values came
//! from. The compiler needs both: it reports every error at once with its line
//! and column. This module turns `saphyr-parser` events into a [`Node`] tree
//! using the YAML 1.2 core schema, with a budget on alias expansion so a
//! "billion laughs" document cannot exhaust memory.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span, Tag};
use serde::{Deserialize, Serialize};

mod scalar;
#[cfg(test)]
mod tests;

use scalar::{merge_into, resolve_scalar};

/// A 1-based line and column in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

/// A YAML value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: NodeValue,
    pub pos: Pos,
}

/// The value of a [`Node`]. Mapping keys keep their own positions and order.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(Key, Node)>),
}

/// A mapping key: always a string here (scalar keys are stringified).
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub pos: Pos,
}

/// A document that is not well-formed YAML, or not one this loader accepts.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message} at line {}, column {}", pos.line, pos.column)]
pub struct YamlError {
    pub message: String,
    pub pos: Pos,
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "boolean",
            NodeValue::Int(_) => "integer",
            NodeValue::Float(_) => "number",
            NodeValue::Str(_) => "string",
            NodeValue::Seq(_) => "list",
            NodeValue::Map(_) => "mapping",
        }
    }

    /// The type with its article, for messages: "an integer", "a list", "null".
    pub fn described(&self) -> &'static str {
        match self.value {
            NodeValue::Null => "null",
            NodeValue::Bool(_) => "a boolean",
            NodeValue::Int(_) => "an integer",
            NodeValue::Float(_) => "a number",
            NodeValue::Str(_) => "a string",
            NodeValue::Seq(_) => "a list",
            NodeValue::Map(_) => "a mapping",
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            NodeValue::Map(m) => Some(m),
            _ => None,
        }
    }

    /// Looks a key up in a mapping node.
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, v)| v)
    }

    /// Converts to JSON. Non-finite floats become strings (`.inf`, `.nan`),
    /// since JSON cannot carry them.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(f.to_string())),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.name.clone(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// Builds a node tree from JSON (all positions are zero: the value did
    /// not come from YAML text).
    pub fn from_json(value: &serde_json::Value) -> Node {
        use serde_json::Value;
        let value = match value {
            Value::Null => NodeValue::Null,
            Value::Bool(b) => NodeValue::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => NodeValue::Int(i),
                None => NodeValue::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => NodeValue::Str(s.clone()),
            Value::Array(items) => NodeValue::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(map) => NodeValue::Map(
                map.iter()
                    .map(|(k, v)| {
                        (
                            Key {
                                name: k.clone(),
                                pos: Pos::default(),
                            },
                            Node::from_json(v),
                        )
                    })
                    .collect(),
            ),
        };
        Node {
            value,
            pos: Pos::default(),
        }
    }
}

fn pos_of(span: &Span) -> Pos {
    Pos {
        line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
        column: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
    }
}

enum Frame {
    Seq {
        items: Vec<Node>,
        pos: Pos,
        anchor: usize,
    },
    Map {
        entries: Vec<(Key, Node)>,
        /// Where each key is in `entries`: a mapping of many keys is read in
        /// linear time.
        index: HashMap<String, usize>,
        pending_key: Option<Key>,
        /// Keys that came from a merge (`<<`): explicit keys replace them.
        merged: HashSet<String>,
        pos: Pos,
        anchor: usize,
    },
}

/// Parses one YAML document into a [`Node`] under the limits in force. An
/// empty document is `Null`.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    parse_with(text, &crate::limits::get())
}

/// [`parse`] under the given limits: for text read before the limits are
/// configured (the configuration itself), which must not fix them early.
pub fn parse_with(text: &str, limits: &crate::limits::Limits) -> Result<Node, YamlError> {
    read(text, limits, None)
}

/// [`parse`], but a key written twice in one mapping keeps its last value
/// (as the seed's YAML loader does) instead of being an error; each such
/// key is returned, at its second place, with the line of the first.
pub fn parse_lenient(text: &str) -> Result<(Node, Vec<YamlError>), YamlError> {
    let mut duplicates = Vec::new();
    let node = read(text, &crate::limits::get(), Some(&mut duplicates))?;
    Ok((node, duplicates))
}

fn read(
    text: &str,
    limits: &crate::limits::Limits,
    mut duplicates: Option<&mut Vec<YamlError>>,
) -> Result<Node, YamlError> {
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut root: Option<Node> = None;
    let mut documents = 0usize;
    let (max_nodes, max_depth) = (limits.max_yaml_nodes, limits.max_yaml_depth);
    let mut budget = max_nodes;
    let max_alias_bytes = limits.max_yaml_alias_bytes;
    let mut alias_bytes = max_alias_bytes;

    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(|e| YamlError {
            message: e.info().to_string(),
            pos: Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                column: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            },
        })?;
        let pos = pos_of(&span);
        let complete: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => None,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(YamlError {
                        message: "a pipeline file holds one YAML document, found a second"
                            .to_string(),
                        pos,
                    });
                }
                None
            }
            Event::SequenceStart(anchor, _) => {
                if stack.len() >= max_depth {
                    return Err(YamlError {
                        message: format!(
                            "nesting deeper than {max_depth} (limits.max_yaml_depth) levels"
                        ),
                        pos,
                    });
                }
                stack.push(Frame::Seq {
                    items: Vec::new(),
                    pos,
                    anchor,
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                if stack.len() >= max_depth {
                    return Err(YamlError {
                        message: format!(
                            "nesting deeper than {max_depth} (limits.max_yaml_depth) levels"
                        ),
                        pos,
                    });
                }
                stack.push(Frame::Map {
                    entries: Vec::new(),
                    index: HashMap::new(),
                    pending_key: None,
                    merged: HashSet::new(),
                    pos,
                    anchor,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { items, pos, anchor }) => Some((
                    Node {
                        value: NodeValue::Seq(items),
                        pos,
                    },
                    anchor,
                )),
                _ => return Err(internal(pos)),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    entries,
                    pos,
                    anchor,
                    ..
                }) => Some((
                    Node {
                        value: NodeValue::Map(entries),
                        pos,
                    },
                    anchor,
                )),
                _ => return Err(internal(pos)),
            },
            Event::Scalar(text, style, anchor, tag) => {
                Some((resolve_scalar(text, style, tag.as_deref(), pos)?, anchor))
            }
            Event::Alias(id) => {
                let target = anchors.get(&id).ok_or_else(|| YamlError {
                    message: "alias to an unknown anchor".to_string(),
                    pos,
                })?;
                let (cost, bytes) = measure(target);
                if cost > budget {
                    return Err(YamlError {
                        message: format!(
                            "aliases expand the document past {max_nodes} (limits.max_yaml_nodes) nodes"
                        ),
                        pos,
                    });
                }
                if bytes > alias_bytes {
                    return Err(YamlError {
                        message: format!(
                            "aliases expand the document past {max_alias_bytes} (limits.max_yaml_alias_bytes) bytes"
                        ),
                        pos,
                    });
                }
                budget -= cost;
                alias_bytes -= bytes;
                let mut node = target.clone();
                node.pos = pos;
                Some((node, 0))
            }
        };

        let Some((node, anchor)) = complete else {
            continue;
        };
        if budget == 0 {
            return Err(YamlError {
                message: format!(
                    "document has more than {max_nodes} (limits.max_yaml_nodes) nodes"
                ),
                pos,
            });
        }
        budget -= 1;
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                index,
                pending_key,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    let name = match node.value {
                        NodeValue::Str(s) => s,
                        NodeValue::Null => "null".to_string(),
                        NodeValue::Bool(b) => b.to_string(),
                        NodeValue::Int(i) => i.to_string(),
                        NodeValue::Float(f) => f.to_string(),
                        NodeValue::Seq(_) | NodeValue::Map(_) => {
                            return Err(YamlError {
                                message: "mapping keys must be scalars".to_string(),
                                pos: node.pos,
                            });
                        }
                    };
                    *pending_key = Some(Key {
                        name,
                        pos: node.pos,
                    });
                }
                Some(key) => {
                    if key.name == "<<" {
                        merge_into(entries, index, merged, node)?;
                    } else if let Some(&i) = index.get(&key.name) {
                        let duplicate = YamlError {
                            message: format!(
                                "duplicate key '{}' (first at line {})",
                                key.name, entries[i].0.pos.line
                            ),
                            pos: key.pos,
                        };
                        if merged.remove(&key.name) {
                            entries[i] = (key, node);
                        } else if let Some(found) = duplicates.as_deref_mut() {
                            found.push(duplicate);
                            entries[i] = (key, node);
                        } else {
                            return Err(duplicate);
                        }
                    } else {
                        index.insert(key.name.clone(), entries.len());
                        entries.push((key, node));
                    }
                }
            },
        }
    }
    Ok(root.unwrap_or(Node {
        value: NodeValue::Null,
        pos: Pos { line: 1, column: 1 },
    }))
}

fn internal(pos: Pos) -> YamlError {
    YamlError {
        message: "unbalanced YAML structure".to_string(),
        pos,
    }
}

/// A node's size: how many nodes it holds and roughly how many bytes of
/// memory it takes (each node's own size plus its text and keys).
fn measure(node: &Node) -> (usize, usize) {
    let own = std::mem::size_of::<Node>();
    match &node.value {
        NodeValue::Str(s) => (1, own + s.len()),
        NodeValue::Seq(items) => items.iter().map(measure).fold((1, own), add),
        NodeValue::Map(entries) => entries
            .iter()
            .map(|(k, v)| add(measure(v), (0, std::mem::size_of::<Key>() + k.name.len())))
            .fold((1, own), add),
        _ => (1, own),
    }
}

fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
    (a.0.saturating_add(b.0), a.1.saturating_add(b.1))
}
