//! What identifies a catalog item's content and state:
//!
//! - the content hash: every content field of an item, so a snapshot that repeats an item
//!   unchanged leaves its row alone. 128 bits of BLAKE3 over a length-prefixed encoding: a false
//!   "unchanged" would lose a change, so the hash is cryptographic, and BLAKE3 is the fast one.
//!   Only the worker computes it; Postgres stores it and compares it;
//! - the catalog digest: md5 of *every* stored field of a catalog row (content, listed or
//!   delisted, version), byte for byte the text Postgres' `catalog_item_digest()` and
//!   ClickHouse's expression hash (see [`crate::ch`]), so each store can check its rows
//!   against it and the two stores can be compared without reading rows;
//! - the mention hash: 64 bits of a sku field as read, which the planner records per chunk to
//!   find skus that more than one record of an object mentions. A collision only makes a sku
//!   look mentioned twice, which costs one write, never a wrong value.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use md5::{Digest as _, Md5};
use rust_decimal::{Decimal, RoundingStrategy};

use crate::{
    contract::ValidItem,
    hash_lanes::{blake3_many, md5_many},
};

/// Millionths, rounded half away from zero as Postgres' `round(x, 6)` does: ClickHouse stores
/// prices as `Decimal(18, 6)`, and digests compare prices and weights in this unit. Prices are
/// below 10,000,000 by contract and weights fit as well, so it never overflows.
pub fn micros(value: Option<Decimal>) -> Option<i64> {
    value.and_then(|v| {
        let mut scaled = v.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
        scaled.rescale(6);
        i64::try_from(scaled.mantissa()).ok()
    })
}

/// An item's catalog state in the terms of the digest: every field Postgres and ClickHouse
/// store for it.
pub struct DigestFields<'a> {
    pub sku: &'a str,
    pub name: &'a str,
    pub brand: Option<&'a str>,
    pub category: Option<&'a str>,
    pub description: Option<&'a str>,
    pub price: Option<Decimal>,
    pub currency: &'a str,
    pub weight_grams: Option<Decimal>,
    pub availability: Option<&'a str>,
    pub product_url: &'a str,
    pub image_urls: &'a [String],
    pub attributes: &'a BTreeMap<String, String>,
    pub listed: bool,
    pub modified_at: DateTime<Utc>,
    pub object_key: &'a str,
    pub object_etag: &'a str,
    pub row_number: i64,
}

impl<'a> DigestFields<'a> {
    /// A row written from a valid record of an object version.
    pub fn of_item(
        item: &'a ValidItem,
        modified_at: DateTime<Utc>,
        object_key: &'a str,
        object_etag: &'a str,
        row_number: i64,
    ) -> Self {
        Self {
            sku: &item.sku,
            name: &item.name,
            brand: item.brand.as_deref(),
            category: item.category.as_deref(),
            description: item.description.as_deref(),
            price: item.price,
            currency: &item.currency,
            weight_grams: item.weight_grams,
            availability: item.availability.map(|a| a.as_str()),
            product_url: &item.product_url,
            image_urls: &item.image_urls,
            attributes: &item.attributes,
            listed: true,
            modified_at,
            object_key,
            object_etag,
            row_number,
        }
    }
}

/// `len:value`, or `N` for NULL: no two different rows share a digest text.
fn field(text: &mut String, value: Option<&str>) {
    match value {
        Some(value) => {
            push_integer(text, value.len());
            text.push(':');
            text.push_str(value);
        }
        None => text.push('N'),
    }
}

fn number(text: &mut String, value: Option<i64>) {
    match value {
        Some(value) => {
            push_integer(text, value);
        }
        None => text.push('N'),
    }
}

/// The digest text: the same bytes Postgres' `catalog_item_digest()` and ClickHouse's
/// `DIGEST_TEXT` build from their columns.
fn digest_text(row: &DigestFields<'_>) -> String {
    const SEP: char = '\x1f';
    // The values plus room for the numbers, length prefixes and separators: the text is
    // built once, without growing.
    let mut text = String::with_capacity(
        160 + row.sku.len()
            + row.name.len()
            + row.brand.map_or(0, str::len)
            + row.category.map_or(0, str::len)
            + row.description.map_or(0, str::len)
            + row.currency.len()
            + row.product_url.len()
            + row.image_urls.iter().map(|u| u.len() + 1).sum::<usize>()
            + row
                .attributes
                .iter()
                .map(|(name, value)| name.len() + value.len() + 12)
                .sum::<usize>()
            + row.object_key.len()
            + row.object_etag.len(),
    );
    field(&mut text, Some(row.sku));
    text.push(SEP);
    field(&mut text, Some(row.name));
    text.push(SEP);
    field(&mut text, row.brand);
    text.push(SEP);
    field(&mut text, row.category);
    text.push(SEP);
    field(&mut text, row.description);
    text.push(SEP);
    number(&mut text, micros(row.price));
    text.push(SEP);
    field(&mut text, Some(row.currency));
    text.push(SEP);
    number(&mut text, micros(row.weight_grams));
    text.push(SEP);
    field(&mut text, row.availability);
    text.push(SEP);
    field(&mut text, Some(row.product_url));
    text.push(SEP);
    push_integer(&mut text, row.image_urls.len());
    text.push(':');
    for (i, url) in row.image_urls.iter().enumerate() {
        if i > 0 {
            text.push('\x1e');
        }
        text.push_str(url);
    }
    text.push(SEP);
    push_integer(&mut text, row.attributes.len());
    text.push(':');
    for (name, value) in row.attributes {
        field(&mut text, Some(name));
        field(&mut text, Some(value));
    }
    text.push(SEP);
    text.push(if row.listed { 'L' } else { 'D' });
    text.push(SEP);
    push_integer(&mut text, row.modified_at.timestamp_micros());
    text.push(SEP);
    field(&mut text, Some(row.object_key));
    text.push(SEP);
    field(&mut text, Some(row.object_etag));
    text.push(SEP);
    push_integer(&mut text, row.row_number);
    text
}

/// The reconcile digest of a catalog row (lower-case hex md5). The worker computes many at
/// once ([`catalog_digests`]); this is one row's, by definition the same.
pub fn catalog_digest(row: &DigestFields<'_>) -> String {
    digest_hex(Md5::digest(digest_text(row).as_bytes()).into())
}

/// [`catalog_digest`] of each row, in order.
pub fn catalog_digests<'a>(rows: impl IntoIterator<Item = DigestFields<'a>>) -> Vec<String> {
    in_groups(
        rows,
        |row| digest_text(&row).into_bytes(),
        |messages| md5_many(messages).into_iter().map(digest_hex).collect(),
    )
}

/// Hashes each item's message (`encode`), many at once ([`crate::hash_lanes`]): `hash_many`
/// takes a group's messages, so only a group's are held at a time.
fn in_groups<T, H>(
    items: impl IntoIterator<Item = T>,
    encode: impl Fn(T) -> Vec<u8>,
    hash_many: impl Fn(&[&[u8]]) -> Vec<H>,
) -> Vec<H> {
    const GROUP: usize = 64;
    let items = items.into_iter();
    let mut hashes = Vec::with_capacity(items.size_hint().0);
    let mut group: Vec<Vec<u8>> = Vec::with_capacity(GROUP);
    let hash_group = |group: &mut Vec<Vec<u8>>, hashes: &mut Vec<H>| {
        let messages: Vec<&[u8]> = group.iter().map(Vec::as_slice).collect();
        hashes.extend(hash_many(&messages));
        group.clear();
    };
    for item in items {
        group.push(encode(item));
        if group.len() == GROUP {
            hash_group(&mut group, &mut hashes);
        }
    }
    hash_group(&mut group, &mut hashes);
    hashes
}

fn digest_hex(md5: [u8; 16]) -> String {
    let mut hex = [0u8; 32];
    hex::encode_to_slice(md5, &mut hex).expect("32 hex digits hold 16 bytes");
    String::from_utf8(hex.to_vec()).expect("hex digits are ASCII")
}

/// Decimal digits without the formatting machinery: the digest text of every written row
/// holds a dozen numbers.
fn push_integer(text: &mut String, value: impl itoa::Integer) {
    text.push_str(itoa::Buffer::new().format(value));
}

/// Appends one field of the content encoding: `0`, or `1`, its length (u64, little-endian)
/// and its bytes.
fn hash_field(encoding: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => encoding.push(0),
        Some(text) => {
            encoding.push(1);
            encoding.extend_from_slice(&(text.len() as u64).to_le_bytes());
            encoding.extend_from_slice(text.as_bytes());
        }
    }
}

fn hash_number(encoding: &mut Vec<u8>, value: Option<Decimal>) {
    match value {
        None => encoding.push(0),
        // By value: `1.50` and `1.5` are the same price, so repeating it changes nothing.
        Some(value) => {
            encoding.push(1);
            encoding.extend_from_slice(&value.normalize().serialize());
        }
    }
}

/// The content fields of an item (everything but its version and listing).
///
/// The encoding is built whole and hashed in one call: BLAKE3's incremental `update` costs
/// more per call than hashing a short field's bytes, and an item has some forty fields and
/// separators. The bytes are the ones the streaming form fed it, so stored hashes stay valid.
/// The worker hashes many items at once ([`content_hashes`]); this is one item's, by
/// definition the same.
pub fn content_hash(item: &ValidItem) -> [u8; 16] {
    first_16(blake3::hash(&content_encoding(item)).as_bytes())
}

/// [`content_hash`] of each item, in order.
pub fn content_hashes<'a>(items: impl IntoIterator<Item = &'a ValidItem>) -> Vec<[u8; 16]> {
    in_groups(items, content_encoding, |messages| {
        blake3_many(messages).iter().map(first_16).collect()
    })
}

fn first_16(hash: &[u8; 32]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&hash[..16]);
    out
}

fn content_encoding(item: &ValidItem) -> Vec<u8> {
    let text_len = item.sku.len()
        + item.name.len()
        + item.brand.as_ref().map_or(0, String::len)
        + item.category.as_ref().map_or(0, String::len)
        + item.description.as_ref().map_or(0, String::len)
        + item.currency.len()
        + item.product_url.len()
        + item.image_urls.iter().map(String::len).sum::<usize>()
        + item
            .attributes
            .iter()
            .map(|(name, value)| name.len() + value.len())
            .sum::<usize>();
    let fields = 12 + item.image_urls.len() + 2 * item.attributes.len();
    let mut encoding = Vec::with_capacity(text_len + 9 * fields + 2 * 17);
    hash_field(&mut encoding, Some(&item.sku));
    hash_field(&mut encoding, Some(&item.name));
    hash_field(&mut encoding, item.brand.as_deref());
    hash_field(&mut encoding, item.category.as_deref());
    hash_field(&mut encoding, item.description.as_deref());
    hash_number(&mut encoding, item.price);
    hash_field(&mut encoding, Some(&item.currency));
    hash_number(&mut encoding, item.weight_grams);
    hash_field(&mut encoding, item.availability.map(|a| a.as_str()));
    hash_field(&mut encoding, Some(&item.product_url));
    encoding.extend_from_slice(&(item.image_urls.len() as u64).to_le_bytes());
    for url in &item.image_urls {
        hash_field(&mut encoding, Some(url));
    }
    encoding.extend_from_slice(&(item.attributes.len() as u64).to_le_bytes());
    for (name, value) in &item.attributes {
        hash_field(&mut encoding, Some(name));
        hash_field(&mut encoding, Some(value));
    }
    encoding
}

/// The mention hash of a sku field as read (see the module's documentation).
pub fn mention_hash(sku: &str) -> i64 {
    let digest = blake3::hash(sku.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    i64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Availability;

    fn item() -> ValidItem {
        ValidItem {
            sku: "A-1".into(),
            name: "Alpha".into(),
            product_url: "https://shop.example/a".into(),
            brand: Some("Acme".into()),
            category: None,
            description: None,
            price: Some(Decimal::new(1299, 2)),
            currency: "USD".into(),
            weight_grams: Some(Decimal::new(28_349_523, 6)),
            availability: Some(Availability::InStock),
            image_urls: vec!["https://cdn.example/a.jpg".into()],
            attributes: BTreeMap::from([("Color".into(), "red".into())]),
        }
    }

    #[test]
    fn millionths_round_half_away_from_zero() {
        assert_eq!(micros(Some(Decimal::new(129_950, 2))), Some(1_299_500_000));
        assert_eq!(micros(Some(Decimal::new(10_000_005, 7))), Some(1_000_001));
        assert_eq!(micros(Some(Decimal::new(10_000_015, 7))), Some(1_000_002));
        assert_eq!(micros(None), None);
    }

    /// The text Postgres' `catalog_item_digest()` and ClickHouse's expression hash; every
    /// reconcile recomputes it in both stores, which checks the three agree.
    #[test]
    fn the_digest_text_covers_every_field_length_prefixed() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        let item = item();
        let row = DigestFields::of_item(&item, at, "k.csv", "\"e\"", 7);
        let text = digest_text(&row);
        assert_eq!(
            text,
            "3:A-1\x1f5:Alpha\x1f4:Acme\x1fN\x1fN\x1f12990000\x1f3:USD\x1f28349523\x1f\
             8:in_stock\x1f22:https://shop.example/a\x1f1:https://cdn.example/a.jpg\x1f\
             1:5:Color3:red\x1fL\x1f1700000000123000\x1f5:k.csv\x1f3:\"e\"\x1f7"
        );
        let expected: String = Md5::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(catalog_digest(&row), expected);
        let delisted = DigestFields {
            listed: false,
            ..DigestFields::of_item(&item, at, "k.csv", "\"e\"", 7)
        };
        assert_ne!(catalog_digest(&delisted), expected);
    }

    /// Rows of a generated chunk, several groups of them: each digest and content hash is its
    /// row's.
    #[test]
    fn digests_and_hashes_in_groups_are_each_rows_own() {
        use generator::{GeneratorConfig, write_catalog};
        let mut object = Vec::new();
        let config = GeneratorConfig {
            rows: 300,
            ..Default::default()
        };
        write_catalog(&config, &mut object).unwrap();
        let header_end = object.iter().position(|&b| b == b'\n').unwrap();
        let header = crate::chunk::parse_header(&object[..header_end]).unwrap();
        let parsed = crate::chunk::parse_chunk(&header, &object[header_end + 1..], 2);
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let rows = || {
            parsed.valid.iter().map(|row| {
                DigestFields::of_item(&row.item, at, "k.csv", "\"e\"", row.row_number as i64)
            })
        };
        let one_by_one: Vec<String> = rows().map(|row| catalog_digest(&row)).collect();
        assert!(one_by_one.len() > 200, "{}", one_by_one.len());
        assert_eq!(catalog_digests(rows()), one_by_one);
        let items = || parsed.valid.iter().map(|row| &row.item);
        let hashes: Vec<[u8; 16]> = items().map(content_hash).collect();
        assert_eq!(content_hashes(items()), hashes);
    }

    #[test]
    fn null_and_empty_and_shifted_values_digest_differently() {
        let at = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let empty = BTreeMap::new();
        let base = DigestFields {
            sku: "A",
            name: "n",
            brand: None,
            category: Some(""),
            description: None,
            price: None,
            currency: "USD",
            weight_grams: None,
            availability: None,
            product_url: "https://x.example/",
            image_urls: &[],
            attributes: &empty,
            listed: true,
            modified_at: at,
            object_key: "k",
            object_etag: "e",
            row_number: 1,
        };
        let shifted = DigestFields {
            brand: Some(""),
            category: None,
            ..base
        };
        assert_ne!(catalog_digest(&base), catalog_digest(&shifted));
        let one_empty_image = [String::new()];
        let with_image = DigestFields {
            image_urls: &one_empty_image,
            ..base
        };
        assert_ne!(catalog_digest(&base), catalog_digest(&with_image));
    }

    #[test]
    fn every_content_field_and_every_boundary_counts_but_not_the_scale() {
        let base = content_hash(&item());
        assert_eq!(base, content_hash(&item()));
        let mut rescaled = item();
        rescaled.price = Some(Decimal::new(129_900, 4));
        assert_eq!(content_hash(&rescaled), base, "12.9900 is the price 12.99");
        type Change = Box<dyn Fn(&mut ValidItem)>;
        let changes: Vec<Change> = vec![
            Box::new(|i| i.name.push('!')),
            Box::new(|i| i.brand = None),
            Box::new(|i| i.category = Some(String::new())),
            Box::new(|i| i.price = Some(Decimal::new(12990, 3) + Decimal::new(1, 3))),
            Box::new(|i| i.weight_grams = None),
            Box::new(|i| i.availability = Some(Availability::OutOfStock)),
            Box::new(|i| i.image_urls.push(String::new())),
            Box::new(|i| {
                i.attributes.insert("Size".into(), "M".into());
            }),
            // The same characters split differently between two fields.
            Box::new(|i| {
                i.brand = Some("Acm".into());
                i.category = Some("e".into());
            }),
        ];
        for (n, change) in changes.iter().enumerate() {
            let mut changed = item();
            change(&mut changed);
            assert_ne!(content_hash(&changed), base, "change {n}");
        }
    }

    /// Catalogs store these hashes: a different value for the same item would make the next
    /// snapshot rewrite every item as changed.
    #[test]
    fn the_content_hash_of_an_item_is_pinned() {
        assert_eq!(
            hex::encode(content_hash(&item())),
            "c390cedfdff1ed411f0626a37886f120"
        );
    }

    #[test]
    fn mention_hashes_are_stable() {
        assert_eq!(mention_hash("A-1"), mention_hash("A-1"));
        assert_ne!(mention_hash("A-1"), mention_hash("A-2"));
    }
}
