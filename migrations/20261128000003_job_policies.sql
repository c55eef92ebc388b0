-- The rest of a job's options, so that `etlctl retry` and `repair` run the new job under the
-- same policies as the old one (deadline, retry backoff, heartbeat, history budget). Jobs from
-- before have NULL here and are re-run with the defaults.
ALTER TABLE etl_jobs
    ADD COLUMN heartbeat_timeout_secs bigint,
    ADD COLUMN history_event_budget integer,
    ADD COLUMN retry_max_interval_secs bigint,
    ADD COLUMN max_job_duration_secs bigint;
