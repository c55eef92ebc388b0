-- Exactly once per object version, newer object wins across jobs, snapshots and delisting.

-- Jobs: the options the workflow runs with, and what it found.
ALTER TABLE etl_jobs
    ADD COLUMN max_record_bytes     bigint      NOT NULL DEFAULT 1048576,
    ADD COLUMN partial              boolean     NOT NULL DEFAULT false,
    ADD COLUMN allow_mass_delist    boolean     NOT NULL DEFAULT false,
    ADD COLUMN deadline_at          timestamptz,
    -- The failure's type name (`record_too_large`, `source_changed`, ...), as in Temporal.
    ADD COLUMN error_type           text,
    -- Set false by the workflow before it ends the job: a chunk attempt that outlived its
    -- lease can no longer commit anything.
    ADD COLUMN accepting_commits    boolean     NOT NULL DEFAULT true,
    ADD COLUMN items_delisted       bigint,
    ADD COLUMN items_relisted       bigint,
    -- {"would_delist": n, "listed": m}: the mass-delist guard refused this job's delisting.
    ADD COLUMN delist_refused       jsonb,
    -- When the delisting step committed (null: not run yet, or the job does not delist).
    ADD COLUMN delisted_at          timestamptz,
    ADD COLUMN delist_clickhouse_written boolean NOT NULL DEFAULT false,
    -- Invalid-row logs of this job deleted by retention (reconcile counts them as pruned).
    ADD COLUMN invalid_rows_pruned  bigint      NOT NULL DEFAULT 0;

-- The newest full snapshot of each source that has started writing the current catalog. An
-- object older than it writes history, invalid rows and its ledger, never the catalog: the
-- newer snapshot already decided every item (written, confirmed unchanged, or delisted). The
-- row exists (snapshot null) from a source's first job on, so every chunk transaction can lock
-- it FOR SHARE and a snapshot's registration (FOR UPDATE) waits for chunks in flight.
CREATE TABLE catalog_sources (
    source                text COLLATE "C" PRIMARY KEY,
    snapshot_modified_at  timestamptz,
    snapshot_key          text COLLATE "C",
    snapshot_etag         text COLLATE "C",
    snapshot_job_id       uuid REFERENCES etl_jobs (id),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- Every write of a catalog row takes the next revision: ClickHouse's copy of the row carries
-- it, so ReplacingMergeTree keeps the same row Postgres keeps whatever order copies land in.
CREATE SEQUENCE catalog_revision;

-- Versions order objects by Last-Modified at full precision, then key, then ETag, then row.
ALTER TABLE catalog_items
    ADD COLUMN version_key         text COLLATE "C" NOT NULL DEFAULT '',
    ADD COLUMN version_etag        text COLLATE "C" NOT NULL DEFAULT '',
    -- Hash of every catalog field: a snapshot leaves an unchanged item's row untouched.
    ADD COLUMN content_hash        bytea,
    -- md5 of the fields reconcile compares between the stores (see catalog_digest()).
    ADD COLUMN digest              text,
    ADD COLUMN revision            bigint NOT NULL DEFAULT nextval('catalog_revision'),
    ADD COLUMN delisted_at         timestamptz,
    ADD COLUMN delisted_by_job_id  uuid REFERENCES etl_jobs (id),
    -- The job whose write listed this item again after a delisting (null otherwise).
    ADD COLUMN relisted_by_job_id  uuid REFERENCES etl_jobs (id);

-- The text reconcile digests per item, in Postgres and ClickHouse alike: sku, price in
-- millionths, currency, availability and the item's version.
CREATE FUNCTION catalog_digest(
    sku text, price numeric, currency text, availability text,
    modified_at timestamptz, object_key text, etag text, row_number bigint
) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT md5(sku || chr(31) || coalesce((round(price, 6) * 1000000)::bigint::text, '')
               || chr(31) || currency || chr(31) || coalesce(availability, '')
               || chr(31) || (extract(epoch FROM modified_at) * 1000000)::bigint::text
               || chr(31) || object_key || chr(31) || etag || chr(31) || row_number::text)
$$;

UPDATE catalog_items SET digest = catalog_digest(sku, price, currency, availability,
    version_modified_at, version_key, version_etag, version_row);

-- Provenance moves into the chunk ledger: per committed chunk, the distinct valid skus, the
-- skus of its invalid rows (they still mention their item, so it is not delisted) and the
-- skus whose catalog row the chunk wrote (what ClickHouse must copy).
ALTER TABLE etl_chunks
    ADD COLUMN skus            text[],
    ADD COLUMN invalid_skus    text[],
    ADD COLUMN written_skus    text[],
    ADD COLUMN items_relisted  integer;
DROP TABLE catalog_item_jobs;
