//! ClickHouse, the analytics copy. Writes are replay-safe: both tables are ReplacingMergeTree
//! keyed so that a replayed chunk writes rows identical to the ones it replaces.

use chrono::{DateTime, Utc};
use clickhouse::{Client, Row, insert::Insert};
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::Serialize;

use crate::{
    chunk::ParsedChunk,
    config::{ClickHouseCompression, Config},
    contract::Availability,
    error::EtlError,
};

const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_catalog_items",
        include_str!("../../migrations/clickhouse/0001_catalog_items.sql"),
    ),
    (
        "0002_catalog_item_observations",
        include_str!("../../migrations/clickhouse/0002_catalog_item_observations.sql"),
    ),
];

/// Prices are stored as `Decimal(18, 6)`: RowBinary carries them as the integer count of
/// millionths. Prices are below 10,000,000 by contract, so this never overflows.
const PRICE_SCALE: u32 = 6;

/// The ClickHouse inserts of one chunk that a previous attempt completed.
#[derive(Debug, Default, Clone, Copy)]
pub struct WrittenAlready {
    pub items: bool,
    pub observations: bool,
}

#[derive(Clone)]
pub struct ChStore {
    client: Client,
    /// Same connection settings without a database: creates the database itself.
    admin: Client,
    database: String,
}

#[derive(Row, Serialize)]
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
    source_modified_at: u32,
    row_number: u64,
    job_id: &'a str,
    version: u64,
}

#[derive(Row, Serialize)]
struct ObservationRow<'a> {
    source: &'a str,
    sku: &'a str,
    job_id: &'a str,
    row_number: u64,
    observed_at: u32,
    price: Option<i64>,
    currency: &'a str,
    availability: Option<&'a str>,
    in_stock: u8,
}

fn scaled_price(price: Option<Decimal>) -> Option<i64> {
    price.and_then(|p| {
        let mut scaled = p.round_dp(PRICE_SCALE);
        scaled.rescale(PRICE_SCALE);
        i64::try_from(scaled.mantissa()).ok()
    })
}

/// Newer object first, then the later row: the same order Postgres uses for its version.
pub fn item_version(modified_at: DateTime<Utc>, row_number: u64) -> u64 {
    ((modified_at.timestamp().max(0) as u64) << 32) | (row_number & 0xFFFF_FFFF)
}

impl ChStore {
    pub fn new(config: &Config) -> Self {
        let compression = match config.clickhouse_compression {
            ClickHouseCompression::None => clickhouse::Compression::None,
            ClickHouseCompression::Lz4 => clickhouse::Compression::Lz4,
        };
        let client = Client::default()
            .with_url(&config.clickhouse_url)
            .with_user(&config.clickhouse_user)
            .with_password(config.clickhouse_password.expose())
            .with_compression(compression)
            .with_validation(config.clickhouse_validation);
        Self {
            client: client.clone().with_database(&config.clickhouse_database),
            admin: client,
            database: config.clickhouse_database.clone(),
        }
    }

    /// Creates the database and tables (idempotent: every statement is `IF NOT EXISTS`).
    pub async fn migrate(&self) -> Result<(), EtlError> {
        self.admin
            .query("CREATE DATABASE IF NOT EXISTS ?")
            .bind(clickhouse::sql::Identifier(&self.database))
            .execute()
            .await?;
        for (_, ddl) in MIGRATIONS {
            self.client.query(ddl).execute().await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), EtlError> {
        self.client.query("SELECT 1").fetch_one::<u8>().await?;
        Ok(())
    }

    /// Which of the chunk's two inserts already landed, for a retry of a chunk whose attempt
    /// died after writing ClickHouse but before the ledger said so. Each insert is one block
    /// (a chunk is far below `max_insert_block_size`), so it landed whole or not at all; a
    /// retry writes only what is missing and leaves no physical duplicate behind.
    pub async fn written_already(
        &self,
        job_id: &str,
        parsed: &ParsedChunk,
    ) -> Result<WrittenAlready, EtlError> {
        let (Some(first), Some(last)) = (parsed.valid.first(), parsed.valid.last()) else {
            return Ok(WrittenAlready::default());
        };
        let mut present = [false; 2];
        for (table, found) in ["catalog_items", "catalog_item_observations"]
            .into_iter()
            .zip(&mut present)
        {
            let rows: u64 = self
                .client
                .query(&format!(
                    "SELECT count() FROM {table} WHERE job_id = ? AND row_number BETWEEN ? AND ?"
                ))
                .bind(job_id)
                .bind(first.row_number)
                .bind(last.row_number)
                .fetch_one()
                .await?;
            *found = rows > 0;
        }
        Ok(WrittenAlready {
            items: present[0],
            observations: present[1],
        })
    }

    pub async fn write_chunk(
        &self,
        source: &str,
        job_id: &str,
        modified_at: DateTime<Utc>,
        parsed: &ParsedChunk,
        already: WrittenAlready,
    ) -> Result<(), EtlError> {
        if parsed.valid.is_empty() {
            return Ok(());
        }
        let observed_at = modified_at.timestamp().clamp(0, u32::MAX as i64) as u32;
        if !already.items {
            self.write_items(source, job_id, modified_at, observed_at, parsed)
                .await?;
        }
        if !already.observations {
            self.write_observations(source, job_id, observed_at, parsed)
                .await?;
        }
        Ok(())
    }

    async fn write_items(
        &self,
        source: &str,
        job_id: &str,
        modified_at: DateTime<Utc>,
        observed_at: u32,
        parsed: &ParsedChunk,
    ) -> Result<(), EtlError> {
        let mut items: Insert<ItemRow<'_>> = self.client.insert("catalog_items").await?;
        for row in parsed.latest_per_sku() {
            let item = &row.item;
            items
                .write(&ItemRow {
                    source,
                    sku: &item.sku,
                    name: &item.name,
                    brand: item.brand.as_deref(),
                    category: item.category.as_deref(),
                    description: item.description.as_deref(),
                    price: scaled_price(item.price),
                    currency: &item.currency,
                    weight_grams: item.weight_grams.and_then(|w| w.to_f64()),
                    availability: item.availability.map(Availability::as_str),
                    product_url: &item.product_url,
                    image_urls: &item.image_urls,
                    attributes: serde_json::to_string(&item.attributes)
                        .unwrap_or_else(|_| "{}".to_owned()),
                    source_modified_at: observed_at,
                    row_number: row.row_number,
                    job_id,
                    version: item_version(modified_at, row.row_number),
                })
                .await?;
        }
        items.end().await?;
        Ok(())
    }

    async fn write_observations(
        &self,
        source: &str,
        job_id: &str,
        observed_at: u32,
        parsed: &ParsedChunk,
    ) -> Result<(), EtlError> {
        let mut observations: Insert<ObservationRow<'_>> =
            self.client.insert("catalog_item_observations").await?;
        for row in &parsed.valid {
            let item = &row.item;
            observations
                .write(&ObservationRow {
                    source,
                    sku: &item.sku,
                    job_id,
                    row_number: row.row_number,
                    observed_at,
                    price: scaled_price(item.price),
                    currency: &item.currency,
                    availability: item.availability.map(Availability::as_str),
                    in_stock: u8::from(item.availability == Some(Availability::InStock)),
                })
                .await?;
        }
        observations.end().await?;
        Ok(())
    }

    /// (distinct skus, observation rows) of one job, deduplicated with `FINAL`.
    pub async fn job_counts(&self, job_id: &str) -> Result<(u64, u64), EtlError> {
        let (items, rows) = self
            .client
            .query(
                "SELECT uniqExact(sku), count() FROM catalog_item_observations FINAL
                 WHERE job_id = ?",
            )
            .bind(job_id)
            .fetch_one::<(u64, u64)>()
            .await?;
        Ok((items, rows))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_by_object_time_then_row() {
        let older = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let newer = DateTime::from_timestamp(1_700_000_001, 0).unwrap();
        assert!(item_version(older, 5) < item_version(older, 6));
        assert!(item_version(older, u32::MAX as u64) < item_version(newer, 1));
    }

    #[test]
    fn prices_scale_to_millionths() {
        assert_eq!(
            scaled_price(Some(Decimal::new(129_900, 2))),
            Some(1_299_000_000)
        );
        assert_eq!(scaled_price(Some(Decimal::new(1_299, 3))), Some(1_299_000));
        assert_eq!(scaled_price(None), None);
    }
}
