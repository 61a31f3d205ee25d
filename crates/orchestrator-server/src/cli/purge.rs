//! `orchestrator purge`: deletes finished executions now, by the command's
//! rule or (without one) by the configured `retention:` rules.

use std::process::ExitCode;

use orchestrator_core::flow::ExecutionStatus;
use orchestrator_engine::retention::{RetentionRule, apply};

use super::{INVALID, ServerFlags, open_store};

/// What to delete, when given on the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct PurgeArgs {
    /// Finished executions older than this: `90m`, `12h`, `30d` (since they
    /// finished).
    #[arg(long, value_name = "AGE")]
    older_than: Option<String>,
    /// Only executions that ended so: succeeded, failed or cancelled
    /// (default: all three).
    #[arg(long, value_name = "STATUS")]
    status: Vec<String>,
    /// Keep the newest this many of each status whatever their age.
    #[arg(long, value_name = "N")]
    keep: Option<u64>,
}

/// `90m`, `12h`, `30d`, `45s` (or plain seconds) as milliseconds.
fn age_ms(text: &str) -> Result<i64, String> {
    let t = text.trim();
    let (number, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let n: i64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not an age such as 90m, 12h or 30d"))?;
    let factor = match unit {
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(format!("'{text}': the unit is s, m, h or d")),
    };
    Ok(n.saturating_mul(factor))
}

fn rules(args: &PurgeArgs) -> Result<Option<Vec<RetentionRule>>, String> {
    if args.older_than.is_none() && args.keep.is_none() {
        if !args.status.is_empty() {
            return Err("--status needs --older-than or --keep".into());
        }
        return Ok(None);
    }
    let max_age_ms = args.older_than.as_deref().map(age_ms).transpose()?;
    let statuses = if args.status.is_empty() {
        vec![
            ExecutionStatus::Succeeded,
            ExecutionStatus::Failed,
            ExecutionStatus::Cancelled,
        ]
    } else {
        args.status
            .iter()
            .map(|s| {
                ExecutionStatus::parse(s)
                    .filter(|st| st.is_terminal())
                    .ok_or_else(|| format!("--status {s}: use succeeded, failed or cancelled"))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Some(
        statuses
            .into_iter()
            .map(|status| RetentionRule {
                status,
                max_age_ms,
                keep: args.keep.map(|k| i64::try_from(k).unwrap_or(i64::MAX)),
            })
            .collect(),
    ))
}

pub(super) async fn purge(args: PurgeArgs, flags: ServerFlags) -> ExitCode {
    let rules = match rules(&args) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(INVALID);
        }
    };
    let (settings, store) = match open_store(&flags).await {
        Ok(opened) => opened,
        Err(code) => return code,
    };
    let rules = match rules {
        Some(r) => r,
        None if settings.retention.rules.is_empty() => {
            eprintln!(
                "error: say what to delete (--older-than AGE, --keep N) or configure retention: in the configuration file"
            );
            return ExitCode::from(INVALID);
        }
        None => settings.retention.rules.clone(),
    };
    match apply(store.as_ref(), &rules).await {
        Ok(n) => {
            println!("deleted {n} finished executions");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_with_their_units() {
        assert_eq!(age_ms("90m"), Ok(5_400_000));
        assert_eq!(age_ms("2d"), Ok(172_800_000));
        assert_eq!(age_ms("45"), Ok(45_000));
        assert!(age_ms("3w").is_err());
        assert!(age_ms("h").is_err());
    }
}
