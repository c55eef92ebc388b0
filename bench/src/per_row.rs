//! `make bench-rows`: the worker's per-row work alone, without the stack: the pure stages every
//! row of a job passes through in the worker, timed in this thread's CPU time on the first
//! day's file of `make bench`, cut into the chunks a job gets. A service's CPU in `make bench`
//! mixes these with I/O, encodings and waits; this splits the part that only the worker's code
//! decides, so a change to it can be measured without two shared cores' noise from the other
//! services.
//!
//! Stages, in the order a job runs them:
//! - plan scan: the plan activity's pass over the whole object (record splitter and mention
//!   hashes);
//! - parse and validate: each chunk's records into valid items and invalid rows;
//! - content hashes: each chunk's latest row per sku, and its content hash (every snapshot);
//! - catalog digests: the reconcile digest of each latest row (every row a job writes);
//! - free: dropping each chunk's parsed rows.

use std::{collections::BTreeMap, path::Path, time::Duration};

use activities::{
    chunk::{parse_chunk, parse_header},
    item_hash::{DigestFields, catalog_digests, content_hashes},
    model::DEFAULT_CHUNK_BYTES,
    planner::{ChunkPlanner, DEFAULT_MAX_RECORD_BYTES, Plan},
};
use anyhow::Context;
use generator::{GeneratorConfig, write_catalog};
use serde::Serialize;

use crate::{
    Args,
    runs::{Spread, cpu_spreads},
};

const STAGES: [&str; 5] = [
    "plan scan",
    "parse and validate",
    "content hashes",
    "catalog digests",
    "free",
];

#[derive(Serialize)]
struct Report {
    rows: u64,
    bytes: usize,
    chunks: usize,
    /// CPU nanoseconds per data row, per stage, in each run.
    runs: Vec<BTreeMap<String, f64>>,
    summary: BTreeMap<String, Spread>,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    let mut object = Vec::new();
    let config = GeneratorConfig {
        rows: args.rows,
        seed: args.seed,
        loadable_by_copy: true,
        ..GeneratorConfig::default()
    };
    write_catalog(&config, &mut object)?;
    let chunk_bytes = args.chunk_bytes.unwrap_or(DEFAULT_CHUNK_BYTES);
    let mut runs = Vec::new();
    let mut chunks = 0;
    for _ in 0..args.runs {
        let (stages, plan) = one_run(&object, chunk_bytes)?;
        chunks = plan.chunks.len();
        let rows = plan.data_rows.max(1) as f64;
        runs.push(
            stages
                .into_iter()
                .map(|(stage, cpu)| (stage.to_owned(), cpu.as_nanos() as f64 / rows))
                .collect::<BTreeMap<_, _>>(),
        );
    }
    eprintln!(
        "\nthe worker's per-row work without the stack: {} rows, {} bytes, {chunks} chunks, \
         {} run(s)\nCPU ns per row (min / median / max); CPU-ms per 1,000 rows is that / 1,000",
        args.rows,
        object.len(),
        args.runs
    );
    let mut summary = cpu_spreads(runs.iter());
    let all = Spread::of(runs.iter().map(|run| run.values().sum())).context("no runs")?;
    summary.insert("all".into(), all);
    for stage in STAGES.into_iter().chain(["all"]) {
        eprintln!("  {stage:<40} {}", summary[stage].show(0));
    }
    let report = Report {
        rows: args.rows,
        bytes: object.len(),
        chunks,
        runs,
        summary,
    };
    let out = args
        .out
        .parent()
        .unwrap_or(Path::new("."))
        .join("per_row.json");
    std::fs::create_dir_all(out.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    eprintln!("written to {}", out.display());
    Ok(())
}

/// One pass of every stage over the object, each stage's CPU time summed over the chunks.
fn one_run(
    object: &[u8],
    chunk_bytes: u64,
) -> anyhow::Result<(Vec<(&'static str, Duration)>, Plan)> {
    let mut spent = [Duration::ZERO; STAGES.len()];
    let plan = timed(&mut spent[0], || {
        let mut planner =
            ChunkPlanner::new(chunk_bytes, DEFAULT_MAX_RECORD_BYTES).collecting_mentions();
        planner.feed(object)?;
        planner.finish()
    })?;
    let header = parse_header(&plan.header_bytes)?;
    let modified_at = chrono::Utc::now();
    for chunk in &plan.chunks {
        let bytes = &object[chunk.start as usize..chunk.end as usize];
        let parsed = timed(&mut spent[1], || {
            parse_chunk(&header, bytes, chunk.first_row)
        });
        let latest = timed(&mut spent[2], || {
            let latest = parsed.latest_per_sku();
            std::hint::black_box(content_hashes(latest.iter().map(|row| &row.item)));
            latest
        });
        timed(&mut spent[3], || {
            std::hint::black_box(catalog_digests(latest.iter().map(|row| {
                DigestFields::of_item(
                    &row.item,
                    modified_at,
                    "bench/key",
                    "\"etag\"",
                    row.row_number as i64,
                )
            })))
        });
        drop(latest);
        timed(&mut spent[4], || drop(parsed));
    }
    Ok((STAGES.into_iter().zip(spent).collect(), plan))
}

/// Runs `work`, adding the CPU time this thread spent in it to `total`.
fn timed<T>(total: &mut Duration, work: impl FnOnce() -> T) -> T {
    let start = thread_cpu();
    let value = work();
    *total += thread_cpu().saturating_sub(start);
    value
}

fn thread_cpu() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write to; this clock exists on every Linux.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stage_runs_over_every_row_of_every_chunk() {
        let mut object = Vec::new();
        let config = GeneratorConfig {
            rows: 3_000,
            seed: 7,
            ..GeneratorConfig::default()
        };
        write_catalog(&config, &mut object).unwrap();
        let (stages, plan) = one_run(&object, 64 << 10).unwrap();
        assert_eq!(plan.data_rows, 3_000);
        assert!(plan.chunks.len() > 1, "{} chunk(s)", plan.chunks.len());
        assert_eq!(
            stages.iter().map(|(stage, _)| *stage).collect::<Vec<_>>(),
            STAGES
        );
        for (stage, cpu) in stages {
            assert!(cpu > Duration::ZERO, "{stage} took no CPU time");
        }
    }
}
