-- Price and availability history: one observation per (source, object version, row), whatever
-- number of jobs ingest that version. The sort key starts with what reconcile filters on
-- (source, object time, object version), so its cost does not grow with other history; a
-- bloom filter serves lookups of one sku's history. A chunk's insert carries a deduplication
-- token made of the object version and the chunk's byte range, so a replayed or zombie insert
-- is dropped by ClickHouse itself; rows that another job of the same version wrote collapse
-- under FINAL. A delisting adds one observation per delisted item with row_number 0 and
-- availability 'delisted'.
CREATE TABLE IF NOT EXISTS catalog_item_observations (
    source          LowCardinality(String),
    observed_at     DateTime64(6, 'UTC'),
    object_version  UUID,
    row_number      UInt64,
    sku             String,
    object_key      String,
    price           Nullable(Decimal(18, 6)),
    currency        LowCardinality(String),
    availability    LowCardinality(String),
    in_stock        UInt8,
    INDEX sku_bloom sku TYPE bloom_filter GRANULARITY 4
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(observed_at)
ORDER BY (source, observed_at, object_version, row_number, sku)
SETTINGS non_replicated_deduplication_window = 10000
