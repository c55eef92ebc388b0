//! A source's first snapshot writes its new catalog rows with `COPY … FROM STDIN (FORMAT
//! binary)` instead of an `INSERT … SELECT FROM unnest(…)`.
//!
//! Why: the insert decoded fifteen bound arrays, unnested them and wrote one WAL record per
//! row; `COPY` reads each field once in its binary form and inserts a page's rows with one
//! WAL record (`heap_multi_insert`). The rows, their order (sku order, so the item locks are
//! taken as by every other write), their values and the unique-violation fallback of
//! [`super::catalog`]'s savepoint are the same. `COPY` returns nothing, so the rows'
//! revisions are drawn from `catalog_revision` first, one per row, as the insert's
//! `nextval` did.

use sqlx::{Encode, Postgres, Transaction, encode::IsNull, postgres::PgArgumentBuffer};

use super::{
    ObjectVersion,
    catalog::{WrittenItem, written_digests},
};
use crate::chunk::ValidRow;

/// The columns the rows carry, in the order each row's fields are written; the others take
/// their defaults (`created_at`, `updated_at`) or stay null (delisting and relisting marks).
const COPY_NEW_ROWS: &str = "COPY catalog_items (source, sku, name, brand, category, description,
        price, currency, weight_grams, availability, product_url, image_urls, attributes,
        version_modified_at, version_key, version_etag, version_row, content_hash, digest,
        first_job_id, last_job_id, revision) FROM STDIN (FORMAT binary)";
const FIELDS_PER_ROW: i16 = 22;

/// Rows per `CopyData` batch: the encoded rows of one batch are the only copy held (about
/// 2 MB for the benchmark's rows, about 1 KB each in binary), whatever the chunk's size.
const ROWS_PER_SEND: usize = 2_000;

/// The job and object every row of the copy shares.
pub(super) struct NewRows<'a> {
    pub source: &'a str,
    pub version: &'a ObjectVersion,
    pub job_id: uuid::Uuid,
}

impl NewRows<'_> {
    /// Inserts `rows` (sorted by sku, with their content hashes). A row that exists already
    /// fails the whole copy with the unique violation the caller's savepoint handles.
    pub(super) async fn copy(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[(&ValidRow, [u8; 16])],
    ) -> Result<Vec<WrittenItem>, sqlx::Error> {
        let revisions: Vec<i64> =
            sqlx::query_scalar("SELECT nextval('catalog_revision') FROM generate_series(1, $1)")
                .bind(rows.len() as i64)
                .fetch_all(&mut **tx)
                .await?;
        let mut written = Vec::with_capacity(rows.len());
        let mut copy = tx.copy_in_raw(COPY_NEW_ROWS).await?;
        let mut data = PgArgumentBuffer::default();
        data.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        data.extend_from_slice(&0_i32.to_be_bytes()); // flags: no OIDs
        data.extend_from_slice(&0_i32.to_be_bytes()); // no header extension
        for (batch, revisions) in rows
            .chunks(ROWS_PER_SEND)
            .zip(revisions.chunks(ROWS_PER_SEND))
        {
            let digests = written_digests(batch.iter().map(|&(row, _)| row), self.version);
            for ((&(row, content_hash), &revision), digest) in
                batch.iter().zip(revisions).zip(digests)
            {
                self.encode_row(&mut data, row, &content_hash, &digest, revision)?;
                written.push(WrittenItem {
                    sku: row.item.sku.clone(),
                    revision,
                    digest,
                    relisted: false,
                });
            }
            copy.send(data.as_slice()).await?;
            data.clear();
        }
        copy.send((-1_i16).to_be_bytes().as_slice()).await?; // the trailer
        copy.finish().await?;
        Ok(written)
    }

    /// Appends one row's tuple.
    fn encode_row(
        &self,
        data: &mut PgArgumentBuffer,
        row: &ValidRow,
        content_hash: &[u8; 16],
        digest: &str,
        revision: i64,
    ) -> Result<(), sqlx::Error> {
        let item = &row.item;
        let version = self.version;
        let version_row = row.row_number as i64;
        data.extend_from_slice(&FIELDS_PER_ROW.to_be_bytes());
        field(data, self.source)?;
        field(data, item.sku.as_str())?;
        field(data, item.name.as_str())?;
        field(data, item.brand.as_deref())?;
        field(data, item.category.as_deref())?;
        field(data, item.description.as_deref())?;
        field(data, item.price)?;
        field(data, item.currency.as_str())?;
        field(data, item.weight_grams)?;
        field(data, item.availability.map(|a| a.as_str()))?;
        field(data, item.product_url.as_str())?;
        field(data, item.image_urls.as_slice())?;
        jsonb_field(data, &item.attributes)?;
        field(data, version.modified_at)?;
        field(data, version.key.as_str())?;
        field(data, version.etag.as_str())?;
        field(data, version_row)?;
        field(data, content_hash.as_slice())?;
        field(data, digest)?;
        field(data, self.job_id)?;
        field(data, self.job_id)?;
        field(data, revision)?;
        Ok(())
    }
}

/// One field: its length (-1 for null), then its binary form as sqlx encodes a bound value of
/// its type.
fn field<'q, T: Encode<'q, Postgres>>(
    data: &mut PgArgumentBuffer,
    value: T,
) -> Result<(), sqlx::Error> {
    let at = data.len();
    data.extend_from_slice(&[0; 4]);
    let length = match value.encode_by_ref(data).map_err(sqlx::Error::Encode)? {
        IsNull::Yes => -1,
        IsNull::No => field_length(data.len() - at - 4)?,
    };
    data[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

/// `jsonb`'s binary form: its format version (1), then the JSON text.
fn jsonb_field(
    data: &mut PgArgumentBuffer,
    attributes: &std::collections::BTreeMap<String, String>,
) -> Result<(), sqlx::Error> {
    let at = data.len();
    data.extend_from_slice(&[0, 0, 0, 0, 1]);
    serde_json::to_writer(&mut **data, attributes)
        .map_err(|err| sqlx::Error::Encode(err.into()))?;
    let length = field_length(data.len() - at - 4)?;
    data[at..at + 4].copy_from_slice(&length.to_be_bytes());
    Ok(())
}

fn field_length(length: usize) -> Result<i32, sqlx::Error> {
    i32::try_from(length).map_err(|_| {
        sqlx::Error::Encode(format!("a catalog field of {length} bytes is too large").into())
    })
}
