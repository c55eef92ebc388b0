-- Operations: supersession links for retry/repair, verification by `etlctl reconcile`, and the
-- manifest of object versions ingested successfully per source.

ALTER TABLE etl_jobs
    ADD COLUMN supersedes_job_id    uuid REFERENCES etl_jobs (id),
    ADD COLUMN superseded_by_job_id uuid REFERENCES etl_jobs (id),
    ADD COLUMN superseded_at        timestamptz,
    ADD COLUMN verified_at          timestamptz,
    ADD COLUMN verification         jsonb,
    ADD COLUMN verified_ok          boolean;
CREATE INDEX etl_jobs_created_idx ON etl_jobs (created_at DESC);
CREATE INDEX etl_jobs_status_created_idx ON etl_jobs (status, created_at DESC);

-- One row per (source, object version) ingested successfully. Written in the transaction that
-- marks the job completed, so "in the manifest" and "completed" can never disagree.
CREATE TABLE ingested_objects (
    source       text        NOT NULL,
    bucket       text        NOT NULL,
    object_key   text        NOT NULL,
    etag         text        NOT NULL,
    job_id       uuid        NOT NULL REFERENCES etl_jobs (id),
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, bucket, object_key, etag)
);

INSERT INTO ingested_objects (source, bucket, object_key, etag, job_id, ingested_at)
SELECT DISTINCT ON (source, bucket, object_key, etag)
       source, bucket, object_key, etag, id, coalesce(finished_at, now())
FROM etl_jobs
WHERE status = 'completed' AND NOT dry_run
ORDER BY source, bucket, object_key, etag, finished_at DESC;
