//! What templates see: the names in scope and each step's envelope.

use super::*;

/// A step as templates see it: its result, with `result`, `success`,
/// `error`, `status` and `skipped` beside it.
///
/// `{{ step }}` alone renders the result when it is a string (its JSON
/// otherwise; nothing for a step that did not run), and a key that is not
/// part of the envelope is looked up in the result, so `{{ step.content }}`
/// works like `{{ step.result.content }}`. A result's own `status` field wins
/// over the step's status; a step that did not run has no result, so
/// `{% if x.status != 'skipped' %}` reads the step's.
#[derive(Debug, Clone)]
pub struct StepEnvelope {
    pub result: Value,
    pub success: bool,
    pub error: Option<String>,
    /// `succeeded`, `failed`, `skipped` or `cancelled`.
    pub status: String,
}

impl StepEnvelope {
    /// A step that ran: `succeeded` or `failed` by `success`.
    pub fn finished(result: Value, success: bool, error: Option<String>) -> Self {
        let status = if success { "succeeded" } else { "failed" };
        StepEnvelope {
            result,
            success,
            error,
            status: status.to_string(),
        }
    }

    /// A step that did not run (`skipped` or `cancelled`), and why.
    pub fn not_run(status: &str, reason: Option<String>) -> Self {
        StepEnvelope {
            result: Value::Null,
            success: false,
            error: reason,
            status: status.to_string(),
        }
    }

    fn ran(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "failed")
    }
}

impl Object for StepEnvelope {
    /// A step whose result is text is that text in comparisons, `in` and
    /// string filters (`g == 'x'`, `'MOCK' in g`, `g | upper`), as the
    /// seed's wrapped strings are; its attributes still answer.
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        if self.result.is_string() {
            ObjectRepr::Plain
        } else {
            ObjectRepr::Map
        }
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        match key.as_str()? {
            "result" | "output" => Some(JValue::from(Serde(&self.result))),
            "success" => Some(JValue::from(self.success)),
            "error" => Some(match &self.error {
                Some(e) => JValue::from(e.as_str()),
                None => JValue::from(()),
            }),
            "status" => Some(
                self.result
                    .get("status")
                    .map(|v| JValue::from(Serde(v)))
                    .unwrap_or_else(|| JValue::from(self.status.as_str())),
            ),
            "skipped" => Some(
                self.result
                    .get("skipped")
                    .map(|v| JValue::from(Serde(v)))
                    .unwrap_or_else(|| JValue::from(self.status == "skipped")),
            ),
            other => self
                .result
                .as_object()
                .and_then(|m| m.get(other))
                .map(|v| JValue::from(Serde(v))),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        if self.result.is_string() {
            return Enumerator::NonEnumerable;
        }
        Enumerator::Str(&["result", "success", "error"])
    }

    fn is_true(self: &Arc<Self>) -> bool {
        self.success
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.ran() {
            return Ok(());
        }
        match &self.result {
            Value::String(s) => f.write_str(s),
            other => write!(f, "{other}"),
        }
    }
}

/// Names visible to a template, built up by the caller.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    vars: BTreeMap<String, JValue>,
}

impl Scope {
    pub fn new() -> Self {
        Self::default()
    }

    /// Binds a JSON value.
    pub fn set(&mut self, name: impl Into<String>, value: &Value) -> &mut Self {
        self.vars.insert(name.into(), JValue::from(Serde(value)));
        self
    }

    /// Binds the inputs by bare name and as `inputs.x` / `parameters.x`.
    pub fn set_inputs(&mut self, inputs: &serde_json::Map<String, Value>) -> &mut Self {
        for (k, v) in inputs {
            self.set(k.clone(), v);
        }
        let all = Value::Object(inputs.clone());
        self.set("inputs", &all);
        self.set("parameters", &all);
        self
    }

    /// Binds a finished step's envelope under its id.
    pub fn set_step(&mut self, id: impl Into<String>, envelope: StepEnvelope) -> &mut Self {
        self.vars.insert(id.into(), JValue::from_object(envelope));
        self
    }

    /// Binds a step that has not run yet: `none`.
    pub fn set_none(&mut self, id: impl Into<String>) -> &mut Self {
        self.vars.insert(id.into(), JValue::from(()));
        self
    }

    pub(super) fn context(&self) -> JValue {
        JValue::from(self.vars.clone())
    }
}
