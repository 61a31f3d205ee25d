//! The filters the pipeline language adds to minijinja's, and a `replace`
//! that stops at the output limit.
//!
//! Jinja's own `truncate`, `wordwrap`, `wordcount`, `striptags`,
//! `filesizeformat` and `random` come from `minijinja-contrib`; the adapters
//! here take Jinja's positional arguments too (`truncate(100)`) and refuse
//! output past the limit before making it. `center` is written here (contrib
//! has none).

use std::borrow::Cow;

use minijinja::value::{Kwargs, Rest, Value as JValue};
use minijinja::{Environment, Error, ErrorKind, State};
use minijinja_contrib::filters as contrib;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidOperation, msg.into())
}

pub fn register(env: &mut Environment<'static>) {
    // Filters on text take any value and read it as its text, so a step
    // whose result is text works where a string does.
    env.add_filter("slugify", |t: Cow<'_, str>| slugify(&t));
    env.add_filter(
        "truncate_words",
        |t: Cow<'_, str>, count: Option<usize>, end: Option<&str>| truncate_words(&t, count, end),
    );
    env.add_filter("regex_search", |t: Cow<'_, str>, pattern: &str| {
        regex_search(&t, pattern)
    });
    env.add_filter(
        "regex_replace",
        |t: Cow<'_, str>, pattern: &str, replacement: &str| regex_replace(&t, pattern, replacement),
    );
    env.add_filter("to_json", to_json);
    env.add_filter("from_json", |t: Cow<'_, str>| from_json(&t));
    env.add_filter("date", date);
    env.add_filter("basename", |t: Cow<'_, str>| basename(&t));
    // The built-in `replace` can grow text by orders of magnitude in one
    // step, faster than fuel runs out: this one stops at the output limit.
    env.add_filter(
        "replace",
        |t: Cow<'_, str>, from: &str, to: &str, count: Option<usize>| replace(&t, from, to, count),
    );
    env.add_filter("truncate", truncate);
    env.add_filter("wordwrap", wordwrap);
    env.add_filter("wordcount", |v: &JValue| contrib::wordcount(&as_text(v)));
    env.add_filter("striptags", contrib::striptags);
    env.add_filter("filesizeformat", contrib::filesizeformat);
    env.add_filter("random", contrib::random);
    env.add_filter("center", |t: Cow<'_, str>, width: Option<usize>| {
        center(&t, width)
    });
}

/// A value that renders as text but is not a string (a step whose result is
/// text) as that text; anything else as it is.
fn as_text(value: &JValue) -> JValue {
    if value.as_object().is_some() && value.as_str().is_none() {
        JValue::from(value.to_string())
    } else {
        value.clone()
    }
}

/// Jinja's positional arguments as the keyword arguments they stand for
/// (keywords given as such win).
fn with_positional(names: &[&str], args: &[JValue], kwargs: Kwargs) -> Result<Kwargs, Error> {
    if args.len() > names.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            format!("takes at most {} arguments", names.len()),
        ));
    }
    let mut all: Vec<(String, JValue)> = names
        .iter()
        .zip(args)
        .map(|(n, v)| (n.to_string(), v.clone()))
        .collect();
    for key in kwargs.args() {
        if let Ok(v) = kwargs.peek::<JValue>(key) {
            all.retain(|(n, _)| n != key);
            all.push((key.to_string(), v));
        }
    }
    // Every keyword is handed on: contrib refuses the ones it does not know.
    for key in kwargs.args() {
        let _ = kwargs.get::<JValue>(key);
    }
    Ok(Kwargs::from_iter(all))
}

/// `truncate(length=255, killwords=false, end='...', leeway=5)`.
fn truncate(
    state: &mut State,
    value: &JValue,
    args: Rest<JValue>,
    kwargs: Kwargs,
) -> Result<JValue, Error> {
    let kwargs = with_positional(&["length", "killwords", "end", "leeway"], &args, kwargs)?;
    contrib::truncate(state, &as_text(value), kwargs)
}

/// `wordwrap(width=79, break_long_words=true, wrapstring='\n',
/// break_on_hyphens=true)`.
fn wordwrap(value: &JValue, args: Rest<JValue>, kwargs: Kwargs) -> Result<JValue, Error> {
    let kwargs = with_positional(
        &[
            "width",
            "break_long_words",
            "wrapstring",
            "break_on_hyphens",
        ],
        &args,
        kwargs,
    )?;
    let value = &as_text(value);
    // Each line break adds the wrap string: bound what that can make.
    let text = value.as_str().unwrap_or_default();
    let width = kwargs.peek::<Option<usize>>("width")?.unwrap_or(79).max(1);
    let wrap = kwargs
        .peek::<Option<&str>>("wrapstring")?
        .map_or(1, str::len);
    let lines = text.split_whitespace().count() + text.len() / width + 1;
    if text.len().saturating_add(lines.saturating_mul(wrap)) > super::max_output() {
        return Err(too_large());
    }
    contrib::wordwrap(value, kwargs)
}

/// `center(width=80)`: the text in the middle of `width` characters, as
/// Python's `str.center` pads it.
fn center(text: &str, width: Option<usize>) -> Result<String, Error> {
    let width = width.unwrap_or(80);
    let len = text.chars().count();
    if width <= len {
        return Ok(text.to_string());
    }
    if width.saturating_add(text.len()) > super::max_output() {
        return Err(too_large());
    }
    let margin = width - len;
    let left = margin / 2 + (margin & width & 1);
    let mut out = String::with_capacity(text.len() + margin);
    out.extend(std::iter::repeat_n(' ', left));
    out.push_str(text);
    out.extend(std::iter::repeat_n(' ', margin - left));
    Ok(out)
}

fn too_large() -> Error {
    invalid(format!(
        "the result would be larger than {} bytes (limits.template_output_bytes)",
        super::max_output()
    ))
}

fn replace(text: &str, from: &str, to: &str, count: Option<usize>) -> Result<String, Error> {
    if from.is_empty() {
        return Ok(text.to_string());
    }
    if to.len() > from.len() {
        // Count matches only as far as the limit: the answer is known
        // as soon as the text would outgrow it.
        let growth = to.len() - from.len();
        let room = super::max_output().saturating_sub(text.len()) / growth;
        let hits = text
            .matches(from)
            .take(count.unwrap_or(usize::MAX))
            .take(room.saturating_add(1))
            .count();
        if hits > room {
            return Err(too_large());
        }
    }
    Ok(match count {
        Some(n) => text.replacen(from, to, n),
        None => text.replace(from, to),
    })
}

pub fn slugify(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut dash = false;
    for c in text.chars().flat_map(char::to_lowercase) {
        if c.is_alphanumeric() {
            out.push(c);
            dash = false;
        } else if !dash && !out.is_empty() {
            out.push('-');
            dash = true;
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

fn truncate_words(text: &str, count: Option<usize>, end: Option<&str>) -> String {
    let count = count.unwrap_or(50);
    let words: Vec<&str> = text.split_whitespace().collect();
    if words.len() <= count {
        return words.join(" ");
    }
    let mut out = words[..count].join(" ");
    out.push_str(end.unwrap_or("..."));
    out
}

fn compile(pattern: &str) -> Result<regex::Regex, Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| invalid(format!("invalid regular expression: {e}")))
}

fn regex_search(text: &str, pattern: &str) -> Result<JValue, Error> {
    let re = compile(pattern)?;
    Ok(match re.captures(text) {
        None => JValue::from(()),
        Some(caps) if caps.len() > 1 => caps
            .get(1)
            .map(|m| JValue::from(m.as_str()))
            .unwrap_or_else(|| JValue::from(())),
        Some(caps) => caps
            .get(0)
            .map(|m| JValue::from(m.as_str()))
            .unwrap_or_else(|| JValue::from(())),
    })
}

fn regex_replace(text: &str, pattern: &str, replacement: &str) -> Result<String, Error> {
    // Replacing costs per match, which fuel does not see.
    let max_matches = crate::limits::get().regex_matches;
    let re = compile(pattern)?;
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (n, caps) in re.captures_iter(text).enumerate() {
        if n >= max_matches {
            return Err(invalid(format!(
                "regex_replace stops at {max_matches} matches (limits.regex_matches)"
            )));
        }
        let Some(m) = caps.get(0) else { continue };
        out.push_str(&text[last..m.start()]);
        caps.expand(replacement, &mut out);
        last = m.end();
        if out.len() > super::max_output() {
            return Err(too_large());
        }
    }
    out.push_str(&text[last..]);
    if out.len() > super::max_output() {
        return Err(too_large());
    }
    Ok(out)
}

fn to_json(value: JValue, kwargs: Kwargs) -> Result<String, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let json = super::to_json(&value).map_err(|e| invalid(e.message))?;
    let out = match indent {
        Some(_) => serde_json::to_string_pretty(&json),
        None => serde_json::to_string(&json),
    };
    out.map_err(|e| invalid(e.to_string()))
}

fn from_json(text: &str) -> Result<JValue, Error> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("invalid JSON: {e}")))?;
    Ok(JValue::from(minijinja::value::Serde(value)))
}

/// `date(format="%Y-%m-%d")` on an RFC 3339 string, a `YYYY-MM-DD` date, a
/// Unix timestamp, or `"now"`.
fn date(value: JValue, format: Option<&str>) -> Result<String, Error> {
    use chrono::{DateTime, NaiveDate, Utc};
    let format = format.unwrap_or("%Y-%m-%d");
    let when: DateTime<Utc> = if let Some(s) = value.as_str() {
        if s == "now" {
            Utc::now()
        } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            t.with_timezone(&Utc)
        } else if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            d.and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .ok_or_else(|| invalid("invalid date"))?
        } else if let Some(t) = ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        {
            // A date and time without a zone (as Python's isoformat() and
            // most CSV exports write them): read as UTC.
            t.and_utc()
        } else {
            return Err(invalid(format!("'{s}' is not a date")));
        }
    } else if let Ok(secs) = i64::try_from(value.clone()) {
        DateTime::from_timestamp(secs, 0).ok_or_else(|| invalid("timestamp out of range"))?
    } else if let Ok(secs) = f64::try_from(value.clone()) {
        DateTime::from_timestamp(secs as i64, 0).ok_or_else(|| invalid("timestamp out of range"))?
    } else {
        return Err(invalid(format!("{value} is not a date")));
    };
    let mut out = String::new();
    use std::fmt::Write;
    write!(out, "{}", when.format(format)).map_err(|_| invalid("invalid date format"))?;
    Ok(out)
}

fn basename(path: &str) -> String {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string()
}
