//! Readers of small values that several keys share: optional strings,
//! counts and retry policies.

use super::*;

pub(super) fn opt_string(
    node: &Node,
    key: &str,
    step: Option<&str>,
    base: &str,
    cx: &mut Cx,
) -> Option<String> {
    let v = node.get(key)?;
    match &v.value {
        NodeValue::Str(s) => Some(s.clone()),
        NodeValue::Null => None,
        NodeValue::Int(_) | NodeValue::Float(_) | NodeValue::Bool(_) if key == "description" => {
            Some(v.to_json().to_string())
        }
        _ => {
            cx.error(
                ErrorKind::InvalidType,
                format!("'{key}' must be a string, found {}", v.described()),
                v.pos,
                step,
                &format!("{base}/{key}"),
            );
            None
        }
    }
}

pub(super) fn positive_int(n: &Node) -> Option<u32> {
    match n.value {
        NodeValue::Int(i) if i >= 1 => u32::try_from(i).ok(),
        _ => None,
    }
}

fn non_negative_int(n: &Node) -> Option<u64> {
    match n.value {
        NodeValue::Int(i) if i >= 0 => u64::try_from(i).ok(),
        _ => None,
    }
}

pub(super) fn read_retry(
    r: &Node,
    retry: &mut RetryPolicy,
    sid: Option<&str>,
    pointer: &str,
    cx: &mut Cx,
) {
    let Some(entries) = r.as_map() else {
        if let Some(n) = positive_int(r) {
            retry.max_attempts = n;
            return;
        }
        cx.error(
            ErrorKind::InvalidType,
            "'retry' must be a mapping {attempts, backoff, delay_ms, max_delay_ms, jitter}",
            r.pos,
            sid,
            pointer,
        );
        return;
    };
    for (k, v) in entries {
        let ptr = format!("{pointer}/{}", k.name);
        let bad = |cx: &mut Cx, what: &str| {
            cx.error(
                ErrorKind::InvalidValue,
                format!("'retry.{}' must be {what}; found {}", k.name, v.to_json()),
                v.pos,
                sid,
                &ptr,
            );
        };
        match k.name.as_str() {
            "attempts" | "max_attempts" => match positive_int(v) {
                Some(n) => retry.max_attempts = n,
                None => bad(cx, "an integer of at least 1"),
            },
            "backoff" => match v.as_str() {
                Some("fixed") => retry.backoff = Backoff::Fixed,
                Some("exponential") => retry.backoff = Backoff::Exponential,
                _ => bad(cx, "'fixed' or 'exponential'"),
            },
            "delay_ms" => match non_negative_int(v) {
                Some(n) => retry.delay_ms = n,
                None => bad(cx, "a non-negative integer"),
            },
            "max_delay_ms" => match non_negative_int(v) {
                Some(n) => retry.max_delay_ms = n,
                None => bad(cx, "a non-negative integer"),
            },
            "jitter" => match v.value {
                NodeValue::Bool(b) => retry.jitter = if b { 0.1 } else { 0.0 },
                NodeValue::Int(i) if (0..=1).contains(&i) => retry.jitter = i as f64,
                NodeValue::Float(f) if (0.0..=1.0).contains(&f) => retry.jitter = f,
                _ => bad(cx, "true, false or a fraction between 0 and 1"),
            },
            other => cx.warn(
                ErrorKind::InvalidValue,
                format!("unknown retry key '{other}' is ignored"),
                k.pos,
                sid,
                &ptr,
            ),
        }
    }
    if retry.max_delay_ms < retry.delay_ms {
        retry.max_delay_ms = retry.delay_ms;
    }
}
