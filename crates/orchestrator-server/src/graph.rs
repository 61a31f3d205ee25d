//! An execution's DAG as Mermaid or Graphviz text, each step with its status.

use orchestrator_core::flow::StepStatus;
use orchestrator_store::StepRecord;

/// Fill colour per status, shared by both formats.
fn colour(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Pending => "#eeeeee",
        StepStatus::Ready => "#dbe9f6",
        StepStatus::Running => "#fff3cd",
        StepStatus::Retrying => "#ffe0b2",
        StepStatus::Waiting => "#e1d5f5",
        StepStatus::Succeeded => "#d4edda",
        StepStatus::Failed => "#f8d7da",
        StepStatus::Skipped => "#e2e3e5",
        StepStatus::Cancelled => "#d6d8d9",
    }
}

const STATUSES: [StepStatus; 9] = [
    StepStatus::Pending,
    StepStatus::Ready,
    StepStatus::Running,
    StepStatus::Retrying,
    StepStatus::Waiting,
    StepStatus::Succeeded,
    StepStatus::Failed,
    StepStatus::Skipped,
    StepStatus::Cancelled,
];

/// Mermaid `flowchart`: nodes are `n0, n1, …` (step ids may hold characters
/// Mermaid does not allow in ids), labelled with the id and status.
pub fn mermaid(steps: &[StepRecord]) -> String {
    let mut out = String::from("flowchart TD\n");
    for status in STATUSES {
        out.push_str(&format!(
            "  classDef {} fill:{},stroke:#555;\n",
            status.as_str(),
            colour(status)
        ));
    }
    let index = |id: &str| steps.iter().position(|s| s.step_id == id);
    for (i, s) in steps.iter().enumerate() {
        let label = s
            .step_id
            .replace('&', "#amp;")
            .replace('"', "#quot;")
            .replace('<', "#lt;")
            .replace('>', "#gt;");
        out.push_str(&format!(
            "  n{i}[\"{label}<br/><i>{}</i>\"]:::{}\n",
            s.status.as_str(),
            s.status.as_str()
        ));
    }
    for (i, s) in steps.iter().enumerate() {
        for dep in &s.depends_on {
            if let Some(d) = index(dep) {
                out.push_str(&format!("  n{d} --> n{i}\n"));
            }
        }
    }
    out
}

fn dot_string(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}

/// Graphviz `digraph`.
pub fn dot(name: &str, steps: &[StepRecord]) -> String {
    let mut out = format!(
        "digraph {} {{\n  rankdir=TB;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
        dot_string(name)
    );
    for s in steps {
        out.push_str(&format!(
            "  {} [label={}, fillcolor=\"{}\"];\n",
            dot_string(&s.step_id),
            dot_string(&format!("{}\n{}", s.step_id, s.status.as_str())),
            colour(s.status)
        ));
    }
    for s in steps {
        for dep in &s.depends_on {
            if steps.iter().any(|o| o.step_id == *dep) {
                out.push_str(&format!(
                    "  {} -> {};\n",
                    dot_string(dep),
                    dot_string(&s.step_id)
                ));
            }
        }
    }
    out.push_str("}\n");
    out
}
