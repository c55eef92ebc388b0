-- The ingest spine: jobs, the chunk ledger, the catalog and its provenance, invalid rows.

CREATE TABLE etl_jobs (
    id                uuid PRIMARY KEY,
    workflow_id       text        NOT NULL,
    source            text        NOT NULL,
    bucket            text        NOT NULL,
    object_key        text        NOT NULL,
    -- The object version the job ingests (requested, then confirmed by HEAD).
    etag              text        NOT NULL,
    size              bigint,
    last_modified     timestamptz,
    status            text        NOT NULL DEFAULT 'running'
                      CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
    dry_run           boolean     NOT NULL DEFAULT false,
    chunk_bytes       bigint      NOT NULL,
    -- Raw header record: every chunk maps its fields with it.
    header_raw        bytea,
    chunks            integer,
    source_rows       bigint,
    rows_total        bigint,
    rows_valid        bigint,
    rows_invalid      bigint,
    items             bigint,
    reconciliation    jsonb,
    reconciled_ok     boolean,
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    planned_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX etl_jobs_source_created_idx ON etl_jobs (source, created_at DESC);
CREATE INDEX etl_jobs_object_idx ON etl_jobs (bucket, object_key, etag);

-- The chunk ledger. A chunk's effects in Postgres commit in the same transaction that sets
-- status = 'committed', so a retried chunk that finds it committed skips Postgres entirely.
CREATE TABLE etl_chunks (
    job_id              uuid        NOT NULL REFERENCES etl_jobs (id) ON DELETE CASCADE,
    chunk_index         integer     NOT NULL,
    byte_start          bigint      NOT NULL,
    byte_end            bigint      NOT NULL,
    first_row           bigint      NOT NULL,
    planned_rows        bigint      NOT NULL,
    status              text        NOT NULL DEFAULT 'planned'
                        CHECK (status IN ('planned', 'committed')),
    rows_total          bigint,
    rows_valid          bigint,
    rows_invalid        bigint,
    clickhouse_written  boolean     NOT NULL DEFAULT false,
    attempts            integer     NOT NULL DEFAULT 0,
    first_started_at    timestamptz,
    last_started_at     timestamptz,
    committed_at        timestamptz,
    clickhouse_written_at timestamptz,
    PRIMARY KEY (job_id, chunk_index),
    CHECK (byte_end >= byte_start)
);

-- Current state of each item. The version (object time, row number) only moves forward, so the
-- later row of an object and the newer object win whatever order chunks and jobs run in.
CREATE TABLE catalog_items (
    source               text        NOT NULL,
    sku                  text        NOT NULL,
    name                 text        NOT NULL,
    brand                text,
    category             text,
    description          text,
    price                numeric,
    currency             text        NOT NULL,
    weight_grams         numeric,
    availability         text
                         CHECK (availability IN ('in_stock', 'out_of_stock', 'preorder',
                                                 'discontinued', 'unknown')),
    product_url          text        NOT NULL,
    image_urls           text[]      NOT NULL DEFAULT '{}',
    attributes           jsonb       NOT NULL DEFAULT '{}',
    version_modified_at  timestamptz NOT NULL,
    version_row          bigint      NOT NULL,
    first_job_id         uuid        NOT NULL REFERENCES etl_jobs (id),
    last_job_id          uuid        NOT NULL REFERENCES etl_jobs (id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, sku)
);

-- Provenance: which jobs saw which item (one row per item and job).
CREATE TABLE catalog_item_jobs (
    job_id       uuid    NOT NULL REFERENCES etl_jobs (id) ON DELETE CASCADE,
    source       text    NOT NULL,
    sku          text    NOT NULL,
    -- The winning (greatest) row number of the sku in the job's object.
    row_number   bigint  NOT NULL,
    chunk_index  integer NOT NULL,
    PRIMARY KEY (job_id, source, sku)
);
CREATE INDEX catalog_item_jobs_item_idx ON catalog_item_jobs (source, sku);

CREATE TABLE invalid_item_logs (
    id           bigserial   PRIMARY KEY,
    job_id       uuid        NOT NULL REFERENCES etl_jobs (id) ON DELETE CASCADE,
    chunk_index  integer     NOT NULL,
    row_number   bigint      NOT NULL,
    -- [{"field": ..., "code": ..., "message": ...}, ...]
    errors       jsonb       NOT NULL,
    -- The raw record, truncated to 8 KiB.
    raw_record   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, row_number)
);
CREATE INDEX invalid_item_logs_created_idx ON invalid_item_logs (created_at);
