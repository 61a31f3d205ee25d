//! PATCH(orchestrator): a bound on how deeply values nest.
//!
//! A template can build a value one level deeper on every loop iteration
//! (`{% set ns.x = [ns.x] %}`) or on every statement (`{% set x = [x] %}`),
//! or tie a namespace into a cycle (`{% set ns.x = [ns] %}`). Rendering,
//! comparing, serializing and even dropping such a value recurse once per
//! level and overflow the thread's stack, which aborts the process. Every
//! value stored in a variable or a namespace is therefore checked here: no
//! stored value may nest deeper than [`MAX_VALUE_DEPTH`] containers. A value
//! built inside one expression can only add the expression's own nesting
//! (which the parser bounds) to that.
//!
//! A namespace attribute may not hold a namespace, at any depth: otherwise a
//! namespace could be put inside a value and then, by mutation, made to
//! contain that value (a cycle) or chained with others into a nesting no
//! single assignment shows.
//!
//! The check is iterative (it uses no stack per level) and visits each
//! container once (shared containers are remembered by address; the values
//! are kept alive while the check runs, so addresses cannot be reused).
use std::collections::HashMap;

use crate::error::{Error, ErrorKind};
use crate::value::namespace_object::Namespace;
use crate::value::{ObjectRepr, Value};

/// The deepest a stored value may nest.
pub(crate) const MAX_VALUE_DEPTH: usize = 256;

type Children = Box<dyn Iterator<Item = Value> + Send + Sync>;

/// The address and children of a value that is a list or a map.
fn container(value: &Value) -> Option<(usize, Children)> {
    let obj = value.as_object()?;
    let children: Children = match obj.repr() {
        ObjectRepr::Seq => obj.try_iter()?,
        ObjectRepr::Map => Box::new(obj.try_iter_pairs()?.flat_map(|(k, v)| [k, v])),
        ObjectRepr::Plain | ObjectRepr::Iterable => return None,
    };
    Some((obj.addr(), children))
}

/// Where a value is stored.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Variable,
    Namespace,
}

fn refuse_namespace(value: &Value, target: Target) -> Result<(), Error> {
    if target == Target::Namespace && value.downcast_object_ref::<Namespace>().is_some() {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            "a namespace attribute cannot hold a namespace",
        ));
    }
    Ok(())
}

/// Fails when `value` nests deeper than [`MAX_VALUE_DEPTH`] containers (or,
/// stored in a namespace, holds a namespace).
pub(crate) fn check(value: &Value, target: Target) -> Result<(), Error> {
    refuse_namespace(value, target)?;
    let Some((addr, children)) = container(value) else {
        return Ok(());
    };
    // Finished containers: address → how many levels they hold.
    let mut heights: HashMap<usize, usize> = HashMap::new();
    let mut keep = Vec::new();
    let mut path: Vec<(usize, Children, usize)> = vec![(addr, children, 1)];
    while let Some((_, children, height)) = path.last_mut() {
        match children.next() {
            Some(child) => {
                refuse_namespace(&child, target)?;
                let Some((addr, grandchildren)) = container(&child) else {
                    continue;
                };
                if let Some(h) = heights.get(&addr) {
                    *height = (*height).max(h + 1);
                    continue;
                }
                if path.len() >= MAX_VALUE_DEPTH {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        format!("value nests deeper than {MAX_VALUE_DEPTH} levels"),
                    ));
                }
                keep.push(child);
                path.push((addr, grandchildren, 1));
            }
            None => {
                let Some((addr, _, height)) = path.pop() else {
                    break;
                };
                heights.insert(addr, height);
                if let Some((_, _, parent)) = path.last_mut() {
                    *parent = (*parent).max(height + 1);
                }
            }
        }
    }
    Ok(())
}
