//! What identifies a catalog item's content:
//!
//! - the content hash: every field the catalog stores, so a snapshot that repeats an item
//!   unchanged leaves its row alone. 128 bits of SHA-256 over a length-prefixed encoding: two
//!   different items never share a hash in practice, and a false "unchanged" would lose a
//!   change, so nothing weaker is used;
//! - the catalog digest: md5 of the fields reconcile compares between the stores (sku, price,
//!   currency, availability, version), byte for byte the text Postgres' `catalog_digest()` and
//!   ClickHouse's expression hash, so each store can check its rows against it.

use chrono::{DateTime, Utc};
use md5::Md5;
use rust_decimal::{Decimal, RoundingStrategy};
use sha2::{Digest, Sha256};

use crate::contract::ValidItem;

/// Prices in millionths, rounded half away from zero as Postgres' `round(price, 6)` does:
/// ClickHouse stores `Decimal(18, 6)`, and digests compare this figure. Prices are below
/// 10,000,000 by contract, so it never overflows.
pub fn price_micros(price: Option<Decimal>) -> Option<i64> {
    price.and_then(|p| {
        let mut scaled = p.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero);
        scaled.rescale(6);
        i64::try_from(scaled.mantissa()).ok()
    })
}

/// The reconcile digest of an item as written from an object version and row.
// One argument per parameter of Postgres' `catalog_digest()`, in its order: the two must hash
// the same text, and reading them side by side is how that is checked.
#[allow(clippy::too_many_arguments)]
pub fn catalog_digest(
    sku: &str,
    price: Option<Decimal>,
    currency: &str,
    availability: Option<&str>,
    modified_at: DateTime<Utc>,
    object_key: &str,
    etag: &str,
    row_number: i64,
) -> String {
    use std::fmt::Write;
    let mut text = String::with_capacity(sku.len() + object_key.len() + etag.len() + 64);
    let _ = write!(
        text,
        "{sku}\x1f{}\x1f{currency}\x1f{}\x1f{}\x1f{object_key}\x1f{etag}\x1f{row_number}",
        price_micros(price)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        availability.unwrap_or_default(),
        modified_at.timestamp_micros(),
    );
    let mut hex = String::with_capacity(32);
    for byte in Md5::digest(text.as_bytes()) {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn field(hasher: &mut Sha256, value: Option<&str>) {
    match value {
        None => hasher.update([0u8]),
        Some(text) => {
            hasher.update([1u8]);
            hasher.update((text.len() as u64).to_le_bytes());
            hasher.update(text.as_bytes());
        }
    }
}

pub fn content_hash(item: &ValidItem) -> [u8; 16] {
    let mut hasher = Sha256::new();
    field(&mut hasher, Some(&item.sku));
    field(&mut hasher, Some(&item.name));
    field(&mut hasher, item.brand.as_deref());
    field(&mut hasher, item.category.as_deref());
    field(&mut hasher, item.description.as_deref());
    field(&mut hasher, item.price.map(|p| p.to_string()).as_deref());
    field(&mut hasher, Some(&item.currency));
    field(
        &mut hasher,
        item.weight_grams.map(|w| w.to_string()).as_deref(),
    );
    field(&mut hasher, item.availability.map(|a| a.as_str()));
    field(&mut hasher, Some(&item.product_url));
    hasher.update((item.image_urls.len() as u64).to_le_bytes());
    for url in &item.image_urls {
        field(&mut hasher, Some(url));
    }
    hasher.update((item.attributes.len() as u64).to_le_bytes());
    for (name, value) in &item.attributes {
        field(&mut hasher, Some(name));
        field(&mut hasher, Some(value));
    }
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&digest[..16]);
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

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
            weight_grams: None,
            availability: Some(Availability::InStock),
            image_urls: vec!["https://cdn.example/a.jpg".into()],
            attributes: BTreeMap::from([("Color".into(), "red".into())]),
        }
    }

    #[test]
    fn prices_round_half_away_from_zero_to_millionths() {
        assert_eq!(
            price_micros(Some(Decimal::new(129_950, 2))),
            Some(1_299_500_000)
        );
        assert_eq!(
            price_micros(Some(Decimal::new(10_000_005, 7))),
            Some(1_000_001)
        );
        assert_eq!(
            price_micros(Some(Decimal::new(10_000_015, 7))),
            Some(1_000_002)
        );
        assert_eq!(price_micros(None), None);
    }

    /// The same text Postgres' `catalog_digest()` hashes (checked against Postgres by every
    /// reconcile, which recomputes it there).
    #[test]
    fn the_digest_hashes_the_fields_reconcile_compares() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_000_000).unwrap();
        let digest = catalog_digest(
            "A-1",
            Some(Decimal::new(1299, 2)),
            "USD",
            Some("in_stock"),
            at,
            "k.csv",
            "\"e\"",
            7,
        );
        let text = "A-1\x1f12990000\x1fUSD\x1fin_stock\x1f1700000000123000\x1fk.csv\x1f\"e\"\x1f7";
        let expected: String = Md5::digest(text.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, expected);
        let no_price = catalog_digest("A-1", None, "USD", None, at, "k.csv", "\"e\"", 7);
        assert_ne!(no_price, digest);
    }

    #[test]
    fn every_field_and_every_boundary_counts() {
        let base = content_hash(&item());
        assert_eq!(base, content_hash(&item()));
        type Change = Box<dyn Fn(&mut ValidItem)>;
        let changes: Vec<Change> = vec![
            Box::new(|i| i.name.push('!')),
            Box::new(|i| i.brand = None),
            Box::new(|i| i.category = Some(String::new())),
            Box::new(|i| i.price = Some(Decimal::new(12990, 3))),
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
}
