//! Waiting for a workflow, and the progress bar `--wait` draws on a terminal meanwhile.
//!
//! The bar reads the workflow's `progress` query once a second (a source run also asks its
//! running objects); it goes to stderr and only to a terminal, so `--json` output and piped
//! or logged runs carry nothing extra.

use std::{
    io::{IsTerminal, Write},
    time::{Duration, Instant},
};

use activities::{
    config::Config,
    model::{Progress, SourceProgress},
    temporal::Patience,
};
use temporalio_client::{Client, UntypedWorkflow, WorkflowGetResultOptions, WorkflowQueryOptions};
use workflows::{CatalogIngest, SourceIngest};

/// What `--wait` shows while it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Quiet,
    /// One object: chunks and rows of a `CatalogIngest`.
    Ingest,
    /// A source run: objects, and the chunks and rows of its running objects.
    Source,
}

impl Watch {
    /// The bar is drawn only on a terminal, and never with `--json`.
    pub fn progress(self, json: bool) -> Self {
        if json || !std::io::stderr().is_terminal() {
            Watch::Quiet
        } else {
            self
        }
    }
}

/// Follows a workflow to its end. Losing Temporal (a restart, a network cut) is not an
/// outcome: the wait reconnects and goes on, for as long as it takes.
pub async fn wait_for_workflow(config: &Config, workflow_id: &str, watch: Watch) {
    let bar = (watch != Watch::Quiet).then(|| {
        let config = config.clone();
        let workflow_id = workflow_id.to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task =
            tokio::spawn(async move { draw_progress(&config, &workflow_id, watch, stopped).await });
        (stop, task)
    });
    let mut warned = false;
    loop {
        let waited = async {
            let client = activities::temporal::connect(config, "etlctl", Patience::Command).await?;
            let handle = client.get_workflow_handle::<UntypedWorkflow>(workflow_id.to_owned());
            match handle.get_result(WorkflowGetResultOptions::default()).await {
                Ok(_) => Ok(()),
                // Failed, cancelled, terminated: the job row says what happened.
                Err(err) if err.is_workflow_outcome() => Ok(()),
                Err(err) => Err(anyhow::Error::from(err)),
            }
        };
        match waited.await {
            Ok(()) => break,
            Err(err) => {
                if !warned {
                    eprintln!(
                        "etlctl: lost Temporal while waiting for {workflow_id} ({}); \
                         reconnecting until it answers",
                        activities::error::error_chain(err.as_ref())
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    if let Some((stop, task)) = bar {
        let _ = stop.send(());
        let _ = task.await;
        // The final state stays on screen; the summary follows on the next line.
        eprintln!();
    }
}

/// Progress as the bar draws it, from either kind of workflow.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub phase: String,
    /// Done, from 0 to 1.
    pub fraction: f64,
    /// What the fraction counts, e.g. `21/40 chunks`.
    pub counts: String,
    pub rows_done: u64,
    pub rows_invalid: u64,
}

impl Snapshot {
    pub fn of_ingest(progress: &Progress) -> Self {
        let fraction = if progress.chunks_total == 0 {
            0.0
        } else {
            f64::from(progress.chunks_done) / f64::from(progress.chunks_total)
        };
        let counts = if progress.chunks_total == 0 {
            String::new()
        } else {
            format!("{}/{} chunks", progress.chunks_done, progress.chunks_total)
        };
        Self {
            phase: progress.phase.clone(),
            fraction,
            counts,
            rows_done: progress.rows_done,
            rows_invalid: progress.rows_invalid,
        }
    }

    /// A source run weighs its objects by size: a running object counts with the share of its
    /// chunks done.
    pub fn of_source(progress: &SourceProgress, running: &[(u64, Progress)]) -> Self {
        let mut bytes = progress.bytes_done as f64;
        let (mut chunks, mut rows, mut invalid) = (
            progress.chunks_done,
            progress.rows_done,
            progress.rows_invalid,
        );
        for (size, child) in running {
            if child.chunks_total > 0 {
                bytes +=
                    *size as f64 * f64::from(child.chunks_done) / f64::from(child.chunks_total);
            }
            chunks += u64::from(child.chunks_done);
            rows += child.rows_done;
            invalid += child.rows_invalid;
        }
        let fraction = if progress.bytes_total == 0 {
            if progress.objects_total == 0 {
                0.0
            } else {
                1.0
            }
        } else {
            bytes / progress.bytes_total as f64
        };
        let phase = if progress.objects_total == 0 && progress.objects_done == 0 {
            "listing"
        } else {
            "ingesting"
        };
        Self {
            phase: phase.to_owned(),
            fraction: fraction.min(1.0),
            counts: format!(
                "{}/{} objects, {chunks} chunks",
                progress.objects_done, progress.objects_total
            ),
            rows_done: rows,
            rows_invalid: invalid,
        }
    }
}

/// Rates measured from the first snapshot this watcher saw, so attaching to a half-done job
/// does not inflate rows/s or shrink the ETA.
#[derive(Debug, Clone)]
pub struct Rates {
    first: Option<(Instant, f64, u64)>,
}

impl Rates {
    pub fn new() -> Self {
        Self { first: None }
    }

    /// rows/s and the seconds left, once there is something to measure.
    pub fn update(&mut self, now: Instant, snapshot: &Snapshot) -> (Option<f64>, Option<f64>) {
        let (since, fraction0, rows0) =
            *self
                .first
                .get_or_insert((now, snapshot.fraction, snapshot.rows_done));
        let elapsed = now.duration_since(since).as_secs_f64();
        if elapsed < 1.0 {
            return (None, None);
        }
        let rows_per_sec = snapshot.rows_done.saturating_sub(rows0) as f64 / elapsed;
        let progressed = snapshot.fraction - fraction0;
        let eta = (progressed > 0.0 && snapshot.fraction < 1.0)
            .then(|| elapsed * (1.0 - snapshot.fraction) / progressed);
        (Some(rows_per_sec), eta)
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.1}M", per_sec / 1e6)
    } else if per_sec >= 1e3 {
        format!("{:.1}k", per_sec / 1e3)
    } else {
        format!("{per_sec:.0}")
    }
}

fn clock(secs: f64) -> String {
    let secs = secs.round() as u64;
    if secs >= 3600 {
        format!("{}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    } else {
        format!("{}:{:02}", secs / 60, secs % 60)
    }
}

/// One line of at most `width` columns: phase, bar and percent, then counts, rows, rows/s,
/// ETA and invalid rows, as many as fit.
pub fn render(
    snapshot: &Snapshot,
    rows_per_sec: Option<f64>,
    eta_secs: Option<f64>,
    width: usize,
) -> String {
    const BAR: usize = 20;
    let filled = ((snapshot.fraction.clamp(0.0, 1.0) * BAR as f64).round() as usize).min(BAR);
    // (part, rank): a wrapped line cannot be redrawn in place, so the parts ranked last go
    // first until the line fits.
    let mut parts: Vec<(String, u8)> = vec![(
        format!(
            "{} \x1b[36m{}\x1b[2m{}\x1b[0m {:>5.1}%",
            snapshot.phase,
            "█".repeat(filled),
            "░".repeat(BAR - filled),
            snapshot.fraction * 100.0
        ),
        0,
    )];
    if !snapshot.counts.is_empty() {
        parts.push((snapshot.counts.clone(), 3));
    }
    parts.push((format!("{} rows", thousands(snapshot.rows_done)), 1));
    if let Some(per_sec) = rows_per_sec {
        parts.push((format!("{} rows/s", rate(per_sec)), 4));
    }
    if let Some(eta) = eta_secs {
        parts.push((format!("ETA {}", clock(eta)), 2));
    }
    if snapshot.rows_invalid > 0 {
        parts.push((
            format!(
                "\x1b[33m{} invalid\x1b[0m",
                thousands(snapshot.rows_invalid)
            ),
            5,
        ));
    }
    let join = |parts: &[(String, u8)]| {
        parts
            .iter()
            .map(|(text, _)| text.as_str())
            .collect::<Vec<_>>()
            .join("  ")
    };
    while parts.len() > 1 && visible_width(&join(&parts)) > width {
        let last = parts
            .iter()
            .enumerate()
            .max_by_key(|(_, (_, rank))| *rank)
            .map(|(index, _)| index)
            .unwrap_or(0);
        parts.remove(last);
    }
    join(&parts)
}

fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut in_escape = false;
    for c in text.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, _) => width += 1,
        }
    }
    width
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the `winsize` it is given and reads nothing else.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col) - 1
    } else {
        79
    }
}

async fn snapshot(client: &Client, workflow_id: &str, watch: Watch) -> Option<Snapshot> {
    let options = WorkflowQueryOptions::default;
    match watch {
        Watch::Quiet => None,
        Watch::Ingest => client
            .get_workflow_handle::<CatalogIngest>(workflow_id.to_owned())
            .query(CatalogIngest::progress, (), options())
            .await
            .ok()
            .map(|progress| Snapshot::of_ingest(&progress)),
        Watch::Source => {
            let progress = client
                .get_workflow_handle::<SourceIngest>(workflow_id.to_owned())
                .query(SourceIngest::progress, (), options())
                .await
                .ok()?;
            let mut running = Vec::with_capacity(progress.running.len());
            for object in &progress.running {
                // A child not started yet (or just finished) has no progress to add.
                if let Ok(child) = client
                    .get_workflow_handle::<CatalogIngest>(object.workflow_id.clone())
                    .query(CatalogIngest::progress, (), options())
                    .await
                {
                    running.push((object.size, child));
                }
            }
            Some(Snapshot::of_source(&progress, &running))
        }
    }
}

/// Redraws the line every second until `stop`, then once more with the final state.
async fn draw_progress(
    config: &Config,
    workflow_id: &str,
    watch: Watch,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut rates = Rates::new();
    let mut client = None;
    loop {
        let last = tokio::select! {
            _ = &mut stop => true,
            _ = tokio::time::sleep(Duration::from_secs(1)) => false,
        };
        if client.is_none() {
            client = activities::temporal::connect(config, "etlctl", Patience::Command)
                .await
                .ok();
        }
        if let Some(connected) = &client {
            // No answer (no worker yet, Temporal restarting) keeps the last line on screen.
            let answer = tokio::time::timeout(
                Duration::from_secs(5),
                snapshot(connected, workflow_id, watch),
            );
            if let Ok(Some(snapshot)) = answer.await {
                let (per_sec, eta) = rates.update(Instant::now(), &snapshot);
                let line = render(&snapshot, per_sec, eta, terminal_width());
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(chunks_done: u32, chunks_total: u32, rows: u64) -> Progress {
        Progress {
            phase: "ingesting".to_owned(),
            chunks_done,
            chunks_total,
            rows_done: rows,
            rows_valid: rows - rows / 10,
            rows_invalid: rows / 10,
        }
    }

    #[test]
    fn the_line_shows_bar_counts_rows_rate_and_eta() {
        let snapshot = Snapshot::of_ingest(&progress(21, 40, 1_050_000));
        let line = render(&snapshot, Some(48_200.0), Some(22.4), 200);
        assert_eq!(
            visible_width(&line),
            line_without_escapes(&line).chars().count()
        );
        let plain = line_without_escapes(&line);
        assert_eq!(
            plain,
            "ingesting ███████████░░░░░░░░░  52.5%  21/40 chunks  1,050,000 rows  48.2k rows/s  \
             ETA 0:22  105,000 invalid"
        );
    }

    #[test]
    fn a_narrow_terminal_drops_the_least_useful_parts_first() {
        let snapshot = Snapshot::of_ingest(&progress(1, 4, 100));
        let line = line_without_escapes(&render(&snapshot, Some(10.0), Some(3700.0), 60));
        assert_eq!(
            line,
            "ingesting █████░░░░░░░░░░░░░░░  25.0%  100 rows  ETA 1:01:40"
        );
        let wide = line_without_escapes(&render(&snapshot, None, Some(3700.0), 500));
        assert!(
            wide.ends_with("1/4 chunks  100 rows  ETA 1:01:40  10 invalid"),
            "{wide}"
        );
    }

    #[test]
    fn rates_start_from_what_the_watcher_first_saw() {
        let mut rates = Rates::new();
        let start = Instant::now();
        let half = Snapshot::of_ingest(&progress(20, 40, 1_000));
        assert_eq!(rates.update(start, &half), (None, None));
        let later = Snapshot::of_ingest(&progress(30, 40, 1_500));
        let (per_sec, eta) = rates.update(start + Duration::from_secs(10), &later);
        assert_eq!(per_sec, Some(50.0));
        assert_eq!(eta.map(|s| s.round()), Some(10.0));
    }

    #[test]
    fn a_source_run_weighs_running_objects_by_their_chunks() {
        let source = SourceProgress {
            objects_total: 3,
            objects_done: 1,
            bytes_total: 400,
            bytes_done: 100,
            chunks_done: 2,
            rows_done: 50,
            rows_invalid: 1,
            running: Vec::new(),
        };
        let snapshot = Snapshot::of_source(&source, &[(200, progress(1, 2, 20))]);
        assert_eq!(snapshot.fraction, 0.5);
        assert_eq!(snapshot.counts, "1/3 objects, 3 chunks");
        assert_eq!((snapshot.rows_done, snapshot.rows_invalid), (70, 3));
    }

    #[test]
    fn big_numbers_get_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(12_345_678), "12,345,678");
    }

    fn line_without_escapes(line: &str) -> String {
        let mut out = String::new();
        let mut in_escape = false;
        for c in line.chars() {
            match (in_escape, c) {
                (false, '\x1b') => in_escape = true,
                (true, 'm') => in_escape = false,
                (true, _) => {}
                (false, c) => out.push(c),
            }
        }
        out
    }
}
