//! Printing a job's summary: the text for people, and the `--json` object operators' scripts
//! read (an interface: extended, never renamed).

use std::{io::Write, process::ExitCode};

use activities::{config::Config, model::JobSummary, visibility};
use serde_json::json;

/// The Web UI's workflow list filtered to a job: its runs (continued-as-new runs too) and the
/// `etlctl reconcile` recounts of it.
pub(crate) fn job_runs_ui_link(config: &Config, job_id: &str) -> Option<String> {
    config.workflow_list_ui_link(&format!("{} = \"{job_id}\"", visibility::JOB_ID.name()))
}

pub(crate) fn exit_code(summary: &JobSummary) -> ExitCode {
    match summary.status.as_str() {
        "completed" | "running" => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

pub(crate) fn print_summary(
    config: &Config,
    summary: &JobSummary,
    json: bool,
) -> anyhow::Result<()> {
    let web_ui = config.workflow_ui_link(&summary.workflow_id);
    let web_ui_runs = job_runs_ui_link(config, &summary.job_id);
    let mut out = std::io::stdout().lock();
    if json {
        let mut value = serde_json::to_value(summary)?;
        value["web_ui_url"] = json!(web_ui);
        value["web_ui_runs_url"] = json!(web_ui_runs);
        writeln!(out, "{}", serde_json::to_string(&value)?)?;
        return Ok(());
    }
    let o = &summary.object;
    let count = |n: Option<u64>| n.map_or("-".to_owned(), |n| n.to_string());
    writeln!(
        out,
        "job            {}  ({})",
        summary.job_id, summary.status
    )?;
    if let Some(error) = &summary.error {
        match &summary.error_type {
            Some(kind) => writeln!(out, "error          [{kind}] {error}")?,
            None => writeln!(out, "error          {error}")?,
        }
    }
    writeln!(
        out,
        "source         {}{}{}",
        summary.source,
        if summary.dry_run { "  (dry run)" } else { "" },
        if summary.partial { "  (partial)" } else { "" }
    )?;
    writeln!(
        out,
        "object         s3://{}/{}  etag {}  size {}  modified {}",
        o.bucket,
        o.key,
        o.etag,
        count(o.size),
        o.last_modified.as_deref().unwrap_or("?")
    )?;
    writeln!(
        out,
        "rows           total {}  valid {}  invalid {}  items {}",
        summary.rows_total,
        summary.rows_valid,
        summary.rows_invalid,
        count(summary.items)
    )?;
    writeln!(
        out,
        "chunks         {} committed of {}",
        summary.chunks_committed, summary.chunks
    )?;
    if summary.items_delisted.is_some() || summary.items_relisted.is_some() {
        writeln!(
            out,
            "catalog        delisted {}  relisted {}",
            count(summary.items_delisted),
            count(summary.items_relisted)
        )?;
    }
    if let Some(refused) = &summary.delist_refused {
        writeln!(
            out,
            "delisting      REFUSED by the mass-delist guard: would delist {} of {} listed \
             items (--allow-mass-delist overrides)",
            refused["would_delist"], refused["listed"]
        )?;
    }
    if let Some(r) = &summary.reconciliation {
        writeln!(
            out,
            "reconciliation {}  source rows {}  pg items {}  ch items {}  listed pg {} ch {}",
            if r.ok { "ok" } else { "MISMATCH" },
            r.source_rows,
            count(r.pg_items),
            count(r.ch_items),
            count(r.pg_listed),
            count(r.ch_listed)
        )?;
    }
    if summary.chunks_clickhouse_pending > 0 {
        writeln!(
            out,
            "clickhouse     {} committed chunks not yet copied to ClickHouse (the source's \
             next job, or `etlctl retry`/`repair`, copies them)",
            summary.chunks_clickhouse_pending
        )?;
    }
    if summary.delisting_clickhouse_pending {
        writeln!(
            out,
            "clickhouse     the delisting is not yet copied to ClickHouse (the source's next \
             job copies it)"
        )?;
    }
    if let Some(previous) = &summary.supersedes_job_id {
        writeln!(out, "supersedes     {previous}")?;
    }
    if let Some(next) = &summary.superseded_by_job_id {
        writeln!(
            out,
            "superseded by  {next}  at {}",
            summary.superseded_at.as_deref().unwrap_or("?")
        )?;
    }
    if let Some(verified_at) = &summary.verified_at {
        writeln!(
            out,
            "verified       {verified_at}  {}",
            match summary.verified_ok {
                Some(true) => "ok",
                _ => "MISMATCH (see etlctl reconcile)",
            }
        )?;
    }
    if summary.status == "running"
        && let Some(deadline) = &summary.deadline_at
    {
        writeln!(out, "deadline       {deadline}")?;
    }
    writeln!(out, "workflow       {}", summary.workflow_id)?;
    if let Some(state) = summary
        .workflow_status
        .as_deref()
        .filter(|s| *s != "running")
    {
        writeln!(
            out,
            "               {state}: the workflow is gone but the job is not ended; the \
             watchdog ends it within minutes, `etlctl retry {0}` or `etlctl cancel {0}` at once",
            summary.job_id
        )?;
    }
    if let Some(web_ui) = &web_ui {
        writeln!(out, "web ui         {web_ui}")?;
    }
    if let Some(runs) = &web_ui_runs {
        writeln!(out, "all runs       {runs}")?;
    }
    if let Some(chunks) = &summary.chunk_details {
        writeln!(
            out,
            "\n{:>6} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>4} {:>9}",
            "chunk", "bytes from", "to", "rows", "valid", "invalid", "status", "att", "ms"
        )?;
        for c in chunks {
            writeln!(
                out,
                "{:>6} {:>12} {:>12} {:>8} {:>8} {:>8} {:>9} {:>4} {:>9}",
                c.chunk_index,
                c.byte_start,
                c.byte_end,
                count(c.rows_total.or(Some(c.planned_rows))),
                count(c.rows_valid),
                count(c.rows_invalid),
                if c.status == "committed" && !c.clickhouse_written && !summary.dry_run {
                    "pg-only"
                } else {
                    c.status.as_str()
                },
                c.attempts,
                count(c.duration_ms)
            )?;
        }
    }
    Ok(())
}
