//! Limits that keep hostile pipelines from exhausting the server. Set once
//! per process (from the server's configuration) before anything is parsed;
//! without that, the defaults hold.

use std::sync::OnceLock;

/// The process's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Steps of a pipeline once its loops are expanded; also the most a loop
    /// may add at run time and the largest `while` `max_iterations`.
    pub max_steps: usize,
    /// YAML nesting depth.
    pub max_yaml_depth: usize,
    /// YAML nodes, aliases expanded (a "billion laughs" document stops here).
    pub max_yaml_nodes: usize,
    /// Bytes that aliases may add to a YAML document once expanded (a few
    /// aliases of one large string stop here).
    pub max_yaml_alias_bytes: usize,
    /// Template evaluation steps (minijinja fuel). One unit of fuel also pays
    /// for 64 bytes of data a template makes, and an allocation the fuel
    /// left could not pay for is refused before it is made: 500,000 lets one
    /// render make at most about 32 MB, twice the output limit.
    pub template_fuel: u64,
    /// Bytes a template may render.
    pub template_output_bytes: usize,
    /// Matches one `regex_replace` may replace.
    pub regex_matches: usize,
    /// How deep executions may nest (`pipeline-executor` children).
    pub max_pipeline_depth: usize,
    /// Bytes of log lines kept per step attempt (half for the head, half
    /// for the tail; the lines between are counted and dropped).
    pub step_log_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_steps: 10_000,
            max_yaml_depth: 128,
            max_yaml_nodes: 1_000_000,
            max_yaml_alias_bytes: 16 * 1024 * 1024,
            template_fuel: 500_000,
            template_output_bytes: 16 * 1024 * 1024,
            regex_matches: 50_000,
            max_pipeline_depth: 10,
            step_log_bytes: 1024 * 1024,
        }
    }
}

static LIMITS: OnceLock<Limits> = OnceLock::new();

/// Sets the limits; only the first call counts (it returns `false` after).
pub fn configure(limits: Limits) -> bool {
    LIMITS.set(limits).is_ok()
}

/// The limits in force.
pub fn get() -> Limits {
    *LIMITS.get_or_init(Limits::default)
}
