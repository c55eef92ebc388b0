//! ClickHouse, the analytics copy: the current catalog (a replica of Postgres' rows, ordered by
//! their revision) and the history of observations (one per object version and row).
//!
//! Writes are exact even when repeated: observation blocks carry a deduplication token made of
//! the object version and the chunk's byte range (a replay or a zombie attempt's insert is
//! dropped by the server), and a repeated catalog block is identical and dropped by its hash.

use chrono::{DateTime, Utc};
use clickhouse::Client;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;
use std::{collections::HashSet, ops::RangeInclusive, time::Duration};

use crate::{
    chunk::{ParsedChunk, ValidRow},
    config::Config,
    contract::Availability,
    error::EtlError,
    item_hash::micros,
    model::CatalogSide,
    native::{Kind, NativeBlock, NativeRow, RowWriter},
    pg::{CatalogItemRow, DelistedItem, ObjectVersion},
};

/// Versioned DDL, applied once each and recorded in `schema_migrations`.
fn migrations() -> [(&'static str, String); 3] {
    [
        (
            "0001_catalog_items",
            include_str!("../../migrations/clickhouse/0001_catalog_items.sql").to_owned(),
        ),
        (
            "0002_catalog_item_observations",
            include_str!("../../migrations/clickhouse/0002_catalog_item_observations.sql")
                .to_owned(),
        ),
        // The digest covers every stored field now (Postgres' migration
        // 20261204000001_exact_ordering recomputes its side); the expression lives here, once.
        (
            "0003_catalog_item_digest_all_fields",
            format!(
                "ALTER TABLE catalog_items UPDATE digest = {} WHERE 1",
                digest_expr()
            ),
        ),
    ]
}

/// The oldest ClickHouse the worker runs against: `ReplacingMergeTree(version, is_deleted)`,
/// `insert_deduplication_token` on non-replicated tables and Native inserts converting
/// `String` to `LowCardinality(String)` all need it.
pub const MIN_VERSION: (u32, u32) = (23, 8);

/// A `FINAL` read of one source never waits for a merge, and is bounded in time.
const QUERY_TIMEOUT_SECS: &str = "600";

/// How long one insert may take to send and be acknowledged.
const INSERT_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct ChStore {
    client: Client,
    /// Same connection settings without a database: creates the database itself.
    admin: Client,
    database: String,
}

struct ItemRow<'a> {
    source: &'a str,
    sku: &'a str,
    name: &'a str,
    brand: Option<&'a str>,
    category: Option<&'a str>,
    description: Option<&'a str>,
    price: Option<i64>,
    currency: &'a str,
    weight_grams: Option<f64>,
    availability: Option<&'a str>,
    product_url: &'a str,
    image_urls: &'a [String],
    attributes: String,
    object_key: &'a str,
    object_etag: &'a str,
    object_modified_at: DateTime<Utc>,
    row_number: u64,
    job_id: uuid::Uuid,
    digest: &'a str,
    revision: u64,
    is_deleted: u8,
    delisted_at: Option<DateTime<Utc>>,
}

impl NativeRow for ItemRow<'_> {
    const COLUMNS: &'static [(&'static str, Kind)] = &[
        ("source", Kind::String),
        ("sku", Kind::String),
        ("name", Kind::String),
        ("brand", Kind::NullableString),
        ("category", Kind::NullableString),
        ("description", Kind::NullableString),
        ("price", Kind::NullableDecimal18_6),
        ("currency", Kind::String),
        ("weight_grams", Kind::NullableFloat64),
        ("availability", Kind::NullableString),
        ("product_url", Kind::String),
        ("image_urls", Kind::Strings),
        ("attributes", Kind::String),
        ("object_key", Kind::String),
        ("object_etag", Kind::String),
        ("object_modified_at", Kind::Micros),
        ("row_number", Kind::UInt64),
        ("job_id", Kind::Uuid),
        ("digest", Kind::String),
        ("revision", Kind::UInt64),
        ("is_deleted", Kind::UInt8),
        ("delisted_at", Kind::NullableMicros),
    ];

    fn write(&self, row: &mut RowWriter<'_>) {
        row.string(self.source);
        row.string(self.sku);
        row.string(self.name);
        row.nullable_string(self.brand);
        row.nullable_string(self.category);
        row.nullable_string(self.description);
        row.nullable_decimal(self.price);
        row.string(self.currency);
        row.nullable_f64(self.weight_grams);
        row.nullable_string(self.availability);
        row.string(self.product_url);
        row.strings(self.image_urls);
        row.string(&self.attributes);
        row.string(self.object_key);
        row.string(self.object_etag);
        row.micros(self.object_modified_at);
        row.u64(self.row_number);
        row.uuid(self.job_id);
        row.string(self.digest);
        row.u64(self.revision);
        row.u8(self.is_deleted);
        row.nullable_micros(self.delisted_at);
    }
}

struct ObservationRow<'a> {
    source: &'a str,
    observed_at: DateTime<Utc>,
    object_version: uuid::Uuid,
    row_number: u64,
    sku: &'a str,
    object_key: &'a str,
    price: Option<i64>,
    currency: &'a str,
    availability: &'a str,
    in_stock: u8,
}

impl NativeRow for ObservationRow<'_> {
    const COLUMNS: &'static [(&'static str, Kind)] = &[
        ("source", Kind::String),
        ("observed_at", Kind::Micros),
        ("object_version", Kind::Uuid),
        ("row_number", Kind::UInt64),
        ("sku", Kind::String),
        ("object_key", Kind::String),
        ("price", Kind::NullableDecimal18_6),
        ("currency", Kind::String),
        ("availability", Kind::String),
        ("in_stock", Kind::UInt8),
    ];

    fn write(&self, row: &mut RowWriter<'_>) {
        row.string(self.source);
        row.micros(self.observed_at);
        row.uuid(self.object_version);
        row.u64(self.row_number);
        row.string(self.sku);
        row.string(self.object_key);
        row.nullable_decimal(self.price);
        row.string(self.currency);
        row.string(self.availability);
        row.u8(self.in_stock);
    }
}

/// Rows per Native block: what the worker holds of an insert before it sends it (about 2 MB
/// of the benchmark's catalog rows); the server squashes the blocks of one insert into one
/// part.
const NATIVE_BLOCK_ROWS: u64 = 2_048;

/// An insert of `R` rows sent as Native blocks.
struct NativeInsert<R: NativeRow> {
    insert: clickhouse::insert_formatted::InsertFormatted,
    block: NativeBlock,
    row: std::marker::PhantomData<fn(&R)>,
}

impl<R: NativeRow> NativeInsert<R> {
    async fn write(&mut self, row: &R) -> Result<(), EtlError> {
        self.block.push(row);
        if self.block.rows() >= NATIVE_BLOCK_ROWS {
            self.insert.send(self.block.take()).await?;
        }
        Ok(())
    }

    async fn end(mut self) -> Result<(), EtlError> {
        if self.block.rows() > 0 {
            self.insert.send(self.block.take()).await?;
        }
        self.insert.end().await?;
        Ok(())
    }
}

/// The object version a set of observations belongs to.
pub struct Observed<'a> {
    pub source: &'a str,
    pub version: &'a ObjectVersion,
    pub version_id: uuid::Uuid,
}

/// A catalog row written by a chunk: its parsed item and what Postgres assigned to it.
pub struct WrittenRow<'a> {
    pub row: &'a ValidRow,
    pub revision: i64,
    pub digest: &'a str,
}

fn attributes_json<T: Serialize>(attributes: &T) -> String {
    serde_json::to_string(attributes).unwrap_or_else(|_| "{}".to_owned())
}

/// `major.minor` of a `SELECT version()` answer such as `26.9.2.1`.
fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

impl ChStore {
    /// A client with the `clickhouse` crate's defaults (reads in RowBinary checked against the
    /// types; inserts in Native blocks, [`crate::native`]), LZ4 as `CLICKHOUSE_COMPRESSION`
    /// says; `https://` URLs trust the system roots and `CLICKHOUSE_CA_FILE`.
    pub fn new(config: &Config) -> Result<Self, EtlError> {
        let client = crate::tls::clickhouse_client(config.clickhouse_ca_file.as_deref())
            .map_err(|reason| {
                EtlError::ClickHouse(clickhouse::error::Error::InvalidParams(
                    format!("CLICKHOUSE_CA_FILE: {reason}").into(),
                ))
            })?
            .with_url(&config.clickhouse_url)
            .with_user(&config.clickhouse_user)
            .with_password(config.clickhouse_password.expose())
            .with_option("max_execution_time", QUERY_TIMEOUT_SECS)
            .with_compression(if config.clickhouse_lz4 {
                clickhouse::Compression::Lz4
            } else {
                clickhouse::Compression::None
            })
            // ClickHouse 26.x answers compressed requests with ZSTD by default; the crate
            // reads LZ4.
            .with_option("network_compression_method", "lz4")
            // 26.x queues inserts by default: an insert must be stored (and deduplicated by
            // its token) when it returns, or `clickhouse_written` would run ahead of it.
            .with_option("async_insert", "0")
            // Every block the worker inserts holds one row per key already (a chunk's latest
            // row per sku, one observation per row): merging it at insert time, as a
            // ReplacingMergeTree does by default, was a third of the catalog insert's CPU.
            .with_option("optimize_on_insert", "0");
        Ok(Self {
            client: client.clone().with_database(&config.clickhouse_database),
            admin: client,
            database: config.clickhouse_database.clone(),
        })
    }

    /// The server's version, refused below [`MIN_VERSION`].
    pub async fn check_version(&self) -> Result<String, EtlError> {
        let version: String = self.admin.query("SELECT version()").fetch_one().await?;
        match parse_version(&version) {
            Some(found) if found >= MIN_VERSION => Ok(version),
            _ => Err(EtlError::NotAllowed(format!(
                "ClickHouse {version} is older than the minimum supported version {}.{} \
                 (CLICKHOUSE_URL)",
                MIN_VERSION.0, MIN_VERSION.1
            ))),
        }
    }

    /// Creates the database and applies every migration not applied yet, recording each.
    pub async fn migrate(&self) -> Result<(), EtlError> {
        self.admin
            .query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(clickhouse::sql::Identifier(&self.database))
            .execute()
            .await?;
        let tables: Vec<String> = self
            .client
            .query("SELECT name FROM system.tables WHERE database = currentDatabase()")
            .fetch_all()
            .await?;
        if !tables.iter().any(|t| t == "schema_migrations")
            && tables.iter().any(|t| {
                migrations()
                    .iter()
                    .any(|(name, _)| name.ends_with(t.as_str()))
            })
        {
            return Err(EtlError::NotAllowed(format!(
                "ClickHouse database {} holds catalog tables from before versioned migrations \
                 (the ClickHouse 18.16 era); drop them or use another CLICKHOUSE_DATABASE",
                self.database
            )));
        }
        self.client
            .query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                     version String,
                     applied_at DateTime64(3, 'UTC') DEFAULT now64(3)
                 ) ENGINE = ReplacingMergeTree ORDER BY version",
            )
            .execute()
            .await?;
        let applied: Vec<String> = self
            .client
            .query("SELECT version FROM schema_migrations FINAL")
            .fetch_all()
            .await?;
        for (version, ddl) in migrations() {
            if applied.iter().any(|a| *a == version) {
                continue;
            }
            // A migration that rewrites rows (a mutation) is done when it returns.
            self.client
                .query(&ddl)
                .with_option("mutations_sync", "2")
                .execute()
                .await?;
            self.client
                .query("INSERT INTO schema_migrations (version) VALUES (?)")
                .bind(version)
                .execute()
                .await?;
        }
        Ok(())
    }

    /// Row numbers of the object version's observations already stored in `rows` (raw, so a
    /// row stored twice shows twice). Read through the sort key's prefix.
    async fn observed_row_numbers(
        &self,
        observed: &Observed<'_>,
        rows: RangeInclusive<u64>,
    ) -> Result<Vec<u64>, EtlError> {
        Ok(self
            .client
            .query(
                "SELECT row_number FROM catalog_item_observations
                 WHERE source = ? AND observed_at = fromUnixTimestamp64Micro(?, 'UTC')
                   AND object_version = toUUID(?) AND row_number BETWEEN ? AND ?",
            )
            .bind(observed.source)
            .bind(observed.version.modified_at.timestamp_micros())
            .bind(observed.version_id.to_string())
            .bind(*rows.start())
            .bind(*rows.end())
            .fetch_all()
            .await?)
    }

    /// The observations of a chunk's valid rows (rows `rows` of the object version) that
    /// ClickHouse does not hold yet: exactly one observation per (object version, row), however
    /// many jobs ingest the version and however long after each other, without relying on
    /// ClickHouse's deduplication window. The block's token still drops the insert of an
    /// attempt that runs at the same moment as another one. `none_stored`: the caller knows
    /// ClickHouse holds none of these rows (the version's first copy of them), so they are
    /// not looked up.
    pub async fn insert_observations(
        &self,
        observed: &Observed<'_>,
        rows: RangeInclusive<u64>,
        parsed: &ParsedChunk,
        token: &str,
        none_stored: bool,
    ) -> Result<(), EtlError> {
        if parsed.valid.is_empty() {
            return Ok(());
        }
        let stored = if none_stored {
            Vec::new()
        } else {
            self.observed_row_numbers(observed, rows).await?
        };
        let missing: Vec<&ValidRow> = if stored.is_empty() {
            parsed.valid.iter().collect()
        } else {
            let stored: HashSet<u64> = stored.into_iter().collect();
            parsed
                .valid
                .iter()
                .filter(|row| !stored.contains(&row.row_number))
                .collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let mut insert =
            self.native_insert::<ObservationRow<'_>>("catalog_item_observations", token);
        for row in missing {
            let item = &row.item;
            insert
                .write(&ObservationRow {
                    source: observed.source,
                    observed_at: observed.version.modified_at,
                    object_version: observed.version_id,
                    row_number: row.row_number,
                    sku: &item.sku,
                    object_key: &observed.version.key,
                    price: micros(item.price),
                    currency: &item.currency,
                    availability: item.availability.map(Availability::as_str).unwrap_or(""),
                    in_stock: u8::from(item.availability == Some(Availability::InStock)),
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// One observation per delisted item (availability `delisted`, row 0) at the delisting
    /// object's time, for the items whose delisting observation ClickHouse does not hold yet.
    pub async fn insert_delistings(
        &self,
        observed: &Observed<'_>,
        items: &[DelistedItem],
        token: &str,
    ) -> Result<(), EtlError> {
        if items.is_empty() {
            return Ok(());
        }
        let stored: HashSet<String> = self
            .client
            .query(
                "SELECT sku FROM catalog_item_observations
                 WHERE source = ? AND observed_at = fromUnixTimestamp64Micro(?, 'UTC')
                   AND object_version = toUUID(?) AND row_number = 0",
            )
            .bind(observed.source)
            .bind(observed.version.modified_at.timestamp_micros())
            .bind(observed.version_id.to_string())
            .fetch_all::<String>()
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&DelistedItem> = items
            .iter()
            .filter(|item| !stored.contains(&item.sku))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut insert =
            self.native_insert::<ObservationRow<'_>>("catalog_item_observations", token);
        for item in missing {
            insert
                .write(&ObservationRow {
                    source: observed.source,
                    observed_at: observed.version.modified_at,
                    object_version: observed.version_id,
                    row_number: 0,
                    sku: &item.sku,
                    object_key: &observed.version.key,
                    price: micros(item.price),
                    currency: &item.currency,
                    availability: "delisted",
                    in_stock: 0,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    fn native_insert<R: NativeRow>(&self, table: &str, token: &str) -> NativeInsert<R> {
        let columns: Vec<&str> = R::COLUMNS.iter().map(|(name, _)| *name).collect();
        let insert = self
            .client
            .insert_formatted_with(format!(
                "INSERT INTO {table} ({}) FORMAT Native",
                columns.join(", ")
            ))
            .with_option("insert_deduplication_token", token)
            // The blocks declare `String` for `LowCardinality(String)` columns (the default).
            .with_option("input_format_native_allow_types_conversion", "1")
            .with_timeouts(Some(INSERT_TIMEOUT), Some(INSERT_TIMEOUT));
        NativeInsert {
            insert,
            block: NativeBlock::new::<R>(),
            row: std::marker::PhantomData,
        }
    }

    fn catalog_insert(&self, token: &str) -> NativeInsert<ItemRow<'_>> {
        self.native_insert("catalog_items", token)
    }

    /// Copies catalog rows a chunk wrote, from the parsed items and Postgres' revisions.
    pub async fn insert_written_items(
        &self,
        source: &str,
        version: &ObjectVersion,
        job_id: uuid::Uuid,
        rows: &[WrittenRow<'_>],
        token: &str,
    ) -> Result<(), EtlError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut insert = self.catalog_insert(token);
        for written in rows {
            let item = &written.row.item;
            insert
                .write(&ItemRow {
                    source,
                    sku: &item.sku,
                    name: &item.name,
                    brand: item.brand.as_deref(),
                    category: item.category.as_deref(),
                    description: item.description.as_deref(),
                    price: micros(item.price),
                    currency: &item.currency,
                    weight_grams: item.weight_grams.and_then(|w| w.to_f64()),
                    availability: item.availability.map(Availability::as_str),
                    product_url: &item.product_url,
                    image_urls: &item.image_urls,
                    attributes: attributes_json(&item.attributes),
                    object_key: &version.key,
                    object_etag: &version.etag,
                    object_modified_at: version.modified_at,
                    row_number: written.row.row_number,
                    job_id,
                    digest: written.digest,
                    revision: written.revision as u64,
                    is_deleted: 0,
                    delisted_at: None,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Copies catalog rows as Postgres holds them now (a copy made again, or a delisting): the
    /// revisions ClickHouse does not hold yet. Looked up rather than left to the token alone:
    /// a copy made again after `non_replicated_deduplication_window` other blocks is not
    /// dropped, and one made after some rows moved on holds other rows than the first.
    pub async fn insert_catalog_rows(
        &self,
        source: &str,
        rows: &[CatalogItemRow],
        token: &str,
    ) -> Result<(), EtlError> {
        let Some(low) = rows.iter().map(|row| row.revision).min() else {
            return Ok(());
        };
        let high = rows.iter().map(|row| row.revision).max().unwrap_or(low);
        // A revision is drawn from one sequence for every write of every item: it names one
        // row state, so the revisions alone say which rows are held.
        let held: HashSet<u64> = self
            .client
            .query(
                "SELECT revision FROM catalog_items WHERE source = ? AND revision BETWEEN ? AND ?",
            )
            .bind(source)
            .bind(low as u64)
            .bind(high as u64)
            .fetch_all::<u64>()
            .await?
            .into_iter()
            .collect();
        let missing: Vec<&CatalogItemRow> = rows
            .iter()
            .filter(|row| !held.contains(&(row.revision as u64)))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let mut insert = self.catalog_insert(token);
        for row in missing {
            let attributes: std::collections::BTreeMap<String, String> =
                serde_json::from_value(row.attributes.clone()).unwrap_or_default();
            insert
                .write(&ItemRow {
                    source,
                    sku: &row.sku,
                    name: &row.name,
                    brand: row.brand.as_deref(),
                    category: row.category.as_deref(),
                    description: row.description.as_deref(),
                    price: micros(row.price),
                    currency: &row.currency,
                    weight_grams: row.weight_grams.and_then(|w| w.to_f64()),
                    availability: row.availability.as_deref(),
                    product_url: &row.product_url,
                    image_urls: &row.image_urls,
                    attributes: attributes_json(&attributes),
                    object_key: &row.version.key,
                    object_etag: &row.version.etag,
                    object_modified_at: row.version.modified_at,
                    row_number: row.version_row as u64,
                    job_id: row.job_id,
                    digest: &row.digest,
                    revision: row.revision as u64,
                    is_deleted: u8::from(row.delisted_at.is_some()),
                    delisted_at: row.delisted_at,
                })
                .await?;
        }
        insert.end().await?;
        Ok(())
    }

    /// Observations of one object version (its rows, not its delisting observations at row
    /// 0): raw rows, rows under `FINAL`, and distinct skus. Read through the sort key's prefix
    /// (source, object time, version), so the cost does not grow with other history. Raw and
    /// `FINAL` agree when every row is stored once.
    pub async fn version_counts(
        &self,
        source: &str,
        version: &ObjectVersion,
        version_id: uuid::Uuid,
    ) -> Result<VersionCounts, EtlError> {
        // The raw count needs no distinct skus: hashing them is most of such a query's CPU.
        let query = |counts: &str, table: &str| {
            self.client
                .query(&format!(
                    "SELECT {counts} FROM {table}
                     WHERE source = ? AND observed_at = fromUnixTimestamp64Micro(?, 'UTC')
                       AND object_version = toUUID(?) AND row_number > 0"
                ))
                .bind(source)
                .bind(version.modified_at.timestamp_micros())
                .bind(version_id.to_string())
        };
        let raw = query("count()", "catalog_item_observations").fetch_one::<u64>();
        let deduplicated = query("count(), uniqExact(sku)", "catalog_item_observations FINAL")
            .fetch_one::<(u64, u64)>();
        let (raw, (rows, skus)) = tokio::try_join!(raw, deduplicated)?;
        Ok(VersionCounts { raw, rows, skus })
    }

    /// ClickHouse's side of the catalog comparison, computed in the server over the source's
    /// rows only (the sort key's prefix): each item's latest row (the highest revision, listed or
    /// delisted), counted, and the checksum of their digests; with `recompute`, each digest is
    /// built again from the row's columns and rows whose stored digest no longer matches are
    /// counted (changed behind the pipeline's back).
    pub async fn catalog_side(
        &self,
        source: &str,
        recompute: bool,
    ) -> Result<CatalogSide, EtlError> {
        let (listed, delisted, checksum, inconsistent) = self
            .client
            .query(&format!(
                "SELECT countIf(deleted = 0), countIf(deleted = 1), toString(sum({})),
                        countIf(stored != d)
                 FROM ({})",
                checksum_of("d"),
                latest_rows(recompute, "")
            ))
            .bind(source)
            .fetch_one::<(u64, u64, String, u64)>()
            .await?;
        Ok(CatalogSide {
            listed,
            delisted,
            checksum,
            inconsistent,
            sums_match: None,
        })
    }

    /// Per bucket (the first two hex digits of md5(sku)): items and their checksum.
    pub async fn catalog_buckets(
        &self,
        source: &str,
        recompute: bool,
    ) -> Result<Vec<(String, u64, String)>, EtlError> {
        Ok(self
            .client
            .query(&format!(
                "SELECT substring(lower(hex(MD5(sku))), 1, 2) AS bucket, count(),
                        toString(sum({}))
                 FROM ({}) GROUP BY bucket ORDER BY bucket",
                checksum_of("d"),
                latest_rows(recompute, "")
            ))
            .bind(source)
            .fetch_all::<(String, u64, String)>()
            .await?)
    }

    /// (sku, digest) of the items of some buckets.
    pub async fn catalog_digests(
        &self,
        source: &str,
        buckets: &[String],
        recompute: bool,
    ) -> Result<Vec<(String, String)>, EtlError> {
        Ok(self
            .client
            .query(&format!(
                "SELECT sku, d FROM ({})",
                latest_rows(recompute, "AND substring(lower(hex(MD5(sku))), 1, 2) IN ?")
            ))
            .bind(source)
            .bind(buckets)
            .fetch_all::<(String, String)>()
            .await?)
    }
}

/// Observation counts of one object version ([`ChStore::version_counts`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionCounts {
    /// Rows as stored: a row stored twice counts twice.
    pub raw: u64,
    /// Rows under `FINAL`.
    pub rows: u64,
    /// Distinct skus under `FINAL`.
    pub skus: u64,
}

/// Each item's latest row of one source (`?`), listed or delisted: `sku`, `deleted`, the
/// `stored` digest and `d`, the digest compared (recomputed from the columns with
/// `recompute`). `FINAL` would hide delisted items, so the latest row is picked by revision.
/// `ORDER BY sku … LIMIT 1 BY sku` reads the source's rows in the table's order (source, sku)
/// and hashes nothing: 36-42 ms of CPU for 194,201 items, where `GROUP BY sku` with `argMax`
/// took 82-103 ms.
fn latest_rows(recompute: bool, filter: &str) -> String {
    let digest = if recompute {
        digest_expr()
    } else {
        "digest".to_owned()
    };
    format!(
        "SELECT sku, is_deleted AS deleted, digest AS stored, {digest} AS d FROM catalog_items
         WHERE source = ? {filter}
         ORDER BY sku, revision DESC LIMIT 1 BY sku"
    )
}

/// The text Postgres' `catalog_item_digest()` and the worker's
/// [`crate::item_hash::catalog_digest`] hash, from ClickHouse's own columns: lengths in bytes,
/// `N` for NULL, a `Decimal(18, 6)` read as its count of millionths, the weight in micrograms,
/// attributes in the stored JSON's (sorted) key order.
const DIGEST_TEXT: &str = "concat(\
     toString(length(sku)), ':', sku, '\\x1F', \
     toString(length(name)), ':', name, '\\x1F', \
     if(isNull(brand), 'N', concat(toString(length(assumeNotNull(brand))), ':', \
        assumeNotNull(brand))), '\\x1F', \
     if(isNull(category), 'N', concat(toString(length(assumeNotNull(category))), ':', \
        assumeNotNull(category))), '\\x1F', \
     if(isNull(description), 'N', concat(toString(length(assumeNotNull(description))), ':', \
        assumeNotNull(description))), '\\x1F', \
     if(isNull(price), 'N', toString(reinterpretAsInt64(assumeNotNull(price)))), '\\x1F', \
     toString(length(currency)), ':', currency, '\\x1F', \
     if(isNull(weight_grams), 'N', \
        toString(toInt64(round(assumeNotNull(weight_grams) * 1000000)))), '\\x1F', \
     if(isNull(availability), 'N', concat(toString(length(assumeNotNull(availability))), ':', \
        assumeNotNull(availability))), '\\x1F', \
     toString(length(product_url)), ':', product_url, '\\x1F', \
     toString(length(image_urls)), ':', arrayStringConcat(image_urls, '\\x1E'), '\\x1F', \
     toString(length(JSONExtractKeysAndValues(attributes, 'String'))), ':', \
     arrayStringConcat(arrayMap(kv -> concat(toString(length(kv.1)), ':', kv.1, \
        toString(length(kv.2)), ':', kv.2), JSONExtractKeysAndValues(attributes, 'String'))), \
     '\\x1F', if(is_deleted = 1, 'D', 'L'), '\\x1F', \
     toString(toUnixTimestamp64Micro(object_modified_at)), '\\x1F', \
     toString(length(object_key)), ':', object_key, '\\x1F', \
     toString(length(object_etag)), ':', object_etag, '\\x1F', \
     toString(row_number))";

/// The digest recomputed from the row's columns.
fn digest_expr() -> String {
    format!("lower(hex(MD5({DIGEST_TEXT})))")
}

/// The first 60 bits of a hex digest column, as Postgres' `('x' || substr(digest, 1, 15))
/// ::bit(60)::bigint` reads them; summed as UInt128 so no sum overflows.
fn checksum_of(digest: &str) -> String {
    format!(
        "toUInt128(bitShiftRight(reinterpretAsUInt64(reverse(unhex(substring({digest}, 1, 16)))), 4))"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_compared_by_major_and_minor() {
        assert_eq!(parse_version("26.9.2.1"), Some((26, 9)));
        assert!(parse_version("23.8.1").unwrap() >= MIN_VERSION);
        assert!(parse_version("18.16.1").unwrap() < MIN_VERSION);
        assert_eq!(parse_version("garbage"), None);
    }
}
