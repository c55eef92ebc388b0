//! The current catalog: version-forward writes that leave unchanged items alone, delisting with
//! its guard, and the per-store catalog figures reconcile compares.
//!
//! Every write of a catalog row takes the next value of `catalog_revision`, assigned after the
//! row's lock is held, so revisions order a row's writes as Postgres committed them and
//! ClickHouse's copy (ReplacingMergeTree on the revision) converges on the same row.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::{Postgres, Row, Transaction};

use super::{ObjectVersion, PgStore, new_rows::NewRows, parse_job_id, unchanged};
use crate::{
    chunk::{ParsedChunk, ValidRow},
    contract::FieldError,
    error::EtlError,
    item_hash::{DigestFields, catalog_digests, content_hashes},
    model::CatalogSide,
};

/// How many of `job`'s distinct valid skus are missing from the source's catalog (a hashed set
/// difference: one pass over each side).
pub(super) async fn items_missing_from_catalog(
    conn: &mut sqlx::PgConnection,
    source: &str,
    job: uuid::Uuid,
) -> Result<u64, EtlError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT unnest(skus) FROM etl_chunks WHERE job_id = $2
             EXCEPT
             SELECT sku FROM catalog_items WHERE source = $1) AS missing",
    )
    .bind(source)
    .bind(job)
    .fetch_one(conn)
    .await?;
    Ok(n as u64)
}

/// How a chunk may change the current catalog, decided under the source row's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogWrite {
    /// A dry run, or an object older than its source's newest snapshot: history, invalid rows
    /// and the ledger only.
    Nothing,
    /// The object is its source's newest snapshot: no older object can write the catalog any
    /// more, so an unchanged item's row is left alone (its version stays older).
    Snapshot,
    /// Any other object (partial, or newer than every snapshot): every row moves forward to
    /// this version, changed or not, so that an older partial object arriving later cannot
    /// overwrite it.
    Forward,
    /// The source's first snapshot (no item of the source existed when the job was planned):
    /// the rows of skus the object mentions once are new and this chunk's alone, so they are
    /// copied in (`COPY`, binary) without the conflict handling of an upsert (its check of the
    /// key before each row, and the confirming WAL record after it); the others are upserted
    /// as `Forward`. A row that exists after all (a concurrent job of the source wrote it)
    /// rolls that copy back to its savepoint, and the chunk writes every row as `Forward`.
    New,
}

/// A catalog row a chunk wrote: what ClickHouse's copy needs besides the parsed item.
#[derive(Debug, Clone)]
pub struct WrittenItem {
    pub sku: String,
    pub revision: i64,
    pub digest: String,
    pub relisted: bool,
}

/// The mass-delist guard: more than this share of the source's listed items, and more than
/// `MASS_DELIST_MIN_ITEMS` items, is refused unless the job allows it.
pub const MASS_DELIST_MAX_SHARE: f64 = 0.2;
pub const MASS_DELIST_MIN_ITEMS: u64 = 10;

/// A catalog row as stored in Postgres, for ClickHouse's copy of it.
#[derive(Debug, Clone)]
pub struct CatalogItemRow {
    pub sku: String,
    pub name: String,
    pub brand: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    pub price: Option<Decimal>,
    pub currency: String,
    pub weight_grams: Option<Decimal>,
    pub availability: Option<String>,
    pub product_url: String,
    pub image_urls: Vec<String>,
    pub attributes: serde_json::Value,
    pub version: ObjectVersion,
    pub version_row: i64,
    pub job_id: uuid::Uuid,
    pub digest: String,
    pub revision: i64,
    pub delisted_at: Option<DateTime<Utc>>,
}

/// A catalog row's digest computed from its fields (see `catalog_item_digest()`).
const DIGEST_OF_ROW: &str = "catalog_item_digest(sku, name, brand, category, description, \
     price, currency, weight_grams, availability, product_url, image_urls, attributes, \
     delisted_at IS NOT NULL, version_modified_at, version_key, version_etag, version_row)";

/// An item's term of the catalog checksum: the first 60 bits of its digest (hex text). The
/// triggers of `catalog_sums` sum the same term.
fn checksum_term(digest: &str) -> String {
    format!("('x' || substr({digest}, 1, 15))::bit(60)::bigint")
}

/// How [`PgStore::catalog_side`] reads Postgres' side of the catalog comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogRead {
    /// The per-source sums the catalog's triggers keep: what a job compares.
    Sums,
    /// Every item of the source, its digest as stored or (`recompute`) computed again.
    Scan { recompute: bool },
}

pub(super) const CATALOG_COLUMNS: &str = "sku, name, brand, category, description, price, currency, \
     weight_grams, availability, product_url, image_urls, attributes, version_modified_at, \
     version_key, version_etag, version_row, last_job_id, digest, revision, delisted_at";

pub(super) fn catalog_row(row: &sqlx::postgres::PgRow) -> CatalogItemRow {
    CatalogItemRow {
        sku: row.get("sku"),
        name: row.get("name"),
        brand: row.get("brand"),
        category: row.get("category"),
        description: row.get("description"),
        price: row.get("price"),
        currency: row.get("currency"),
        weight_grams: row.get("weight_grams"),
        availability: row.get("availability"),
        product_url: row.get("product_url"),
        image_urls: row.get("image_urls"),
        attributes: row.get("attributes"),
        version: ObjectVersion {
            modified_at: row.get("version_modified_at"),
            key: row.get("version_key"),
            etag: row.get("version_etag"),
        },
        version_row: row.get("version_row"),
        job_id: row.get("last_job_id"),
        digest: row.get::<Option<String>, _>("digest").unwrap_or_default(),
        revision: row.get("revision"),
        delisted_at: row.get("delisted_at"),
    }
}

/// How the job's chunks may write the catalog, from the source's newest snapshot. Locks the
/// source's row FOR SHARE for the rest of the transaction, so a registration waits for it.
pub(super) async fn write_mode(
    tx: &mut Transaction<'_, Postgres>,
    source: &str,
    version: &ObjectVersion,
) -> Result<CatalogWrite, EtlError> {
    let order: Option<i32> = sqlx::query_scalar(
        "SELECT CASE WHEN snapshot_modified_at IS NULL THEN -1
                     WHEN (snapshot_modified_at, snapshot_key, snapshot_etag) < ($2, $3, $4)
                         THEN -1
                     WHEN (snapshot_modified_at, snapshot_key, snapshot_etag) = ($2, $3, $4)
                         THEN 0
                     ELSE 1 END
         FROM catalog_sources WHERE source = $1 FOR SHARE",
    )
    .bind(source)
    .bind(version.modified_at)
    .bind(&version.key)
    .bind(&version.etag)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(match order.unwrap_or(-1) {
        1 => CatalogWrite::Nothing,
        0 => CatalogWrite::Snapshot,
        _ => CatalogWrite::Forward,
    })
}

/// A PostgreSQL array literal (`{"a","b"}`), parsed by the upsert with `::text[]`: Postgres
/// arrays of arrays must be rectangular, and image lists are not.
fn text_array_literal(values: &[String]) -> String {
    let mut literal = String::with_capacity(2 + values.iter().map(|v| v.len() + 3).sum::<usize>());
    literal.push('{');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            literal.push(',');
        }
        literal.push('"');
        let mut rest = value.as_str();
        while let Some(at) = rest.find(['"', '\\']) {
            literal.push_str(&rest[..at]);
            literal.push('\\');
            literal.push_str(&rest[at..at + 1]);
            rest = &rest[at + 1..];
        }
        literal.push_str(rest);
        literal.push('"');
    }
    literal.push('}');
    literal
}

/// What a chunk's catalog upsert writes and how.
pub(super) struct Upsert<'a> {
    pub mode: CatalogWrite,
    pub job_id: uuid::Uuid,
    pub source: &'a str,
    pub version: &'a ObjectVersion,
    /// Skus the object mentions more than once: a snapshot writes them even when unchanged,
    /// so that their greatest row wins whatever order the chunks commit in.
    pub always: &'a HashSet<&'a str>,
}

/// Upserts the chunk's latest row of each sku (`latest`, sorted by sku as
/// [`ParsedChunk::latest_per_sku`] returns it), from typed arrays in batches of rows, only
/// forward: a lower version (an earlier row, an older object) never overwrites a higher one.
/// A snapshot writes only new, changed, delisted or repeated items; any other object moves every
/// row it carries to its version; a source's first snapshot inserts ([`CatalogWrite::New`]).
pub(super) async fn upsert_items(
    tx: &mut Transaction<'_, Postgres>,
    upsert: Upsert<'_>,
    latest: &[&ValidRow],
) -> Result<Vec<WrittenItem>, EtlError> {
    let Upsert {
        mode,
        job_id,
        source,
        version,
        always,
    } = upsert;
    if mode == CatalogWrite::Nothing {
        return Ok(Vec::new());
    }
    debug_assert!(latest.windows(2).all(|w| w[0].item.sku < w[1].item.sku));
    let hashes = content_hashes(latest.iter().map(|row| &row.item));
    let mut latest: Vec<(&ValidRow, [u8; 16])> = latest.iter().copied().zip(hashes).collect();
    if mode == CatalogWrite::Snapshot && !latest.is_empty() {
        let chunk: Vec<(&str, &[u8])> = latest
            .iter()
            .map(|(row, hash)| (row.item.sku.as_str(), hash.as_slice()))
            .collect();
        let changed = unchanged::changed_skus(tx, source, &chunk).await?;
        latest.retain(|(row, _)| {
            changed.contains(&row.item.sku) || always.contains(row.item.sku.as_str())
        });
    }
    if latest.is_empty() {
        return Ok(Vec::new());
    }
    let repeated: Vec<&str> = always.iter().copied().collect();
    if mode == CatalogWrite::New {
        // A sku the object mentions more than once may be written by another chunk of the
        // job: those rows go through the upsert, in sku order like every other upsert. The
        // rest belong to this chunk alone.
        let (shared, once): (Vec<_>, Vec<_>) = latest
            .iter()
            .copied()
            .partition(|(row, _)| always.contains(row.item.sku.as_str()));
        if let Some(mut written) = insert_new(tx, &once, source, version, job_id).await? {
            let forward = (false, repeated.as_slice());
            written.extend(write_rows(tx, &shared, source, version, job_id, forward).await?);
            written.sort_by(|a, b| a.sku.cmp(&b.sku));
            return Ok(written);
        }
    }
    // A snapshot leaves an unchanged row alone even when it reaches the conflict (another
    // object's chunk wrote it meanwhile), unless the object mentions the sku more than once;
    // any other object moves it forward.
    let move_forward = (mode == CatalogWrite::Snapshot, repeated.as_slice());
    Ok(write_rows(tx, &latest, source, version, job_id, move_forward).await?)
}

/// Inserts rows expected to be new (with `COPY`: [`NewRows`]), inside a savepoint. `None` when
/// one of them exists after all: the copy is rolled back and the caller upserts instead.
async fn insert_new(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&ValidRow, [u8; 16])],
    source: &str,
    version: &ObjectVersion,
    job_id: uuid::Uuid,
) -> Result<Option<Vec<WrittenItem>>, EtlError> {
    if rows.is_empty() {
        return Ok(Some(Vec::new()));
    }
    sqlx::query("SAVEPOINT first_write")
        .execute(&mut **tx)
        .await?;
    let new_rows = NewRows {
        source,
        version,
        job_id,
    };
    match new_rows.copy(tx, rows).await {
        Ok(written) => Ok(Some(written)),
        Err(sqlx::Error::Database(err)) if err.is_unique_violation() => {
            tracing::info!("a first snapshot's chunk met an existing item ({err}); it upserts");
            sqlx::query("ROLLBACK TO SAVEPOINT first_write")
                .execute(&mut **tx)
                .await?;
            Ok(None)
        }
        Err(err) => Err(err.into()),
    }
}

/// Rows per catalog statement. A statement binds every field of its rows as arrays, which sqlx
/// encodes and then copies into the connection's buffer: a whole chunk's (8 MiB: about 11,000
/// rows) made those two copies a third of the memory a chunk in flight holds.
const WRITE_BATCH_ROWS: usize = 2_000;

/// Upserts `rows`, one statement per `WRITE_BATCH_ROWS` in their (sku) order, so the row locks
/// are taken in the same order as by one statement. `move_forward`: $21, a snapshot leaves
/// unchanged rows alone; $22, the skus the object repeats.
async fn write_rows(
    tx: &mut Transaction<'_, Postgres>,
    rows: &[(&ValidRow, [u8; 16])],
    source: &str,
    version: &ObjectVersion,
    job_id: uuid::Uuid,
    move_forward: (bool, &[&str]),
) -> Result<Vec<WrittenItem>, sqlx::Error> {
    let sql = format!("{INSERT_ROWS} {MOVE_FORWARD} {RETURNING_WRITTEN}");
    let (unchanged_stays, repeated) = move_forward;
    let mut written = Vec::with_capacity(rows.len());
    for batch in rows.chunks(WRITE_BATCH_ROWS) {
        let columns = RowColumns::of(batch, version);
        let query = columns
            .bind(sqlx::query(&sql), source, version, job_id)
            .bind(unchanged_stays)
            .bind(repeated);
        written.extend(written_items(&query.fetch_all(&mut **tx).await?));
    }
    Ok(written)
}

/// The catalog digests of rows written from `version`, in order.
pub(super) fn written_digests<'a>(
    rows: impl Iterator<Item = &'a ValidRow>,
    version: &ObjectVersion,
) -> Vec<String> {
    catalog_digests(rows.map(|row| {
        DigestFields::of_item(
            &row.item,
            version.modified_at,
            &version.key,
            &version.etag,
            row.row_number as i64,
        )
    }))
}

/// The rows of a chunk's catalog write, as the typed arrays `INSERT_ROWS` unnests ($6 to
/// $20), in `latest`'s sku order.
struct RowColumns<'a> {
    sku: Vec<&'a str>,
    name: Vec<&'a str>,
    brand: Vec<Option<&'a str>>,
    category: Vec<Option<&'a str>>,
    description: Vec<Option<&'a str>>,
    price: Vec<Option<Decimal>>,
    currency: Vec<&'a str>,
    weight: Vec<Option<Decimal>>,
    availability: Vec<Option<&'static str>>,
    url: Vec<&'a str>,
    images: Vec<String>,
    attributes: Vec<String>,
    row_number: Vec<i64>,
    hash: Vec<&'a [u8]>,
    digest: Vec<String>,
}

impl<'a> RowColumns<'a> {
    fn of(latest: &'a [(&'a ValidRow, [u8; 16])], version: &ObjectVersion) -> Self {
        let n = latest.len();
        let mut columns = Self {
            sku: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            brand: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            description: Vec::with_capacity(n),
            price: Vec::with_capacity(n),
            currency: Vec::with_capacity(n),
            weight: Vec::with_capacity(n),
            availability: Vec::with_capacity(n),
            url: Vec::with_capacity(n),
            images: Vec::with_capacity(n),
            attributes: Vec::with_capacity(n),
            row_number: Vec::with_capacity(n),
            hash: Vec::with_capacity(n),
            digest: written_digests(latest.iter().map(|&(row, _)| row), version),
        };
        for (row, content) in latest {
            let item = &row.item;
            columns.sku.push(item.sku.as_str());
            columns.name.push(item.name.as_str());
            columns.brand.push(item.brand.as_deref());
            columns.category.push(item.category.as_deref());
            columns.description.push(item.description.as_deref());
            columns.price.push(item.price);
            columns.currency.push(item.currency.as_str());
            columns.weight.push(item.weight_grams);
            columns
                .availability
                .push(item.availability.map(|a| a.as_str()));
            columns.url.push(item.product_url.as_str());
            columns.images.push(text_array_literal(&item.image_urls));
            columns
                .attributes
                .push(serde_json::to_string(&item.attributes).unwrap_or_else(|_| "{}".into()));
            columns.row_number.push(row.row_number as i64);
            columns.hash.push(content.as_slice());
        }
        columns
    }

    /// Binds $1 to $20.
    fn bind<'q>(
        &'q self,
        query: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
        source: &'q str,
        version: &'q ObjectVersion,
        job_id: uuid::Uuid,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        query
            .bind(source)
            .bind(version.modified_at)
            .bind(&version.key)
            .bind(&version.etag)
            .bind(job_id)
            .bind(&self.sku)
            .bind(&self.name)
            .bind(&self.brand)
            .bind(&self.category)
            .bind(&self.description)
            .bind(&self.price)
            .bind(&self.currency)
            .bind(&self.weight)
            .bind(&self.availability)
            .bind(&self.url)
            .bind(&self.images)
            .bind(&self.attributes)
            .bind(&self.row_number)
            .bind(&self.hash)
            .bind(&self.digest)
    }
}

/// The chunk's rows as new catalog rows ($1 to $20). The rows go in the order of the arrays,
/// which is `latest`'s sku order: the item locks are taken in sku order without an `ORDER BY`,
/// whose sort copied every row once more.
const INSERT_ROWS: &str = "INSERT INTO catalog_items AS c (source, sku, name, brand, category,
        description, price, currency, weight_grams, availability, product_url, image_urls,
        attributes, version_modified_at, version_key, version_etag, version_row, content_hash,
        digest, first_job_id, last_job_id, revision)
    SELECT $1, s.sku, s.name, s.brand, s.category, s.description, s.price, s.currency,
        s.weight_grams, s.availability, s.product_url, s.images::text[], s.attributes::jsonb,
        $2, $3, $4, s.row_number, s.content_hash, s.digest, $5, $5, nextval('catalog_revision')
    FROM unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::numeric[],
                $12::text[], $13::numeric[], $14::text[], $15::text[], $16::text[], $17::text[],
                $18::bigint[], $19::bytea[], $20::text[])
        AS s(sku, name, brand, category, description, price, currency, weight_grams,
             availability, product_url, images, attributes, row_number, content_hash, digest)";

/// An existing row moves forward only: to a greater version, and with $21 (a snapshot) only
/// when it changed, was delisted or is a sku the object repeats ($22).
///
/// An item is relisted by the write that finds it delisted; a later write of the same job
/// keeps the mark (the later row of a sku written twice), another job's write clears it. The
/// rows written with this job's mark are what the chunk reports as relisted: a sku written by
/// two chunks is reported by both, and the job counts distinct skus.
const MOVE_FORWARD: &str = "ON CONFLICT (source, sku) DO UPDATE SET
        name = EXCLUDED.name, brand = EXCLUDED.brand, category = EXCLUDED.category,
        description = EXCLUDED.description, price = EXCLUDED.price,
        currency = EXCLUDED.currency, weight_grams = EXCLUDED.weight_grams,
        availability = EXCLUDED.availability, product_url = EXCLUDED.product_url,
        image_urls = EXCLUDED.image_urls, attributes = EXCLUDED.attributes,
        version_modified_at = EXCLUDED.version_modified_at,
        version_key = EXCLUDED.version_key, version_etag = EXCLUDED.version_etag,
        version_row = EXCLUDED.version_row, content_hash = EXCLUDED.content_hash,
        digest = EXCLUDED.digest, last_job_id = EXCLUDED.last_job_id,
        revision = nextval('catalog_revision'),
        relisted_by_job_id = CASE WHEN c.delisted_at IS NOT NULL THEN EXCLUDED.last_job_id
                                  WHEN c.last_job_id = EXCLUDED.last_job_id
                                      THEN c.relisted_by_job_id END,
        delisted_at = NULL, delisted_by_job_id = NULL, updated_at = now()
    WHERE (c.version_modified_at, c.version_key, c.version_etag, c.version_row)
          < (EXCLUDED.version_modified_at, EXCLUDED.version_key, EXCLUDED.version_etag,
             EXCLUDED.version_row)
      AND (NOT $21 OR c.content_hash IS DISTINCT FROM EXCLUDED.content_hash
           OR c.delisted_at IS NOT NULL OR EXCLUDED.sku = ANY($22))";

const RETURNING_WRITTEN: &str = "RETURNING c.sku, c.revision, c.digest,
        c.relisted_by_job_id IS NOT DISTINCT FROM $5 AS relisted";

/// Sorted by sku like every other copy of catalog rows: a repeated copy is the same block.
fn written_items(rows: &[sqlx::postgres::PgRow]) -> Vec<WrittenItem> {
    let mut written: Vec<WrittenItem> = rows
        .iter()
        .map(|row| WrittenItem {
            sku: row.get("sku"),
            revision: row.get("revision"),
            digest: row.get::<Option<String>, _>("digest").unwrap_or_default(),
            relisted: row.get("relisted"),
        })
        .collect();
    written.sort_by(|a, b| a.sku.cmp(&b.sku));
    written
}

#[derive(Serialize)]
struct InvalidParam<'a> {
    row_number: u64,
    errors: &'a [FieldError],
    raw_record: &'a str,
}

pub(super) async fn record_invalid(
    tx: &mut Transaction<'_, Postgres>,
    job_id: uuid::Uuid,
    chunk_index: u32,
    parsed: &ParsedChunk,
) -> Result<(), EtlError> {
    if parsed.invalid.is_empty() {
        return Ok(());
    }
    let rows: Vec<InvalidParam<'_>> = parsed
        .invalid
        .iter()
        .map(|row| InvalidParam {
            row_number: row.row_number,
            errors: &row.errors,
            raw_record: row.raw.as_str(),
        })
        .collect();
    // One JSON text parameter: one round trip, and no intermediate `serde_json::Value` tree.
    let rows = serde_json::to_string(&rows)
        .map_err(|err| EtlError::Postgres(sqlx::Error::Encode(err.into())))?;
    sqlx::query(
        "INSERT INTO invalid_item_logs (job_id, chunk_index, row_number, errors, raw_record)
         SELECT $1, $2, r.row_number, r.errors, r.raw_record
         FROM jsonb_to_recordset($3::jsonb) AS r(row_number bigint, errors jsonb, raw_record text)
         ON CONFLICT (job_id, row_number) DO NOTHING",
    )
    .bind(job_id)
    .bind(chunk_index as i32)
    .bind(rows)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl PgStore {
    /// Whether a newer full snapshot than `version` has registered for the source: the object
    /// writes no catalog rows then.
    pub async fn snapshot_newer_than(
        &self,
        source: &str,
        version: &ObjectVersion,
    ) -> Result<bool, EtlError> {
        let newer: Option<bool> = sqlx::query_scalar(
            "SELECT snapshot_modified_at IS NOT NULL
                    AND (snapshot_modified_at, snapshot_key, snapshot_etag) > ($2, $3, $4)
             FROM catalog_sources WHERE source = $1",
        )
        .bind(source)
        .bind(version.modified_at)
        .bind(&version.key)
        .bind(&version.etag)
        .fetch_optional(self.pool())
        .await?;
        Ok(newer.unwrap_or(false))
    }

    /// The catalog rows among `skus` whose state `job_id` wrote from `object_rows`, as they are
    /// now: a committed chunk's changes that no other write has replaced since, for a
    /// ClickHouse copy made again after the attempt that wrote them died.
    pub async fn rows_written_by(
        &self,
        source: &str,
        job_id: uuid::Uuid,
        object_rows: std::ops::RangeInclusive<u64>,
        skus: &[String],
    ) -> Result<Vec<CatalogItemRow>, EtlError> {
        let rows = sqlx::query(&format!(
            "SELECT {CATALOG_COLUMNS} FROM catalog_items
             WHERE source = $1 AND sku = ANY($2) AND last_job_id = $3
               AND version_row BETWEEN $4 AND $5
             ORDER BY sku"
        ))
        .bind(source)
        .bind(skus)
        .bind(job_id)
        .bind(*object_rows.start() as i64)
        .bind(*object_rows.end() as i64)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(catalog_row).collect())
    }

    /// How many of `job_id`'s distinct valid skus are missing from the source's catalog.
    pub async fn job_items_missing_from_catalog(
        &self,
        source: &str,
        job_id: &str,
    ) -> Result<u64, EtlError> {
        let mut conn = self.pool().acquire().await?;
        items_missing_from_catalog(&mut conn, source, parse_job_id(job_id)?).await
    }

    /// Postgres' side of the catalog comparison. [`CatalogRead::Sums`] reads the per-source
    /// sums that the catalog's triggers keep (`migrations/20261207000001_catalog_sums.sql`): a
    /// few rows, whatever the catalog's size. [`CatalogRead::Scan`] computes the side in one
    /// pass over the source's items, listed and delisted: the counts and the checksum of their
    /// digests; with `recompute`, each digest is computed again from the row's fields (and rows
    /// whose stored digest no longer matches are counted: changed behind the pipeline's back).
    /// A scan also reads the kept sums and says whether they match the stored digests.
    pub async fn catalog_side(
        &self,
        source: &str,
        read: CatalogRead,
    ) -> Result<CatalogSide, EtlError> {
        let sums = sqlx::query(
            "SELECT coalesce(sum(listed), 0)::bigint AS listed,
                    coalesce(sum(delisted), 0)::bigint AS delisted,
                    coalesce(sum(checksum), 0)::text AS checksum
             FROM catalog_sums WHERE source = $1",
        )
        .bind(source);
        let CatalogRead::Scan { recompute } = read else {
            let row = sums.fetch_one(self.pool()).await?;
            return Ok(CatalogSide {
                listed: row.get::<i64, _>("listed") as u64,
                delisted: row.get::<i64, _>("delisted") as u64,
                checksum: row.get("checksum"),
                inconsistent: 0,
                sums_match: None,
            });
        };
        let digest = if recompute { DIGEST_OF_ROW } else { "digest" };
        // One transaction: the scan and the sums see the same catalog.
        let mut tx = self.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let row = sqlx::query(&format!(
            "SELECT count(*) FILTER (WHERE delisted_at IS NULL) AS listed,
                    count(*) FILTER (WHERE delisted_at IS NOT NULL) AS delisted,
                    coalesce(sum({}), 0)::text AS checksum,
                    coalesce(sum({}), 0)::text AS stored_checksum,
                    count(*) FILTER (WHERE digest IS DISTINCT FROM d) AS inconsistent
             FROM (SELECT delisted_at, digest, {digest} AS d
                   FROM catalog_items WHERE source = $1) AS items",
            checksum_term("d"),
            checksum_term("digest"),
        ))
        .bind(source)
        .fetch_one(&mut *tx)
        .await?;
        let kept = sums.fetch_one(&mut *tx).await?;
        tx.commit().await?;
        let listed = row.get::<i64, _>("listed");
        let delisted = row.get::<i64, _>("delisted");
        let sums_match = kept.get::<i64, _>("listed") == listed
            && kept.get::<i64, _>("delisted") == delisted
            && kept.get::<String, _>("checksum") == row.get::<String, _>("stored_checksum");
        Ok(CatalogSide {
            listed: listed as u64,
            delisted: delisted as u64,
            checksum: row.get("checksum"),
            inconsistent: row.get::<i64, _>("inconsistent") as u64,
            sums_match: Some(sums_match),
        })
    }

    /// Folds the source's sum deltas into one row, in the transaction that completes a job
    /// (which holds the source's row FOR UPDATE): the rows a source's sums are read from stay
    /// as few as the statements since its last completed job. A delta appended meanwhile by a
    /// transaction this one cannot see is left as it is, and counted by the next fold.
    pub(super) async fn fold_catalog_sums(
        tx: &mut Transaction<'_, Postgres>,
        source: &str,
    ) -> Result<(), EtlError> {
        sqlx::query(
            "WITH folded AS (DELETE FROM catalog_sums WHERE source = $1
                             RETURNING listed, delisted, checksum)
             INSERT INTO catalog_sums (source, listed, delisted, checksum)
             SELECT $1, sum(listed), sum(delisted), sum(checksum) FROM folded
             HAVING count(*) > 0",
        )
        .bind(source)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Per bucket (the first two hex digits of md5(sku)): items and their checksum, to find
    /// where the stores differ without reading rows.
    pub async fn catalog_buckets(
        &self,
        source: &str,
        recompute: bool,
    ) -> Result<Vec<(String, u64, String)>, EtlError> {
        let digest = if recompute { DIGEST_OF_ROW } else { "digest" };
        let rows = sqlx::query(&format!(
            "SELECT substr(md5(sku), 1, 2) AS bucket, count(*) AS items,
                    sum({})::text AS checksum
             FROM catalog_items WHERE source = $1
             GROUP BY 1 ORDER BY 1",
            checksum_term(digest)
        ))
        .bind(source)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    row.get("bucket"),
                    row.get::<i64, _>("items") as u64,
                    row.get("checksum"),
                )
            })
            .collect())
    }

    /// (sku, digest) of the items of some buckets.
    pub async fn catalog_digests(
        &self,
        source: &str,
        buckets: &[String],
        recompute: bool,
    ) -> Result<Vec<(String, String)>, EtlError> {
        let digest = if recompute { DIGEST_OF_ROW } else { "digest" };
        let rows = sqlx::query(&format!(
            "SELECT sku, {digest} AS d FROM catalog_items
             WHERE source = $1 AND substr(md5(sku), 1, 2) = ANY($2)"
        ))
        .bind(source)
        .bind(buckets)
        .fetch_all(self.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|row| (row.get("sku"), row.get("d")))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::text_array_literal;

    #[test]
    fn text_array_literals_quote_every_element_and_escape_quotes_and_backslashes() {
        let values = [
            String::new(),
            "https://cdn.example/a,b.jpg".to_owned(),
            r#"a"b\c""\\"#.to_owned(),
            "日本語 {x}".to_owned(),
        ];
        assert_eq!(
            text_array_literal(&values),
            r#"{"","https://cdn.example/a,b.jpg","a\"b\\c\"\"\\\\","日本語 {x}"}"#
        );
        assert_eq!(text_array_literal(&[]), "{}");
    }
}
