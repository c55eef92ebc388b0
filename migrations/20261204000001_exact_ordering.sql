-- Exact under every ordering, and every job ends (the chunk protocol in
-- activities/src/chunk_protocol.rs, the job's end in activities/src/job_protocol.rs).

-- The digest reconcile compares between the stores covers every stored field of a row: sku,
-- name, brand, category, description, price (millionths), currency, weight (micrograms),
-- availability, URL, images, attributes (by key, byte order), listed or delisted, and the version.
-- Each text is length-prefixed and NULL is 'N', so no two different rows share a digest text.
-- ClickHouse builds the same text from its columns (activities/src/ch.rs) and the worker from
-- the parsed record (activities/src/item_hash.rs).
CREATE FUNCTION catalog_item_digest(
    sku text, name text, brand text, category text, description text, price numeric,
    currency text, weight_grams numeric, availability text, product_url text,
    image_urls text[], attributes jsonb, delisted boolean,
    modified_at timestamptz, object_key text, etag text, row_number bigint
) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT md5(concat_ws(chr(31),
        octet_length(sku)::text || ':' || sku,
        octet_length(name)::text || ':' || name,
        coalesce(octet_length(brand)::text || ':' || brand, 'N'),
        coalesce(octet_length(category)::text || ':' || category, 'N'),
        coalesce(octet_length(description)::text || ':' || description, 'N'),
        coalesce((round(price, 6) * 1000000)::bigint::text, 'N'),
        octet_length(currency)::text || ':' || currency,
        coalesce((round(weight_grams, 6) * 1000000)::bigint::text, 'N'),
        coalesce(octet_length(availability)::text || ':' || availability, 'N'),
        octet_length(product_url)::text || ':' || product_url,
        cardinality(image_urls)::text || ':' || array_to_string(image_urls, chr(30)),
        (SELECT count(*)::text || ':' || coalesce(string_agg(
                    octet_length(k)::text || ':' || k || octet_length(v)::text || ':' || v,
                    '' ORDER BY k COLLATE "C"), '')
         FROM jsonb_each_text(attributes) AS a(k, v)),
        CASE WHEN delisted THEN 'D' ELSE 'L' END,
        (extract(epoch FROM modified_at) * 1000000)::bigint::text,
        octet_length(object_key)::text || ':' || object_key,
        octet_length(etag)::text || ':' || etag,
        row_number::text))
$$;

-- Weights are kept to the microgram (the validator rounds them now): ClickHouse stores them as
-- Float64, and the digest must read the same value in both stores.
UPDATE catalog_items SET weight_grams = round(weight_grams, 6)
WHERE weight_grams IS DISTINCT FROM round(weight_grams, 6);

UPDATE catalog_items SET digest = catalog_item_digest(sku, name, brand, category, description,
    price, currency, weight_grams, availability, product_url, image_urls, attributes,
    delisted_at IS NOT NULL, version_modified_at, version_key, version_etag, version_row);

-- The content hash is BLAKE3 now (SHA-256 before): old hashes match nothing, so each item is
-- written once more by its source's next snapshot, then left alone again.
UPDATE catalog_items SET content_hash = NULL;

-- The planner records, per chunk, the hashes of the sku fields its records mention; at the end
-- of the plan, the hashes that more than one chunk mentions are kept per chunk (shared): a sku
-- an object mentions more than once is always written, so the greatest row wins whatever order
-- the chunks commit in.
ALTER TABLE etl_chunks
    ADD COLUMN mention_hashes bigint[],
    ADD COLUMN shared_hashes bigint[],
    -- The object changed or vanished before this committed chunk's observations reached
    -- ClickHouse: they cannot be made any more (reported; the job fails source_changed).
    ADD COLUMN observations_missing boolean NOT NULL DEFAULT false;

-- What is waiting for ClickHouse, and which jobs are running: the busy check and the copies
-- read these instead of every chunk of every past job.
CREATE INDEX etl_chunks_clickhouse_pending_idx ON etl_chunks (job_id)
    WHERE status = 'committed' AND NOT clickhouse_written;
CREATE INDEX etl_jobs_running_idx ON etl_jobs (source) WHERE status = 'running';
CREATE INDEX etl_jobs_delist_pending_idx ON etl_jobs (source)
    WHERE delisted_at IS NOT NULL AND NOT delist_clickhouse_written;

-- Planning stores its chunks in batches, each in its own short transaction; the plan is
-- complete when planned_at is set. The header is stored with the first batch.
ALTER TABLE etl_jobs
    -- When the chunk ledger of this (ended) job was deleted by retention; its totals stay.
    ADD COLUMN ledger_pruned_at timestamptz;

-- The newest object version of each source that a completed (non-dry-run) job ingested, kept by
-- the completing transaction under the source's lock: "is this the newest object ingested so
-- far" costs one row, whatever the source's history.
ALTER TABLE catalog_sources
    ADD COLUMN completed_modified_at timestamptz,
    ADD COLUMN completed_key text COLLATE "C",
    ADD COLUMN completed_etag text COLLATE "C";
UPDATE catalog_sources s
SET completed_modified_at = newest.last_modified, completed_key = newest.object_key,
    completed_etag = newest.etag
FROM (SELECT DISTINCT ON (source) source, last_modified, object_key, etag
      FROM etl_jobs
      WHERE status = 'completed' AND NOT dry_run AND last_modified IS NOT NULL
      ORDER BY source, last_modified DESC, object_key COLLATE "C" DESC, etag COLLATE "C" DESC)
     AS newest
WHERE newest.source = s.source;

-- What each delisting took away, as it was: the history's `delisted` observations are made from
-- these rows (a later relisting changes the catalog row, not what was delisted).
CREATE TABLE catalog_delistings (
    job_id    uuid    NOT NULL,
    source    text    COLLATE "C" NOT NULL,
    sku       text    COLLATE "C" NOT NULL,
    price     numeric,
    currency  text    NOT NULL,
    PRIMARY KEY (job_id, sku)
);
INSERT INTO catalog_delistings (job_id, source, sku, price, currency)
SELECT delisted_by_job_id, source, sku, price, currency FROM catalog_items
WHERE delisted_by_job_id IS NOT NULL;

-- Each mode is a job of its own; the manifest remembers whether a version was ingested as a
-- full snapshot, so a source run of snapshots takes again a version ingested only as partial.
ALTER TABLE ingested_objects ADD COLUMN snapshot boolean NOT NULL DEFAULT true;
UPDATE ingested_objects m SET snapshot = NOT j.partial FROM etl_jobs j WHERE j.id = m.job_id;

-- The skus a committed chunk wrote with its job's relisting mark: a sku the object holds twice
-- is reported by both chunks, so a job counts its relisted items as distinct skus.
ALTER TABLE etl_chunks ADD COLUMN relisted_skus text[];
