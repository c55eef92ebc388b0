//! How an object is ingested, on every command that starts ingests (`ingest`, `ingest-source`,
//! `schedule create`): the same flags, the same defaults.

use std::time::Duration;

use activities::{
    model::{
        DEFAULT_CHUNK_BYTES, DEFAULT_HEARTBEAT_TIMEOUT_SECS, DEFAULT_HISTORY_EVENT_BUDGET,
        DEFAULT_MAX_PARALLEL_CHUNKS, IngestOptions,
    },
    planner::{DEFAULT_MAX_RECORD_BYTES, MAX_RECORD_BYTES_LIMIT},
};
use clap::Args;

#[derive(Args, Clone, Debug)]
pub struct IngestOptionArgs {
    /// Target chunk size in bytes (chunks end on record boundaries, so they may be longer).
    #[arg(long, default_value_t = DEFAULT_CHUNK_BYTES, value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_bytes: u64,
    /// Chunks processed in parallel.
    #[arg(long, default_value_t = DEFAULT_MAX_PARALLEL_CHUNKS, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub parallel: u32,
    /// Seconds a chunk may go without heartbeat before it is retried elsewhere.
    #[arg(long, default_value_t = DEFAULT_HEARTBEAT_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_timeout: u64,
    /// History events after which a workflow run continues as new.
    #[arg(long, default_value_t = DEFAULT_HISTORY_EVENT_BUDGET, value_parser = clap::value_parser!(u32).range(20..=10_000))]
    pub history_event_budget: u32,
    /// Longest record accepted, in bytes (at most 64 MiB); a longer one (an unclosed quote,
    /// usually) fails the job with `record_too_large` before anything is written.
    #[arg(long, default_value_t = DEFAULT_MAX_RECORD_BYTES, value_parser = clap::value_parser!(u64).range(1..=MAX_RECORD_BYTES_LIMIT))]
    pub max_record_bytes: u64,
    /// The object is not a full snapshot of the source: it never delists items it omits.
    #[arg(long)]
    pub partial: bool,
    /// Let this job delist more than the mass-delist guard allows (20% and more than 10 items).
    #[arg(long)]
    pub allow_mass_delist: bool,
    /// Longest wait between two attempts of a failing step (e.g. 60s); transient failures are
    /// retried without an attempt cap until the job's deadline.
    #[arg(long, env = "ETL_RETRY_MAX_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub retry_max_interval: Duration,
    /// A job not ended this long after it started fails with `deadline_exceeded` (units s, m,
    /// h, d).
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    pub max_job_duration: Duration,
}

impl IngestOptionArgs {
    pub fn options(&self) -> IngestOptions {
        IngestOptions {
            chunk_bytes: self.chunk_bytes,
            max_parallel_chunks: self.parallel,
            heartbeat_timeout_secs: self.heartbeat_timeout,
            history_event_budget: self.history_event_budget,
            max_record_bytes: self.max_record_bytes,
            partial: self.partial,
            allow_mass_delist: self.allow_mass_delist,
            retry_max_interval_secs: self.retry_max_interval.as_secs().max(1),
            max_job_duration_secs: self.max_job_duration.as_secs(),
        }
    }
}

/// A duration with a unit: `30s`, `15m`, `24h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?} in {text:?} (s, m, h or d)")),
    };
    if number == 0 {
        return Err(format!("{text:?} is zero"));
    }
    Ok(Duration::from_secs(number * seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("0m").is_err());
        assert!(parse_duration("3w").is_err());
    }
}
