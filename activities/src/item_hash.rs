//! The content hash of a catalog item: every field the catalog stores, so a snapshot that
//! repeats an item unchanged leaves its row alone. 128 bits of SHA-256 over a length-prefixed
//! encoding: two different items never share a hash in practice, and a false "unchanged" would
//! lose a change, so nothing weaker is used.

use sha2::{Digest, Sha256};

use crate::contract::ValidItem;

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

    use rust_decimal::Decimal;

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
