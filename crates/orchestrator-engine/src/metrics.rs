//! In-process metrics in the Prometheus text exposition format (0.0.4):
//! labelled counters, gauges and histograms, cheap to update from many tasks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

/// Seconds: from a millisecond to ten minutes.
pub const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 600.0,
];

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A series' key: its label values.
fn key(label_values: &[&str]) -> Vec<String> {
    label_values.iter().map(|v| v.to_string()).collect()
}

/// Escapes a label value.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(names: &[&str], values: &[String], extra: Option<(&str, &str)>) -> String {
    let mut parts: Vec<String> = names
        .iter()
        .zip(values)
        .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
        .collect();
    if let Some((n, v)) = extra {
        parts.push(format!("{n}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

/// Formats a sample value as Prometheus does.
pub fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Writes a metric's `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(
        out,
        "# HELP {name} {}",
        help.replace('\\', "\\\\").replace('\n', "\\n")
    );
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A counter or gauge with labels.
#[derive(Debug)]
pub struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    label_names: &'static [&'static str],
    values: Mutex<BTreeMap<Vec<String>, f64>>,
}

impl Family {
    pub const fn counter(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Self {
        Family {
            name,
            help,
            kind: "counter",
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub const fn gauge(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
    ) -> Self {
        Family {
            name,
            help,
            kind: "gauge",
            label_names,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn add(&self, label_values: &[&str], by: f64) {
        let key = key(label_values);
        *lock(&self.values).entry(key).or_insert(0.0) += by;
    }

    pub fn inc(&self, label_values: &[&str]) {
        self.add(label_values, 1.0);
    }

    pub fn set(&self, label_values: &[&str], to: f64) {
        let key = key(label_values);
        lock(&self.values).insert(key, to);
    }

    pub fn get(&self, label_values: &[&str]) -> f64 {
        let key = key(label_values);
        lock(&self.values).get(&key).copied().unwrap_or(0.0)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, self.kind, self.help);
        for (key, v) in lock(&self.values).iter() {
            let _ = writeln!(
                out,
                "{}{} {}",
                self.name,
                labels(self.label_names, key, None),
                number(*v)
            );
        }
    }
}

#[derive(Debug, Clone, Default)]
struct HistogramState {
    /// Per bucket, not cumulative.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

/// A histogram with labels.
#[derive(Debug)]
pub struct Histogram {
    name: &'static str,
    help: &'static str,
    label_names: &'static [&'static str],
    buckets: &'static [f64],
    values: Mutex<BTreeMap<Vec<String>, HistogramState>>,
}

impl Histogram {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        label_names: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        Histogram {
            name,
            help,
            label_names,
            buckets,
            values: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, label_values: &[&str], value: f64) {
        let key = key(label_values);
        let mut values = lock(&self.values);
        let state = values.entry(key).or_insert_with(|| HistogramState {
            counts: vec![0; self.buckets.len()],
            ..Default::default()
        });
        if let Some(i) = self.buckets.iter().position(|b| value <= *b) {
            state.counts[i] += 1;
        }
        state.sum += value;
        state.count += 1;
    }

    /// Observations so far for these labels.
    pub fn count(&self, label_values: &[&str]) -> u64 {
        let key = key(label_values);
        lock(&self.values).get(&key).map_or(0, |s| s.count)
    }

    pub fn render(&self, out: &mut String) {
        header(out, self.name, "histogram", self.help);
        for (key, state) in lock(&self.values).iter() {
            let mut cumulative = 0;
            for (bound, n) in self.buckets.iter().zip(&state.counts) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "{}_bucket{} {cumulative}",
                    self.name,
                    labels(self.label_names, key, Some(("le", &number(*bound))))
                );
            }
            let _ = writeln!(
                out,
                "{}_bucket{} {}",
                self.name,
                labels(self.label_names, key, Some(("le", "+Inf"))),
                state.count
            );
            let l = labels(self.label_names, key, None);
            let _ = writeln!(out, "{}_sum{l} {}", self.name, number(state.sum));
            let _ = writeln!(out, "{}_count{l} {}", self.name, state.count);
        }
    }
}

/// What this process's engine counts.
#[derive(Debug)]
pub struct EngineMetrics {
    pub steps_finished: Family,
    pub step_duration: Histogram,
    pub queue_wait: Histogram,
    pub retries: Family,
    pub lease_expiries: Family,
    pub model_tokens: Family,
    pub model_cost: Family,
    pub model_calls: Family,
    /// Steps running in this process now.
    pub busy: AtomicI64,
    /// Worker slots of this process (0 without workers).
    pub slots: AtomicI64,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        EngineMetrics {
            steps_finished: Family::counter(
                "orchestrator_steps_finished_total",
                "Step attempts finished by this process, by tool and outcome",
                &["tool", "status"],
            ),
            step_duration: Histogram::new(
                "orchestrator_step_duration_seconds",
                "How long step attempts ran in this process, by tool",
                &["tool"],
                DURATION_BUCKETS,
            ),
            queue_wait: Histogram::new(
                "orchestrator_step_queue_wait_seconds",
                "How long steps waited between becoming runnable and being claimed, by tool",
                &["tool"],
                DURATION_BUCKETS,
            ),
            retries: Family::counter(
                "orchestrator_step_retries_total",
                "Failed step attempts that were scheduled to run again, by tool",
                &["tool"],
            ),
            lease_expiries: Family::counter(
                "orchestrator_lease_expiries_total",
                "Leases this process found expired and handed back (lost workers)",
                &[],
            ),
            model_tokens: Family::counter(
                "orchestrator_model_tokens_total",
                "Tokens used by model calls from this process, by model and direction",
                &["model", "direction"],
            ),
            model_cost: Family::counter(
                "orchestrator_model_cost_dollars_total",
                "US dollars spent by model calls from this process, by model",
                &["model"],
            ),
            model_calls: Family::counter(
                "orchestrator_model_calls_total",
                "Model calls from this process, by model and outcome",
                &["model", "outcome"],
            ),
            busy: AtomicI64::new(0),
            slots: AtomicI64::new(0),
        }
    }
}

impl EngineMetrics {
    pub fn render(&self, out: &mut String) {
        self.steps_finished.render(out);
        self.step_duration.render(out);
        self.queue_wait.render(out);
        self.retries.render(out);
        self.lease_expiries.render(out);
        self.model_calls.render(out);
        self.model_tokens.render(out);
        self.model_cost.render(out);
        header(
            out,
            "orchestrator_worker_slots_busy",
            "gauge",
            "Steps running in this process",
        );
        let _ = writeln!(
            out,
            "orchestrator_worker_slots_busy {}",
            self.busy.load(Ordering::Relaxed)
        );
        header(
            out,
            "orchestrator_worker_slots_total",
            "gauge",
            "Worker slots of this process",
        );
        let _ = writeln!(
            out,
            "orchestrator_worker_slots_total {}",
            self.slots.load(Ordering::Relaxed)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_render_cumulative_buckets() {
        let h = Histogram::new("x_seconds", "help", &["tool"], &[0.1, 1.0]);
        h.observe(&["echo"], 0.05);
        h.observe(&["echo"], 0.5);
        h.observe(&["echo"], 5.0);
        let mut out = String::new();
        h.render(&mut out);
        assert!(
            out.contains("x_seconds_bucket{tool=\"echo\",le=\"0.1\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{tool=\"echo\",le=\"1\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{tool=\"echo\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{tool=\"echo\"} 3\n"), "{out}");
    }

    #[test]
    fn label_values_are_escaped() {
        let c = Family::counter("c_total", "h", &["v"]);
        c.inc(&["a\"b\\c\nd"]);
        let mut out = String::new();
        c.render(&mut out);
        assert!(out.contains(r#"c_total{v="a\"b\\c\nd"} 1"#), "{out}");
    }
}
