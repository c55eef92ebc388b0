//! Drafting objects: a catalog of products that evolves from one scrape to the next, and each
//! scrape's header and records as field bytes together with what the validator makes of them.
//!
//! Every value is built from its normalised form outwards (padding, spelling, symbols, quoting
//! are added to a known value), and only with rules read in the production validator, so the
//! expected [`Record`] is right by construction rather than by re-implementing the validator.

use std::collections::BTreeMap;

use rust_decimal::{Decimal, RoundingStrategy};

use crate::model::{Availability, Failure, InvalidRecord, Item, Record};
use crate::rng::Rng;

/// Products a catalog holds at most, leaving room for duplicates and invalid records within the
/// 60 records of an object.
const MAX_PRODUCTS: usize = 45;
const MAX_RECORDS: usize = 60;
const MIN_RECORDS: usize = 5;
/// A catalog this large before a mass-vanish scrape lets the guard trip (more than 10 items and
/// more than a fifth vanish).
const PRODUCTS_BEFORE_MASS_VANISH: usize = 16;
const SKU_POOL: usize = 160;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Column {
    Sku,
    Name,
    ProductUrl,
    Brand,
    Category,
    Description,
    Price,
    Currency,
    Weight,
    WeightUnit,
    Availability,
    ImageUrls,
    /// Index into the scenario's attribute names.
    Attribute(usize),
}

const REQUIRED_COLUMNS: [Column; 3] = [Column::Sku, Column::Name, Column::ProductUrl];
const OPTIONAL_COLUMNS: [Column; 9] = [
    Column::Brand,
    Column::Category,
    Column::Description,
    Column::Price,
    Column::Currency,
    Column::Weight,
    Column::WeightUnit,
    Column::Availability,
    Column::ImageUrls,
];
/// None of them is a known column name or alias in any case.
const ATTRIBUTE_NAMES: [&str; 4] = ["Color", "Size", "Material", "Season"];

impl Column {
    /// Header names the contract maps to the column, aliases included.
    fn spellings(self) -> &'static [&'static str] {
        match self {
            Self::Sku => &["sku"],
            Self::Name => &["name"],
            Self::ProductUrl => &["product_url", "url"],
            Self::Brand => &["brand"],
            Self::Category => &["category"],
            Self::Description => &["description"],
            Self::Price => &["price"],
            Self::Currency => &["currency"],
            Self::Weight => &["weight"],
            Self::WeightUnit => &["weight_unit", "weight_units"],
            Self::Availability => &["availability"],
            Self::ImageUrls => &["image_urls", "images"],
            Self::Attribute(_) => &[],
        }
    }

    /// Where the validator reports the column's rule failures among a record's failures (after
    /// every `encoding_invalid`, which come first in column order).
    fn rule_order(self) -> usize {
        match self {
            Self::Sku => 0,
            Self::Name => 1,
            Self::ProductUrl => 2,
            Self::Brand => 3,
            Self::Category => 4,
            Self::Description => 5,
            Self::Price => 6,
            Self::Currency => 7,
            Self::Weight => 8,
            Self::WeightUnit => 9,
            Self::ImageUrls => 10,
            Self::Availability | Self::Attribute(_) => 11,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WeightUnit {
    Grams,
    Kilograms,
    Ounces,
    Pounds,
}

impl WeightUnit {
    const ALL: [Self; 4] = [Self::Grams, Self::Kilograms, Self::Ounces, Self::Pounds];

    fn grams_per_unit(self) -> Decimal {
        match self {
            Self::Grams => Decimal::ONE,
            Self::Kilograms => Decimal::ONE_THOUSAND,
            Self::Ounces => Decimal::new(28_349_523_125, 9),
            Self::Pounds => Decimal::new(45_359_237, 5),
        }
    }

    /// Only the spellings the contract lists (g, kg, oz, lb, grams, kilograms, ounces, lbs), in
    /// several cases.
    fn spellings(self) -> &'static [&'static str] {
        match self {
            Self::Grams => &["g", "G", "grams", "Grams"],
            Self::Kilograms => &["kg", "KG", "Kg", "kilograms", "Kilograms"],
            Self::Ounces => &["oz", "OZ", "ounces", "Ounces"],
            Self::Pounds => &["lb", "LB", "lbs", "Lbs"],
        }
    }
}

/// Amounts as written; 0.05 lb (22.6796185 g) is a midpoint at the 7th decimal, where rounding
/// half away from zero and banker's rounding disagree.
const WEIGHT_AMOUNTS: [&str; 11] = [
    "0.5", "1", "1.5", "2.25", "250", "12", "0.75", "3", "0.05", "0.001", "1000",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Weight {
    amount: Decimal,
    unit: WeightUnit,
}

impl Weight {
    /// Exact grams rounded to 6 decimals half away from zero, trailing zeros dropped (the
    /// validator's rule once the team's rounding change lands).
    fn grams(self) -> Decimal {
        (self.amount * self.unit.grams_per_unit())
            .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    }
}

/// Spellings that `Availability::parse` in the validator maps to each value.
fn availability_spellings(availability: Availability) -> &'static [&'static str] {
    match availability {
        Availability::InStock => &[
            "in_stock",
            "In Stock",
            "InStock",
            "in-stock",
            "IN STOCK",
            "available",
            "Available now",
            "yes",
            "https://schema.org/InStock",
            "limited stock",
            "Online only",
        ],
        Availability::OutOfStock => &[
            "out_of_stock",
            "Out of Stock",
            "sold out",
            "Sold Out",
            "unavailable",
            "not available",
            "no",
            "https://schema.org/OutOfStock",
            "temporarily out of stock",
        ],
        Availability::Preorder => &[
            "preorder",
            "Pre-Order",
            "pre-sale",
            "backorder",
            "Backordered",
            "http://schema.org/PreOrder",
        ],
        Availability::Discontinued => &[
            "discontinued",
            "Discontinued",
            "No longer available",
            "https://schema.org/Discontinued",
        ],
        Availability::Unknown => &["ask the shop", "3 left", "coming soon?", "unknown"],
    }
}

const NAME_ADJECTIVES: [&str; 8] = [
    "Trail", "Alpine", "Café", "Nordic", "Urban", "Crème", "Tōkyō", "Coastal",
];
const NAME_NOUNS: [&str; 7] = [
    "Hoodie",
    "Backpack",
    "Jacket",
    "Mug",
    "Tent",
    "Sock Pack",
    "Bottle",
];
/// Commas, quotes, LF and CRLF make the field quoted; the others are multi-byte UTF-8.
const NAME_SUFFIXES: [&str; 9] = [
    "",
    "",
    "",
    ", Large",
    " \"Pro\"",
    " 日本",
    "\nLimited edition",
    "\r\nTwo-line name",
    " — 2 pack 🎉",
];
const BRANDS: [&str; 5] = [
    "Cotopaxi",
    "Patagonia",
    "Fjällräven",
    "Acme, Inc.",
    "O'Neill",
];
const CATEGORIES: [&str; 5] = [
    "Apparel > Jackets",
    "Bags",
    "Kitchen",
    "Camping/Tents",
    "Accessories",
];
const DESCRIPTIONS: [&str; 6] = [
    "Warm, light.\nSecond line.",
    "Fits \"true to size\".",
    "Water-resistant — 20 L.",
    "Line one\r\nLine two",
    "Ünïcödé text, naïve façade",
    "Plain description",
];
const ATTRIBUTE_VALUES: [&str; 8] = [
    "Red",
    "Forest Green",
    "XL",
    "42",
    "100% cotton",
    "Nylon, ripstop",
    "Größe M",
    "winter",
];
const CURRENCIES: [&str; 5] = ["USD", "EUR", "GBP", "CAD", "JPY"];
const PADDING: [&str; 3] = [" ", "  ", "\t"];

#[derive(Debug, Clone, PartialEq)]
struct Product {
    sku: String,
    name: String,
    brand: Option<String>,
    category: Option<String>,
    description: Option<String>,
    price: Option<Decimal>,
    /// Upper-case code; `None` leaves the field empty (the validator's default applies).
    currency: Option<&'static str>,
    weight: Option<Weight>,
    availability: Option<Availability>,
    product_url: String,
    image_urls: Vec<String>,
    /// By attribute index; `None` leaves the cell empty.
    attributes: Vec<Option<String>>,
}

/// The header record: each column and its field as read.
#[derive(Debug, Clone)]
pub(super) struct Header {
    pub(super) columns: Vec<Column>,
    pub(super) fields: Vec<Vec<u8>>,
}

impl Header {
    fn has(&self, column: Column) -> bool {
        self.columns.contains(&column)
    }

    fn position(&self, column: Column) -> Option<usize> {
        self.columns.iter().position(|&c| c == column)
    }
}

/// A data record: its fields as the splitter reads them (padding and all), and the record the
/// validator makes of them.
#[derive(Debug, Clone)]
pub(super) struct DraftRecord {
    pub(super) fields: Vec<Vec<u8>>,
    pub(super) record: Record,
}

#[derive(Debug, Clone)]
pub(super) struct DraftObject {
    pub(super) header: Header,
    pub(super) records: Vec<DraftRecord>,
    pub(super) bad_header: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ObjectKind {
    /// The next scrape: some products changed, some gone, some new.
    Next,
    /// A truncated scrape: almost every product is gone.
    MassVanish,
    /// The next scrape's header lacks the `name` column; the catalog does not move on.
    BadHeader,
}

/// The source's catalog as scrapes see it, carried from one object to the next.
pub(super) struct Catalog {
    attribute_names: Vec<&'static str>,
    optional_columns: Vec<Column>,
    /// The products of the last scrape.
    current: Vec<Product>,
    /// Products that were in an earlier scrape and are not now; they may come back.
    retired: Vec<Product>,
    unused_skus: Vec<String>,
    /// Keeps the catalog large enough for a later mass vanish to trip the guard.
    min_products: usize,
}

impl Catalog {
    pub(super) fn new(rng: &mut Rng, mass_vanish_planned: bool) -> Self {
        let attribute_count = rng.between(0..=2);
        let mut attribute_names = ATTRIBUTE_NAMES.to_vec();
        rng.shuffle(&mut attribute_names);
        attribute_names.truncate(attribute_count);
        let mut unused_skus: Vec<String> = (0..SKU_POOL).map(sku_of).collect();
        rng.shuffle(&mut unused_skus);
        let min_products = if mass_vanish_planned {
            PRODUCTS_BEFORE_MASS_VANISH
        } else {
            MIN_RECORDS
        };
        let mut catalog = Self {
            attribute_names,
            optional_columns: Vec::new(),
            current: Vec::new(),
            retired: Vec::new(),
            unused_skus,
            min_products,
        };
        catalog.optional_columns = catalog.draw_optional_columns(rng);
        let initial = rng.between(min_products..=32);
        let products = (0..initial)
            .filter_map(|_| catalog.new_product(rng))
            .collect();
        catalog.current = products;
        catalog
    }

    /// Drafts the next object. The first call drafts the initial catalog as it is.
    pub(super) fn next_object(
        &mut self,
        rng: &mut Rng,
        kind: ObjectKind,
        first: bool,
    ) -> DraftObject {
        if rng.percent(25) {
            self.optional_columns = self.draw_optional_columns(rng);
        }
        if kind == ObjectKind::BadHeader {
            let columns: Vec<Column> = self
                .columns(rng)
                .into_iter()
                .filter(|&c| c != Column::Name)
                .collect();
            let header = self.header(rng, columns);
            let records = self
                .current
                .iter()
                .map(|product| self.valid_record(rng, &header, product))
                .collect();
            return DraftObject {
                header,
                records,
                bad_header: true,
            };
        }
        let dropped = if first {
            Vec::new()
        } else {
            self.evolve(rng, kind)
        };
        let columns = self.columns(rng);
        let header = self.header(rng, columns);
        let records = self.records(rng, &header, &dropped);
        DraftObject {
            header,
            records,
            bad_header: false,
        }
    }

    fn draw_optional_columns(&self, rng: &mut Rng) -> Vec<Column> {
        let mut columns: Vec<Column> = OPTIONAL_COLUMNS
            .into_iter()
            .filter(|_| rng.percent(55))
            .collect();
        // A weight without its unit is invalid (`weight_unit_missing`): valid records need both.
        if columns.contains(&Column::Weight) && !columns.contains(&Column::WeightUnit) {
            columns.push(Column::WeightUnit);
        }
        columns.extend((0..self.attribute_names.len()).map(Column::Attribute));
        columns
    }

    /// This object's column order: usually required columns first, sometimes shuffled.
    fn columns(&self, rng: &mut Rng) -> Vec<Column> {
        let mut columns = REQUIRED_COLUMNS.to_vec();
        columns.extend(&self.optional_columns);
        if rng.percent(35) {
            rng.shuffle(&mut columns);
        }
        columns
    }

    fn header(&self, rng: &mut Rng, columns: Vec<Column>) -> Header {
        let fields = columns
            .iter()
            .map(|&column| {
                let name = match column {
                    // Attribute keys are the names as written, so their case stays put.
                    Column::Attribute(index) => self.attribute_names[index].to_owned(),
                    known => {
                        let spelling = *rng.pick(known.spellings());
                        random_case(rng, spelling)
                    }
                };
                pad(rng, name.as_bytes())
            })
            .collect();
        Header { columns, fields }
    }

    fn new_product(&mut self, rng: &mut Rng) -> Option<Product> {
        let sku = self.unused_skus.pop()?;
        let slug = sku.to_ascii_lowercase();
        let product_url = match rng.below(4) {
            0 => format!("https://shop.example.com/p/{slug}"),
            1 => format!("http://www.example.org/item?id={slug}&ref=feed"),
            2 => format!("HTTPS://Shop.Example.COM/p/{slug}#reviews"),
            _ => format!("https://xn--bcher-kva.example/p/{slug}"),
        };
        let image_urls = (0..rng.between(0..=3))
            .map(|i| match rng.below(3) {
                0 => format!("https://cdn.example.com/img/{slug}-{i}.jpg"),
                1 => format!("http://93.184.216.34/i/{slug}/{i}.png"),
                _ => format!("https://images.example.net/{i}.webp?w=640"),
            })
            .collect();
        Some(Product {
            sku,
            name: draw_name(rng),
            brand: rng.percent(70).then(|| rng.pick(&BRANDS).to_string()),
            category: rng.percent(60).then(|| rng.pick(&CATEGORIES).to_string()),
            description: rng.percent(50).then(|| rng.pick(&DESCRIPTIONS).to_string()),
            price: rng.percent(90).then(|| draw_price(rng)),
            currency: rng.percent(70).then(|| *rng.pick(&CURRENCIES)),
            weight: rng.percent(60).then(|| draw_weight(rng)),
            availability: rng.percent(80).then(|| *rng.pick(&Availability::ALL)),
            product_url,
            image_urls,
            attributes: (0..self.attribute_names.len())
                .map(|_| draw_attribute(rng))
                .collect(),
        })
    }

    /// Moves the catalog on to the next scrape; returns the products it no longer has.
    fn evolve(&mut self, rng: &mut Rng, kind: ObjectKind) -> Vec<Product> {
        let keep_percent = if kind == ObjectKind::MassVanish {
            0
        } else {
            80
        };
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for product in std::mem::take(&mut self.current) {
            if rng.percent(keep_percent) {
                kept.push(product);
            } else {
                dropped.push(product);
            }
        }
        if kind == ObjectKind::MassVanish {
            // A handful survive, so the scrape still looks like the shop.
            for _ in 0..rng.between(0..=3).min(dropped.len()) {
                let index = rng.below(dropped.len());
                kept.push(dropped.swap_remove(index));
            }
        }
        for product in &mut kept {
            if rng.percent(25) {
                change(rng, product, self.attribute_names.len());
            }
        }
        // Delisted items that come back are relisted.
        if kind == ObjectKind::Next && rng.percent(30) {
            for _ in 0..rng.between(1..=3).min(self.retired.len()) {
                let index = rng.below(self.retired.len());
                kept.push(self.retired.swap_remove(index));
            }
        }
        let new_products = match kind {
            ObjectKind::MassVanish => rng.between(0..=2),
            _ => rng.between(0..=6),
        };
        for _ in 0..new_products {
            kept.extend(self.new_product(rng));
        }
        let floor = match kind {
            ObjectKind::MassVanish => 1,
            _ => self.min_products,
        };
        while kept.len() < floor {
            match self.new_product(rng) {
                Some(product) => kept.push(product),
                None => break,
            }
        }
        while kept.len() > MAX_PRODUCTS {
            let index = rng.below(kept.len());
            dropped.push(kept.swap_remove(index));
        }
        self.current = kept;
        self.retired.extend(dropped.iter().cloned());
        dropped
    }

    /// The records of a scrape of the current catalog, in row order.
    fn records(&self, rng: &mut Rng, header: &Header, dropped: &[Product]) -> Vec<DraftRecord> {
        let mut products: Vec<&Product> = self.current.iter().collect();
        rng.shuffle(&mut products);
        let mut records: Vec<DraftRecord> = products
            .iter()
            .map(|product| {
                if rng.percent(8) {
                    self.invalid_record(rng, header, product, SkuKind::Kept)
                } else {
                    self.valid_record(rng, header, product)
                }
            })
            .collect();
        let has_room = |records: &Vec<DraftRecord>| records.len() < MAX_RECORDS;

        // Duplicates: next to their first record (from the last product back, so that the
        // positions of those before stay put), or about half the object away (another chunk,
        // likely). Sometimes with other content.
        let mut duplicated: Vec<(usize, Product)> = Vec::new();
        for (index, product) in products.iter().enumerate() {
            if rng.percent(12) {
                let mut variant = (*product).clone();
                if rng.percent(50) {
                    change(rng, &mut variant, self.attribute_names.len());
                }
                duplicated.push((index, variant));
            }
        }
        let (adjacent, far): (Vec<_>, Vec<_>) =
            duplicated.into_iter().partition(|_| rng.percent(50));
        for (index, variant) in adjacent.into_iter().rev() {
            if has_room(&records) {
                let record = self.valid_record(rng, header, &variant);
                records.insert(index + rng.below(2), record);
            }
        }
        for (index, variant) in far {
            if has_room(&records) {
                let record = self.valid_record(rng, header, &variant);
                let at = (index + records.len() / 2) % (records.len() + 1);
                records.insert(at, record);
            }
        }

        // Invalid records that mention a sku of the scrape, or one it dropped (which keeps that
        // item from being delisted).
        let mentionable: Vec<&Product> = products
            .iter()
            .copied()
            .chain(dropped.iter().filter(|_| rng.percent(40)))
            .collect();
        for _ in 0..rng.between(0..=3) {
            if has_room(&records) {
                let product = *rng.pick(&mentionable);
                let record = self.invalid_record(rng, header, product, SkuKind::Kept);
                records.insert(rng.below(records.len() + 1), record);
            }
        }
        // Records that mention no item: a broken sku, a wrong field count.
        let base = products[0];
        let unmentioning = rng
            .between(0..=2)
            .max(MIN_RECORDS.saturating_sub(records.len()));
        for _ in 0..unmentioning {
            if has_room(&records) {
                let record = self.invalid_record(rng, header, base, SkuKind::Broken);
                records.insert(rng.below(records.len() + 1), record);
            }
        }
        if rng.percent(12) && has_room(&records) {
            let product = *rng.pick(&mentionable);
            let record = self.field_count_record(rng, header, product);
            records.insert(rng.below(records.len() + 1), record);
        }
        if rng.percent(4) && has_room(&records) {
            records.insert(rng.below(records.len() + 1), whitespace_only_record());
        }
        records
    }

    fn valid_record(&self, rng: &mut Rng, header: &Header, product: &Product) -> DraftRecord {
        let mut item = Item {
            sku: product.sku.clone(),
            name: product.name.clone(),
            brand: None,
            category: None,
            description: None,
            price: None,
            currency: "USD".to_owned(),
            weight_grams: None,
            availability: None,
            product_url: product.product_url.clone(),
            image_urls: Vec::new(),
            attributes: BTreeMap::new(),
        };
        let fields = header
            .columns
            .iter()
            .map(|&column| match column {
                Column::Sku => pad(rng, product.sku.as_bytes()),
                Column::Name => pad(rng, product.name.as_bytes()),
                Column::ProductUrl => pad(rng, product.product_url.as_bytes()),
                Column::Brand => {
                    item.brand.clone_from(&product.brand);
                    optional_text(rng, product.brand.as_deref())
                }
                Column::Category => {
                    item.category.clone_from(&product.category);
                    optional_text(rng, product.category.as_deref())
                }
                Column::Description => {
                    item.description.clone_from(&product.description);
                    optional_text(rng, product.description.as_deref())
                }
                Column::Price => match product.price {
                    Some(price) => {
                        let (text, written) = write_price(rng, price);
                        item.price = Some(written);
                        pad(rng, text.as_bytes())
                    }
                    None => blank(rng),
                },
                Column::Currency => match product.currency {
                    Some(code) => {
                        code.clone_into(&mut item.currency);
                        let written = random_case(rng, code);
                        pad(rng, written.as_bytes())
                    }
                    None => blank(rng),
                },
                Column::Weight => match product.weight {
                    Some(weight) => {
                        item.weight_grams = Some(weight.grams());
                        pad(rng, weight.amount.to_string().as_bytes())
                    }
                    None => blank(rng),
                },
                Column::WeightUnit => match product.weight {
                    Some(weight) => {
                        let spelling = *rng.pick(weight.unit.spellings());
                        pad(rng, spelling.as_bytes())
                    }
                    // A unit without a weight is ignored, even one that is not a unit.
                    None if rng.percent(20) => pad(rng, b"stone"),
                    None => blank(rng),
                },
                Column::Availability => match product.availability {
                    Some(availability) => {
                        item.availability = Some(availability);
                        let spelling = rng.pick(availability_spellings(availability));
                        pad(rng, spelling.as_bytes())
                    }
                    None => blank(rng),
                },
                Column::ImageUrls => {
                    item.image_urls.clone_from(&product.image_urls);
                    write_image_urls(rng, &product.image_urls)
                }
                Column::Attribute(index) => match &product.attributes[index] {
                    Some(value) => {
                        item.attributes
                            .insert(self.attribute_names[index].to_owned(), value.clone());
                        pad(rng, value.as_bytes())
                    }
                    None => blank(rng),
                },
            })
            .collect();
        DraftRecord {
            fields,
            record: Record::Valid(item),
        }
    }

    /// A record of `product` made invalid by one or two broken fields. With `SkuKind::Kept` it
    /// still mentions the product's sku (and sometimes carries NUL bytes in it); with
    /// `SkuKind::Broken` its sku is what breaks it, so it mentions no item.
    fn invalid_record(
        &self,
        rng: &mut Rng,
        header: &Header,
        product: &Product,
        sku: SkuKind,
    ) -> DraftRecord {
        let mut fields = self.valid_record(rng, header, product).fields;
        let mut breaks: Vec<Break> = Vec::new();
        let sku_index = header.position(Column::Sku).expect("a good header has sku");
        match sku {
            SkuKind::Kept => {
                if rng.percent(10) {
                    let mut with_nul = product.sku.clone().into_bytes();
                    with_nul.insert(rng.below(with_nul.len() + 1), 0);
                    fields[sku_index] = pad(rng, &with_nul);
                }
            }
            SkuKind::Broken => breaks.push(sku_break(rng)),
        }
        let wanted = match breaks.len() {
            0 => rng.between(1..=2),
            sku_breaks => sku_breaks + rng.between(0..=1),
        };
        let mut candidates = field_breaks(rng, header);
        rng.shuffle(&mut candidates);
        for candidate in candidates {
            if breaks.len() >= wanted {
                break;
            }
            let clashes = candidate.values.iter().any(|(column, _)| {
                breaks
                    .iter()
                    .any(|taken| taken.values.iter().any(|(other, _)| other == column))
            });
            if !clashes {
                breaks.push(candidate);
            }
        }
        let mut failures: Vec<((usize, usize), Failure)> = Vec::new();
        for broken in breaks {
            for (column, value) in broken.values {
                let index = header.position(column).expect("breaks use present columns");
                fields[index] = pad(rng, &value);
            }
            let (column, failure) = broken.failure;
            let rank = match failure.code.as_str() {
                "encoding_invalid" => (0, header.position(column).expect("present column")),
                _ => (1, column.rule_order()),
            };
            failures.push((rank, failure));
        }
        failures.sort_by_key(|(rank, _)| *rank);
        let mentioned_sku = read_sku(&fields[sku_index]);
        DraftRecord {
            fields,
            record: Record::Invalid(InvalidRecord {
                mentioned_sku,
                failures: failures.into_iter().map(|(_, failure)| failure).collect(),
            }),
        }
    }

    /// A record with fields missing or extra: reported alone as `field_count`, and it mentions
    /// whatever field sits at the sku column's position.
    fn field_count_record(&self, rng: &mut Rng, header: &Header, product: &Product) -> DraftRecord {
        let mut fields = self.valid_record(rng, header, product).fields;
        // Keep two fields at least: a record of one empty field would be a blank line.
        let removable = fields.len() - 2;
        if rng.percent(50) && removable > 0 {
            for _ in 0..rng.between(1..=removable.min(2)) {
                fields.remove(rng.below(fields.len()));
            }
        } else {
            for _ in 0..rng.between(1..=2) {
                fields.push(pad(rng, b"extra"));
            }
        }
        let sku_index = header.position(Column::Sku).expect("a good header has sku");
        let mentioned_sku = fields.get(sku_index).and_then(|field| read_sku(field));
        DraftRecord {
            fields,
            record: Record::Invalid(InvalidRecord {
                mentioned_sku,
                failures: vec![Failure::new("record", "field_count")],
            }),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SkuKind {
    Kept,
    Broken,
}

/// One way to break a record: field values (before padding) and the failure they cause.
struct Break {
    values: Vec<(Column, Vec<u8>)>,
    failure: (Column, Failure),
}

impl Break {
    fn one(column: Column, value: &[u8], field: &str, code: &str) -> Self {
        Self {
            values: vec![(column, value.to_vec())],
            failure: (column, Failure::new(field, code)),
        }
    }
}

fn sku_break(rng: &mut Rng) -> Break {
    match rng.below(3) {
        0 => Break::one(Column::Sku, b"", "sku", "sku_missing"),
        1 => {
            let value = rng.pick(&["bad sku!", "SKÜ-9", "a,b", "x#1"]);
            Break::one(Column::Sku, value.as_bytes(), "sku", "sku_charset")
        }
        _ => Break::one(Column::Sku, b"SKU-\xff1", "sku", "encoding_invalid"),
    }
}

/// Every break the header's columns allow, except those of the sku.
fn field_breaks(rng: &mut Rng, header: &Header) -> Vec<Break> {
    let mut breaks = vec![
        Break::one(Column::Name, b"", "name", "name_missing"),
        Break::one(Column::Name, b"Caf\xe9 Mug", "name", "encoding_invalid"),
        Break::one(Column::ProductUrl, b"", "product_url", "url_missing"),
    ];
    let private_host = rng.pick(&[
        "http://192.168.1.20/p/1",
        "http://10.0.0.8/item",
        "http://localhost/p",
        "http://127.0.0.1:8080/x",
        "http://[::1]/p",
        "http://169.254.169.254/latest",
    ]);
    breaks.push(Break::one(
        Column::ProductUrl,
        private_host.as_bytes(),
        "product_url",
        "url_private_host",
    ));
    let scheme = rng.pick(&["ftp://shop.example.com/p/1", "javascript:alert(1)"]);
    breaks.push(Break::one(
        Column::ProductUrl,
        scheme.as_bytes(),
        "product_url",
        "url_scheme",
    ));
    let relative = rng.pick(&["shop.example.com/p/1", "/p/1", "not a url"]);
    breaks.push(Break::one(
        Column::ProductUrl,
        relative.as_bytes(),
        "product_url",
        "url_invalid",
    ));
    if header.has(Column::Brand) {
        let long = "B".repeat(201);
        breaks.push(Break::one(
            Column::Brand,
            long.as_bytes(),
            "brand",
            "brand_too_long",
        ));
    }
    if header.has(Column::Price) {
        let price = rng.pick(&["12,50", "-3", "1e5", "USD 5", "10000000", "$", "1.2.3"]);
        breaks.push(Break::one(
            Column::Price,
            price.as_bytes(),
            "price",
            "price_invalid",
        ));
    }
    if header.has(Column::Currency) {
        let currency = rng.pick(&["US", "EURO", "12A", "€UR"]);
        breaks.push(Break::one(
            Column::Currency,
            currency.as_bytes(),
            "currency",
            "currency_invalid",
        ));
    }
    if header.has(Column::Weight) {
        let unit = rng
            .pick(WeightUnit::Kilograms.spellings())
            .as_bytes()
            .to_vec();
        let amount = rng.pick(&["heavy", "0", "-1", "1,5"]).as_bytes().to_vec();
        breaks.push(Break {
            values: vec![(Column::Weight, amount), (Column::WeightUnit, unit)],
            failure: (Column::Weight, Failure::new("weight", "weight_invalid")),
        });
        let bad_unit = rng.pick(&["stone", "st", "pcs"]).as_bytes().to_vec();
        breaks.push(Break {
            values: vec![
                (Column::Weight, b"2".to_vec()),
                (Column::WeightUnit, bad_unit),
            ],
            failure: (
                Column::WeightUnit,
                Failure::new("weight_unit", "weight_unit_invalid"),
            ),
        });
        breaks.push(Break {
            values: vec![
                (Column::Weight, b"2".to_vec()),
                (Column::WeightUnit, Vec::new()),
            ],
            failure: (
                Column::WeightUnit,
                Failure::new("weight_unit", "weight_unit_missing"),
            ),
        });
    }
    if header.has(Column::ImageUrls) {
        let bad = rng.pick(&[
            "http://127.0.0.1/b.jpg",
            "/c.jpg",
            "ftp://cdn.example.com/a.jpg",
        ]);
        let value = format!("https://cdn.example.com/ok.jpg|{bad}");
        breaks.push(Break::one(
            Column::ImageUrls,
            value.as_bytes(),
            "image_urls",
            "image_url_invalid",
        ));
    }
    breaks
}

/// A line of spaces only: not blank, so a record of one field (a `field_count` failure), whose
/// only field, if it sits at the sku column, reads as empty: it mentions nothing.
fn whitespace_only_record() -> DraftRecord {
    DraftRecord {
        fields: vec![b"  ".to_vec()],
        record: Record::Invalid(InvalidRecord {
            mentioned_sku: None,
            failures: vec![Failure::new("record", "field_count")],
        }),
    }
}

/// The sku field as the pipeline reads it for mentions: NUL bytes removed, trimmed, `None`
/// when empty or not UTF-8.
fn read_sku(field: &[u8]) -> Option<String> {
    let without_nul: Vec<u8> = field.iter().copied().filter(|&b| b != 0).collect();
    let text = String::from_utf8(without_nul).ok()?;
    let sku = text.trim();
    (!sku.is_empty()).then(|| sku.to_owned())
}

/// Sku formats use every character the contract allows (letters, digits, `_ . / -`).
fn sku_of(n: usize) -> String {
    match n % 5 {
        0 => format!("SKU-{n:04}"),
        1 => format!("ab_{n:03}"),
        2 => format!("X.{n}/v2"),
        3 => format!("p-{n}-blue"),
        _ => format!("{n:06}"),
    }
}

fn draw_name(rng: &mut Rng) -> String {
    format!(
        "{} {}{}",
        rng.pick(&NAME_ADJECTIVES),
        rng.pick(&NAME_NOUNS),
        rng.pick(&NAME_SUFFIXES)
    )
}

/// A price in cents at scale 2, 1 or 0 as the cents allow; sometimes above 1,000 for
/// thousands separators, sometimes zero.
fn draw_price(rng: &mut Rng) -> Decimal {
    let cents: i64 = match rng.below(10) {
        0..=5 => rng.between(100..=20_000) as i64,
        6 | 7 => rng.between(100_000..=500_000_000) as i64,
        8 => rng.between(1..=999) as i64 * 100,
        _ => 0,
    };
    let price = Decimal::new(cents, 2);
    if rng.percent(50) {
        price.normalize()
    } else {
        price
    }
}

fn draw_weight(rng: &mut Rng) -> Weight {
    Weight {
        amount: rng
            .pick(&WEIGHT_AMOUNTS)
            .parse()
            .expect("weight amounts parse"),
        unit: *rng.pick(&WeightUnit::ALL),
    }
}

fn draw_attribute(rng: &mut Rng) -> Option<String> {
    rng.percent(75)
        .then(|| rng.pick(&ATTRIBUTE_VALUES).to_string())
}

/// Changes one thing about a product, as the shop would between two scrapes.
fn change(rng: &mut Rng, product: &mut Product, attribute_count: usize) {
    match rng.below(7) {
        0 | 1 => product.price = Some(draw_price(rng)),
        2 => product.name = draw_name(rng),
        3 => product.availability = Some(*rng.pick(&Availability::ALL)),
        4 => product.description = Some(rng.pick(&DESCRIPTIONS).to_string()),
        5 => product.weight = Some(draw_weight(rng)),
        _ if attribute_count > 0 => {
            product.attributes[rng.below(attribute_count)] = draw_attribute(rng);
        }
        _ => product.brand = Some(rng.pick(&BRANDS).to_string()),
    }
}

/// The price as a scraper might write it (plain, grouped thousands, a currency symbol), and
/// the value the validator reads: scale as written.
fn write_price(rng: &mut Rng, price: Decimal) -> (String, Decimal) {
    let mut written = price;
    if written.scale() < 2 && rng.percent(20) {
        written.rescale(2);
    }
    let plain = written.to_string();
    let (int, fraction) = match plain.split_once('.') {
        Some((int, fraction)) => (int.to_owned(), format!(".{fraction}")),
        None => (plain.clone(), String::new()),
    };
    let int = if int.len() > 3 && rng.percent(60) {
        group_thousands(&int)
    } else {
        int
    };
    let symbol = ["", "", "$", "€", "£"][rng.below(5)];
    (format!("{symbol}{int}{fraction}"), written)
}

fn group_thousands(digits: &str) -> String {
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

/// `|`-separated with spacing that trimming removes, and sometimes empty segments (ignored).
fn write_image_urls(rng: &mut Rng, urls: &[String]) -> Vec<u8> {
    if urls.is_empty() {
        return blank(rng);
    }
    let mut text = String::new();
    for (index, url) in urls.iter().enumerate() {
        if index > 0 {
            let separator = *rng.pick(&["|", " | ", "| ", "||"]);
            text.push_str(separator);
        }
        text.push_str(url);
    }
    if rng.percent(10) {
        text.push('|');
    }
    pad(rng, text.as_bytes())
}

fn optional_text(rng: &mut Rng, value: Option<&str>) -> Vec<u8> {
    match value {
        Some(text) => pad(rng, text.as_bytes()),
        None => blank(rng),
    }
}

/// Whitespace around a value, which the validator trims.
fn pad(rng: &mut Rng, value: &[u8]) -> Vec<u8> {
    let mut field = Vec::with_capacity(value.len() + 4);
    if rng.percent(12) {
        field.extend_from_slice(rng.pick(&PADDING).as_bytes());
    }
    field.extend_from_slice(value);
    if rng.percent(12) {
        field.extend_from_slice(rng.pick(&PADDING).as_bytes());
    }
    field
}

/// An empty field, sometimes written as spaces.
fn blank(rng: &mut Rng) -> Vec<u8> {
    if rng.percent(20) {
        b" ".to_vec()
    } else {
        Vec::new()
    }
}

/// Header names and currency codes match case-insensitively; scrapers write them every way.
fn random_case(rng: &mut Rng, text: &str) -> String {
    match rng.below(5) {
        0 | 1 => text.to_ascii_lowercase(),
        2 => text.to_ascii_uppercase(),
        3 => {
            let mut at_word_start = true;
            text.chars()
                .map(|c| {
                    let upper = at_word_start;
                    at_word_start = c == '_';
                    if upper { c.to_ascii_uppercase() } else { c }
                })
                .collect()
        }
        _ => text
            .chars()
            .map(|c| {
                if rng.percent(50) {
                    c.to_ascii_uppercase()
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(text: &str) -> Decimal {
        text.parse().expect("test decimal")
    }

    #[test]
    fn weights_round_half_away_from_zero_at_six_decimals() {
        let weight = |amount: &str, unit| Weight {
            amount: dec(amount),
            unit,
        };
        assert_eq!(weight("0.05", WeightUnit::Pounds).grams(), dec("22.679619"));
        assert_eq!(weight("1", WeightUnit::Ounces).grams(), dec("28.349523"));
        assert_eq!(weight("0.001", WeightUnit::Ounces).grams(), dec("0.02835"));
        assert_eq!(
            weight("1.5", WeightUnit::Kilograms).grams().to_string(),
            "1500"
        );
        assert_eq!(weight("0.5", WeightUnit::Pounds).grams(), dec("226.796185"));
    }

    #[test]
    fn prices_are_written_with_the_value_read_back() {
        let mut rng = Rng::new(11);
        for _ in 0..2_000 {
            let price = draw_price(&mut rng);
            let (text, written) = write_price(&mut rng, price);
            assert_eq!(written, price);
            let plain: String = text
                .trim_start_matches(['$', '€', '£'])
                .chars()
                .filter(|&c| c != ',')
                .collect();
            let read = Decimal::from_str_exact(&plain).expect(&text);
            assert_eq!((read, read.scale()), (written, written.scale()), "{text}");
        }
        assert_eq!(group_thousands("1234567"), "1,234,567");
        assert_eq!(group_thousands("123456"), "123,456");
    }

    #[test]
    fn sku_pool_is_unique_and_within_the_charset() {
        let skus: std::collections::BTreeSet<String> = (0..SKU_POOL).map(sku_of).collect();
        assert_eq!(skus.len(), SKU_POOL);
        for sku in skus {
            assert!(
                sku.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-')),
                "{sku}"
            );
        }
    }

    #[test]
    fn read_sku_drops_nul_bytes_and_whitespace() {
        assert_eq!(read_sku(b" SK\0U-1\t").as_deref(), Some("SKU-1"));
        assert_eq!(read_sku(b"  "), None);
        assert_eq!(read_sku(b"SKU-\xff1"), None);
        assert_eq!(read_sku(b" bad sku! ").as_deref(), Some("bad sku!"));
    }

    #[test]
    fn random_case_keeps_the_letters() {
        let mut rng = Rng::new(5);
        for _ in 0..100 {
            let name = random_case(&mut rng, "weight_units");
            assert!(name.eq_ignore_ascii_case("weight_units"), "{name}");
        }
    }
}
