//! `SourceIngest`: one run per source and tick. Lists the source's prefix page by page, skips
//! object versions already ingested (the manifest), and ingests the oldest new ones as child
//! `CatalogIngest` workflows, a few at a time; the rest is counted and left for the next run,
//! so the run's payloads and history stay bounded whatever the prefix holds. A failing object
//! fails its own job only.

use std::cell::{Cell, RefCell};

use activities::{
    EtlActivities,
    model::{
        IngestRequest, JobMode, ObjectMeta, RunningObject, SourceIngestRequest,
        SourceObjectOutcome, SourceProgress, SourceReport, ingest_workflow_id, job_id_for_workflow,
    },
    visibility::{self, RunOutcome},
};
use std::time::Duration;
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ChildWorkflowOptions, ParentClosePolicy, WorkflowContext, WorkflowContextView,
    WorkflowIdReusePolicy, WorkflowResult,
};
use temporalio_workflow::workflows::join_all;

use crate::{
    CatalogIngest, IngestInput, failed_for_good, short_activity, upsert_search_attributes,
};

#[workflow]
#[derive(Default)]
pub struct SourceIngest {
    details: String,
    progress: SourceProgress,
}

/// The child workflow of one object version: the same id `etlctl ingest` would use, so a
/// manual ingest of the same version is not duplicated.
fn child_request(request: &SourceIngestRequest, object: &ObjectMeta) -> (String, IngestRequest) {
    let workflow_id = ingest_workflow_id(
        &request.source,
        &object.bucket,
        &object.key,
        &object.etag,
        JobMode {
            dry_run: false,
            partial: request.options.partial,
            allow_mass_delist: request.options.allow_mass_delist,
        },
    );
    let ingest = IngestRequest {
        job_id: job_id_for_workflow(&workflow_id),
        source: request.source.clone(),
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        etag: object.etag.clone(),
        dry_run: false,
        supersedes: None,
        options: request.options.clone(),
    };
    (workflow_id, ingest)
}

impl SourceIngest {
    fn publish(ctx: &WorkflowContext<Self>, details: String) {
        ctx.state_mut(|state| state.details = details.clone());
        ctx.set_current_details(details);
    }
}

#[workflow_methods]
impl SourceIngest {
    #[run(name = "SourceIngest")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        request: SourceIngestRequest,
    ) -> WorkflowResult<SourceReport> {
        upsert_search_attributes(ctx, [visibility::SOURCE.value_set(request.source.clone())]);
        let max_interval = Duration::from_secs(request.options.retry_max_interval_secs.max(1));
        let deadline = Duration::from_secs(request.options.max_job_duration_secs.max(1));
        Self::publish(
            ctx,
            format!("listing s3://{}/{}", request.bucket, request.prefix),
        );
        let failure = |err| {
            upsert_search_attributes(
                ctx,
                [visibility::OUTCOME.value_set(RunOutcome::Failed.as_str().to_owned())],
            );
            failed_for_good(&err)
        };
        let listing = ctx
            .execute_activity(
                EtlActivities::list_source_objects,
                request.clone(),
                short_activity(max_interval, Some(deadline)),
            )
            .await
            .map_err(failure)?;
        let total = listing.to_ingest.len();
        ctx.state_mut(|state| {
            state.progress.objects_total = total as u32;
            state.progress.bytes_total = listing.to_ingest.iter().map(|o| o.size).sum();
        });
        Self::publish(
            ctx,
            format!(
                "**ingesting** {total} new objects ({} already ingested, {} failed earlier, {} \
                 left for the next run)",
                listing.skipped, listing.failed_earlier, listing.remaining
            ),
        );

        // Children in listing order (oldest first), `max_parallel_objects` at a time. A child's
        // failure is its job's outcome, read back from the job row below; it never stops the
        // siblings. Cancelling this run cancels the children (they stop between chunks).
        let next = Cell::new(0usize);
        let finished = Cell::new(0usize);
        let start_errors: RefCell<Vec<Option<String>>> = RefCell::new(vec![None; total]);
        let shared: &WorkflowContext<Self> = ctx;
        let lane = |_| async {
            loop {
                let index = next.get();
                if index >= total || shared.cancellation_token().is_cancelled() {
                    return;
                }
                next.set(index + 1);
                let object = &listing.to_ingest[index];
                let (workflow_id, ingest) = child_request(&request, object);
                shared.state_mut(|state| {
                    state.progress.running.push(RunningObject {
                        workflow_id: workflow_id.clone(),
                        size: object.size,
                    })
                });
                let options = ChildWorkflowOptions::builder()
                    .workflow_id(workflow_id.clone())
                    .parent_close_policy(ParentClosePolicy::RequestCancel)
                    .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
                    .static_summary(visibility::ingest_summary(&ingest, object.size))
                    .static_details(visibility::ingest_details(&ingest, object.size))
                    .search_attributes(visibility::ingest_start_attributes(&ingest))
                    .build();
                let input = IngestInput {
                    request: ingest,
                    resume: None,
                };
                match shared
                    .start_child_workflow(CatalogIngest::run, input, options)
                    .await
                {
                    // The outcome is on the job row; the child's own error is there too.
                    Ok(child) => {
                        if let Ok(result) = child.result().await {
                            shared.state_mut(|state| {
                                let progress = &mut state.progress;
                                if let Some(totals) = result.totals {
                                    progress.chunks_done += u64::from(result.chunks);
                                    progress.rows_done += totals.rows_total;
                                    progress.rows_invalid += totals.rows_invalid;
                                }
                            });
                        }
                    }
                    // Typically: the same object version is being ingested by another run
                    // (a manual `etlctl ingest`): its job row reports it.
                    Err(err) => {
                        start_errors.borrow_mut()[index] = Some(err.to_string());
                    }
                }
                finished.set(finished.get() + 1);
                shared.state_mut(|state| {
                    let progress = &mut state.progress;
                    progress.running.retain(|r| r.workflow_id != workflow_id);
                    progress.objects_done += 1;
                    progress.bytes_done += object.size;
                });
                Self::publish(
                    shared,
                    format!("**ingesting**: {} of {total} objects done", finished.get()),
                );
            }
        };
        join_all((0..request.max_parallel_objects.max(1)).map(lane)).await;

        let job_ids: Vec<String> = listing
            .to_ingest
            .iter()
            .map(|object| child_request(&request, object).1.job_id)
            .collect();
        let statuses = ctx
            .execute_activity(
                EtlActivities::job_outcomes,
                job_ids,
                short_activity(max_interval, Some(deadline)),
            )
            .await
            .map_err(failure)?;
        let start_errors = start_errors.into_inner();
        let objects: Vec<SourceObjectOutcome> = listing
            .to_ingest
            .iter()
            .zip(statuses)
            .zip(start_errors)
            .map(|((object, status), start_error)| SourceObjectOutcome {
                key: object.key.clone(),
                etag: object.etag.clone(),
                last_modified: object.last_modified.clone(),
                job_id: status.job_id,
                status: status.status,
                error: status.error.or(start_error),
            })
            .collect();
        let count = |status: &str| objects.iter().filter(|o| o.status == status).count() as u32;
        let (completed, failed) = (count("completed"), count("failed") + count("cancelled"));
        let report = SourceReport {
            source: request.source.clone(),
            bucket: request.bucket.clone(),
            prefix: request.prefix.clone(),
            started: total as u32,
            completed,
            failed,
            skipped: listing.skipped,
            failed_earlier: listing.failed_earlier,
            remaining: listing.remaining,
            listed: listing.listed,
            objects,
        };
        upsert_search_attributes(
            ctx,
            [visibility::OUTCOME.value_set(RunOutcome::Completed.as_str().to_owned())],
        );
        Self::publish(
            ctx,
            format!(
                "**done**: {completed} completed, {failed} failed, {} skipped, {} left",
                listing.skipped, listing.remaining
            ),
        );
        Ok(report)
    }

    #[query]
    pub fn details(&self, _ctx: &WorkflowContextView) -> String {
        self.details.clone()
    }

    #[query]
    pub fn progress(&self, _ctx: &WorkflowContextView) -> SourceProgress {
        self.progress.clone()
    }
}
