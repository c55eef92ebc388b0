-- The current catalog, a copy of Postgres' catalog_items. Every Postgres write of an item
-- (insert, change, delisting, relisting) takes the next `revision`, and its copy here carries
-- it: ReplacingMergeTree keeps the highest revision per (source, sku), so the copy converges on
-- Postgres' row whatever order the inserts land in; a delisted item's copy has is_deleted = 1
-- and `FINAL` leaves it out. Read with FINAL (never wait for a merge).
CREATE TABLE IF NOT EXISTS catalog_items (
    source             LowCardinality(String),
    sku                String,
    name               String,
    brand              Nullable(String),
    category           Nullable(String),
    description        Nullable(String),
    price              Nullable(Decimal(18, 6)),
    currency           LowCardinality(String),
    weight_grams       Nullable(Float64),
    availability       LowCardinality(Nullable(String)),
    product_url        String,
    image_urls         Array(String),
    attributes         String,
    -- The item's version: the object it was last written from, and the row.
    object_key         String,
    object_etag        String,
    object_modified_at DateTime64(6, 'UTC'),
    row_number         UInt64,
    job_id             UUID,
    -- md5 of the fields reconcile compares (Postgres' catalog_digest()).
    digest             String,
    revision           UInt64,
    is_deleted         UInt8,
    delisted_at        Nullable(DateTime64(6, 'UTC'))
) ENGINE = ReplacingMergeTree(revision, is_deleted)
ORDER BY (source, sku)
-- A block inserted twice (a retried or zombie attempt copying the same rows) is dropped.
SETTINGS non_replicated_deduplication_window = 10000
