-- Current state of each item. ReplacingMergeTree keeps the row with the greatest version per
-- (source, sku); version = (object Last-Modified epoch seconds << 32) | row number, so the newer
-- object and, within one object, the later row win; replays write identical rows. Read with FINAL.
CREATE TABLE IF NOT EXISTS catalog_items (
    source             String,
    sku                String,
    name               String,
    brand              Nullable(String),
    category           Nullable(String),
    description        Nullable(String),
    price              Nullable(Decimal(18, 6)),
    currency           String,
    weight_grams       Nullable(Float64),
    availability       Nullable(String),
    product_url        String,
    image_urls         Array(String),
    attributes         String,
    source_modified_at DateTime,
    row_number         UInt64,
    job_id             String,
    version            UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (source, sku)
