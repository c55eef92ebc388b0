-- One row per valid record per job: the price and availability history. The sort key holds the
-- record's identity (job, row), so a replayed chunk's rows collapse under FINAL.
CREATE TABLE IF NOT EXISTS catalog_item_observations (
    source       String,
    sku          String,
    job_id       String,
    row_number   UInt64,
    observed_at  DateTime,
    price        Nullable(Decimal(18, 6)),
    currency     String,
    availability Nullable(String),
    in_stock     UInt8
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(observed_at)
ORDER BY (source, sku, job_id, row_number)
