//! `Retention`: deletes invalid-row logs older than N days in bounded batches, never with one
//! unbounded DELETE, and at most `max_rows` per run; then, when asked, the chunk ledgers of
//! jobs that ended long ago, a bounded number of jobs per batch and per run.

use std::time::Duration;

use activities::{
    EtlActivities,
    model::{
        DEFAULT_RETRY_MAX_INTERVAL_SECS, LEDGER_BATCHES_PER_RUN, LEDGER_JOBS_PER_BATCH,
        LedgerBatch, RetentionBatch, RetentionReport, RetentionRequest,
    },
};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{ActivityOptions, WorkflowContext, WorkflowResult};

use crate::{failed_for_good, short_activity};

/// A batch that cannot be deleted within this time (Postgres down for longer) fails the run;
/// the next scheduled run starts over.
const BATCH_WITHIN: Duration = Duration::from_secs(3600);

/// Every batch, of invalid rows or of ledgers, retries like a short activity until
/// [`BATCH_WITHIN`].
fn batch_options() -> ActivityOptions {
    short_activity(
        Duration::from_secs(DEFAULT_RETRY_MAX_INTERVAL_SECS),
        Some(BATCH_WITHIN),
    )
}

#[workflow]
#[derive(Default)]
pub struct Retention;

#[workflow_methods]
impl Retention {
    #[run(name = "Retention")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        request: RetentionRequest,
    ) -> WorkflowResult<RetentionReport> {
        let batch_size = u64::from(request.batch_size.max(1));
        let mut report = RetentionReport {
            days: request.days,
            cutoff: String::new(),
            deleted: 0,
            batches: 0,
            capped: false,
            ledgers_pruned: 0,
            ledger_rows_deleted: 0,
        };
        loop {
            let room = request.max_rows - report.deleted;
            if room == 0 {
                report.capped = true;
                break;
            }
            let limit = batch_size.min(room);
            let batch = RetentionBatch {
                days: request.days,
                cutoff: (!report.cutoff.is_empty()).then(|| report.cutoff.clone()),
                limit: limit as u32,
            };
            let result = ctx
                .execute_activity(
                    EtlActivities::delete_expired_invalid_rows,
                    batch,
                    batch_options(),
                )
                .await
                .map_err(|err| failed_for_good(&err))?;
            report.cutoff = result.cutoff;
            report.deleted += result.deleted;
            report.batches += 1;
            ctx.set_current_details(format!(
                "**deleting** invalid rows older than {}: {} deleted in {} batches",
                report.cutoff, report.deleted, report.batches
            ));
            if result.deleted < limit {
                break;
            }
        }
        if let Some(days) = request.ledger_days {
            let mut cutoff = None;
            for _ in 0..LEDGER_BATCHES_PER_RUN {
                let batch = LedgerBatch {
                    days,
                    cutoff: cutoff.clone(),
                    jobs: LEDGER_JOBS_PER_BATCH,
                };
                let result = ctx
                    .execute_activity(EtlActivities::prune_chunk_ledgers, batch, batch_options())
                    .await
                    .map_err(|err| failed_for_good(&err))?;
                cutoff = Some(result.cutoff);
                report.ledgers_pruned += result.jobs;
                report.ledger_rows_deleted += result.rows;
                ctx.set_current_details(format!(
                    "**pruning** chunk ledgers of jobs ended more than {days} days ago: {} jobs",
                    report.ledgers_pruned
                ));
                if result.jobs < u64::from(LEDGER_JOBS_PER_BATCH) {
                    break;
                }
            }
        }
        Ok(report)
    }
}
