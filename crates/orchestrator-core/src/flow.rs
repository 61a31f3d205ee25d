//! What happens to the other steps when one step finishes: readiness, skips,
//! jumps and `on_failure`. Pure, so the store can apply it inside the same
//! transaction that records the step's result.
//!
//! Rules (the language page decides):
//! - A pending step becomes ready when every dependency is *settled*:
//!   succeeded, skipped, or failed with `on_failure: continue` or a jump.
//! - `on_failure: skip` skips the failed step's direct dependents; a skipped
//!   step still counts as settled for its own dependents (branches join again).
//! - `on_failure: fail` (the default): no new step starts; every pending or
//!   ready step is cancelled; running steps finish; the execution fails.
//! - A jump (`on_success`, `on_false`, `on_failure: <id>`) skips the steps of
//!   the same scope strictly between the step and its target.
//! - The execution ends when no step is pending, ready, running or retrying:
//!   `failed` if any step failed (but for failures an `on_error` handler
//!   took), `cancelled` if it was cancelled, else `succeeded`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::model::OnFailure;

/// Status of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Pending,
    Ready,
    Running,
    Retrying,
    /// Waits for a person's answer: holds no lease and no worker.
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Ready => "ready",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Waiting => "waiting",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<StepStatus> {
        Some(match s {
            "pending" => StepStatus::Pending,
            "ready" => StepStatus::Ready,
            "running" => StepStatus::Running,
            "retrying" => StepStatus::Retrying,
            "waiting" => StepStatus::Waiting,
            "succeeded" => StepStatus::Succeeded,
            "failed" => StepStatus::Failed,
            "skipped" => StepStatus::Skipped,
            "cancelled" => StepStatus::Cancelled,
            _ => return None,
        })
    }

    /// Finished for good (no further attempt).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepStatus::Succeeded
                | StepStatus::Failed
                | StepStatus::Skipped
                | StepStatus::Cancelled
        )
    }
}

/// Status of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Its `<AUTO>` tags are being answered; its steps do not exist yet.
    Resolving,
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl ExecutionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionStatus::Resolving => "resolving",
            ExecutionStatus::Queued => "queued",
            ExecutionStatus::Running => "running",
            ExecutionStatus::Succeeded => "succeeded",
            ExecutionStatus::Failed => "failed",
            ExecutionStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionStatus> {
        Some(match s {
            "resolving" => ExecutionStatus::Resolving,
            "queued" => ExecutionStatus::Queued,
            "running" => ExecutionStatus::Running,
            "succeeded" => ExecutionStatus::Succeeded,
            "failed" => ExecutionStatus::Failed,
            "cancelled" => ExecutionStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::Cancelled
        )
    }
}

/// What the flow needs to know about one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowStep {
    pub id: String,
    pub status: StepStatus,
    pub depends_on: Vec<String>,
    pub on_failure: OnFailure,
    pub scope: String,
    pub order: u32,
}

/// How a step ended (as far as the rest of the flow cares).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Succeeded { jump_to: Option<String> },
    Failed,
    Skipped { jump_to: Option<String> },
}

/// A change to apply to another step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    Ready(String),
    Skipped { step: String, reason: String },
    Cancelled { step: String, reason: String },
}

/// The result of [`advance`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Advance {
    pub changes: Vec<Change>,
    /// Set when the execution has nothing left to run.
    pub finished: Option<ExecutionStatus>,
}

/// Applies `outcome` of step `id` to `steps` (which already show that step's
/// new status) and returns what changes for the others.
pub fn advance(steps: &mut [FlowStep], id: &str, outcome: &Outcome) -> Advance {
    let mut changes = Vec::new();
    let index: HashMap<String, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.clone(), i))
        .collect();
    let Some(&me) = index.get(id) else {
        return Advance::default();
    };

    let jump = match outcome {
        Outcome::Succeeded { jump_to } | Outcome::Skipped { jump_to } => jump_to.clone(),
        Outcome::Failed => match &steps[me].on_failure {
            OnFailure::Goto(t) | OnFailure::Handled(Some(t)) => Some(t.clone()),
            _ => None,
        },
    };
    if let Some(target) = jump {
        let (scope, from) = (steps[me].scope.clone(), steps[me].order);
        let target_id = if scope.is_empty() {
            target
        } else {
            format!("{scope}_{target}")
        };
        let to = steps
            .iter()
            .find(|s| s.scope == scope && s.id == target_id && s.order > from)
            .map(|s| s.order);
        if let Some(to) = to {
            for s in steps.iter_mut() {
                if s.scope == scope
                    && s.order > from
                    && s.order < to
                    && matches!(s.status, StepStatus::Pending | StepStatus::Ready)
                {
                    s.status = StepStatus::Skipped;
                    changes.push(Change::Skipped {
                        step: s.id.clone(),
                        reason: format!("jumped_over_by:{id}"),
                    });
                }
            }
        }
    }

    if *outcome == Outcome::Failed {
        match steps[me].on_failure {
            OnFailure::Fail | OnFailure::Retry => {
                for s in steps.iter_mut() {
                    if matches!(
                        s.status,
                        StepStatus::Pending | StepStatus::Ready | StepStatus::Retrying
                    ) {
                        s.status = StepStatus::Cancelled;
                        changes.push(Change::Cancelled {
                            step: s.id.clone(),
                            reason: format!("step_failed:{id}"),
                        });
                    }
                }
            }
            OnFailure::Skip => {
                for s in steps.iter_mut() {
                    if s.status == StepStatus::Pending && s.depends_on.iter().any(|d| d == id) {
                        s.status = StepStatus::Skipped;
                        changes.push(Change::Skipped {
                            step: s.id.clone(),
                            reason: format!("dependency_failed:{id}"),
                        });
                    }
                }
            }
            OnFailure::Continue | OnFailure::Goto(_) | OnFailure::Handled(_) => {}
        }
    }

    // Readiness, repeated because a skip can settle further steps.
    loop {
        let settled = |s: &FlowStep| match s.status {
            StepStatus::Succeeded | StepStatus::Skipped => true,
            StepStatus::Failed => matches!(
                s.on_failure,
                OnFailure::Continue | OnFailure::Goto(_) | OnFailure::Skip | OnFailure::Handled(_)
            ),
            _ => false,
        };
        let newly: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.status == StepStatus::Pending)
            .filter(|(_, s)| {
                s.depends_on
                    .iter()
                    .all(|d| index.get(d).is_none_or(|&j| settled(&steps[j])))
            })
            .map(|(i, _)| i)
            .collect();
        if newly.is_empty() {
            break;
        }
        for i in newly {
            steps[i].status = StepStatus::Ready;
            changes.push(Change::Ready(steps[i].id.clone()));
        }
    }

    Advance {
        finished: finished_status(steps),
        changes,
    }
}

/// Pending steps whose dependencies have all settled (they may run now).
pub fn runnable(steps: &[FlowStep]) -> Vec<String> {
    let status: HashMap<&str, &FlowStep> = steps.iter().map(|s| (s.id.as_str(), s)).collect();
    steps
        .iter()
        .filter(|s| s.status == StepStatus::Pending)
        .filter(|s| {
            s.depends_on.iter().all(|d| {
                status.get(d.as_str()).is_none_or(|dep| match dep.status {
                    StepStatus::Succeeded | StepStatus::Skipped => true,
                    StepStatus::Failed => {
                        matches!(
                            dep.on_failure,
                            OnFailure::Continue
                                | OnFailure::Goto(_)
                                | OnFailure::Skip
                                | OnFailure::Handled(_)
                        )
                    }
                    _ => false,
                })
            })
        })
        .map(|s| s.id.clone())
        .collect()
}

/// The execution's final status if nothing is left to run.
pub fn finished_status(steps: &[FlowStep]) -> Option<ExecutionStatus> {
    if steps.iter().any(|s| !s.status.is_terminal()) {
        return None;
    }
    // A failure an `on_error` handler took does not fail the execution.
    Some(
        if steps.iter().any(|s| {
            s.status == StepStatus::Failed && !matches!(s.on_failure, OnFailure::Handled(_))
        }) {
            ExecutionStatus::Failed
        } else if steps.iter().any(|s| s.status == StepStatus::Cancelled) {
            ExecutionStatus::Cancelled
        } else {
            ExecutionStatus::Succeeded
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(id: &str, deps: &[&str], order: u32) -> FlowStep {
        FlowStep {
            id: id.into(),
            status: if deps.is_empty() {
                StepStatus::Ready
            } else {
                StepStatus::Pending
            },
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            on_failure: OnFailure::Fail,
            scope: String::new(),
            order,
        }
    }

    fn finish(steps: &mut [FlowStep], id: &str, status: StepStatus, outcome: Outcome) -> Advance {
        if let Some(x) = steps.iter_mut().find(|x| x.id == id) {
            x.status = status;
        }
        advance(steps, id, &outcome)
    }

    #[test]
    fn a_join_waits_for_every_dependency() {
        let mut steps = vec![s("a", &[], 0), s("b", &[], 1), s("c", &["a", "b"], 2)];
        let adv = finish(
            &mut steps,
            "a",
            StepStatus::Succeeded,
            Outcome::Succeeded { jump_to: None },
        );
        assert!(adv.changes.is_empty());
        let adv = finish(
            &mut steps,
            "b",
            StepStatus::Succeeded,
            Outcome::Succeeded { jump_to: None },
        );
        assert_eq!(adv.changes, vec![Change::Ready("c".into())]);
        let adv = finish(
            &mut steps,
            "c",
            StepStatus::Succeeded,
            Outcome::Succeeded { jump_to: None },
        );
        assert_eq!(adv.finished, Some(ExecutionStatus::Succeeded));
    }

    #[test]
    fn a_jump_skips_the_steps_between_and_the_branches_join_again() {
        // The branches example: is_long -> long_path (on_success: done) -> short_path -> done.
        let mut steps = vec![
            s("is_long", &[], 0),
            s("long_path", &["is_long"], 1),
            s("short_path", &["long_path"], 2),
            s("done", &["short_path"], 3),
        ];
        finish(
            &mut steps,
            "is_long",
            StepStatus::Succeeded,
            Outcome::Succeeded { jump_to: None },
        );
        let adv = finish(
            &mut steps,
            "long_path",
            StepStatus::Succeeded,
            Outcome::Succeeded {
                jump_to: Some("done".into()),
            },
        );
        assert_eq!(
            adv.changes,
            vec![
                Change::Skipped {
                    step: "short_path".into(),
                    reason: "jumped_over_by:long_path".into()
                },
                Change::Ready("done".into())
            ]
        );
    }

    #[test]
    fn a_false_condition_jumps_over_the_other_branch() {
        let mut steps = vec![
            s("is_long", &[], 0),
            s("long_path", &["is_long"], 1),
            s("short_path", &["long_path"], 2),
            s("done", &["short_path"], 3),
        ];
        let adv = finish(
            &mut steps,
            "is_long",
            StepStatus::Skipped,
            Outcome::Skipped {
                jump_to: Some("short_path".into()),
            },
        );
        assert_eq!(
            adv.changes,
            vec![
                Change::Skipped {
                    step: "long_path".into(),
                    reason: "jumped_over_by:is_long".into()
                },
                Change::Ready("short_path".into())
            ]
        );
    }

    #[test]
    fn failure_modes_decide_what_runs_next() {
        let mut steps = vec![
            s("a", &[], 0),
            s("b", &["a"], 1),
            s("c", &["b"], 2),
            s("x", &[], 3),
        ];
        let adv = finish(&mut steps, "a", StepStatus::Failed, Outcome::Failed);
        assert_eq!(adv.changes.len(), 3, "{adv:?}");
        assert_eq!(adv.finished, Some(ExecutionStatus::Failed));

        let mut steps = vec![s("a", &[], 0), s("b", &["a"], 1), s("c", &["b"], 2)];
        steps[0].on_failure = OnFailure::Continue;
        let adv = finish(&mut steps, "a", StepStatus::Failed, Outcome::Failed);
        assert_eq!(adv.changes, vec![Change::Ready("b".into())]);

        let mut steps = vec![s("a", &[], 0), s("b", &["a"], 1), s("c", &["b"], 2)];
        steps[0].on_failure = OnFailure::Skip;
        let adv = finish(&mut steps, "a", StepStatus::Failed, Outcome::Failed);
        assert_eq!(
            adv.changes,
            vec![
                Change::Skipped {
                    step: "b".into(),
                    reason: "dependency_failed:a".into()
                },
                Change::Ready("c".into())
            ]
        );
    }
}
