//! What templates see: the names in scope and each step's envelope.

use super::*;

/// The result of a finished step as templates see it: `{result, success, error}`.
///
/// `{{ step }}` alone renders the result when it is a string (its JSON
/// otherwise), and a key that is not part of the envelope is looked up in the
/// result, so `{{ step.content }}` works like `{{ step.result.content }}`.
#[derive(Debug, Clone)]
pub struct StepEnvelope {
    pub result: Value,
    pub success: bool,
    pub error: Option<String>,
}

impl Object for StepEnvelope {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &JValue) -> Option<JValue> {
        match key.as_str()? {
            "result" | "output" => Some(JValue::from(Serde(&self.result))),
            "success" => Some(JValue::from(self.success)),
            "error" => Some(match &self.error {
                Some(e) => JValue::from(e.as_str()),
                None => JValue::from(()),
            }),
            other => self
                .result
                .as_object()
                .and_then(|m| m.get(other))
                .map(|v| JValue::from(Serde(v))),
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Str(&["result", "success", "error"])
    }

    fn is_true(self: &Arc<Self>) -> bool {
        self.success
    }

    fn render(self: &Arc<Self>, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

    /// Binds a skipped step: `none`.
    pub fn set_none(&mut self, id: impl Into<String>) -> &mut Self {
        self.vars.insert(id.into(), JValue::from(()));
        self
    }

    pub(super) fn context(&self) -> JValue {
        JValue::from(self.vars.clone())
    }
}
