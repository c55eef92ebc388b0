//! Deterministic, realistic catalog CSVs for the demo, the integration tests and the benchmark.
//!
//! Every row is a pure function of `(seed, row index)`, so output is byte-identical for a config,
//! rows can be regenerated instead of remembered (memory does not grow with `rows`), and the
//! expected outcome of validating the file is known exactly while writing it.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::{Deserialize, Serialize};

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratorConfig {
    pub rows: u64,
    pub seed: u64,
    /// Share of rows, per thousand, carrying exactly one contract failure.
    pub invalid_per_mille: u32,
    /// Share of rows, per thousand, that repeat an earlier valid row's sku with a new price.
    pub duplicate_per_mille: u32,
    /// CRLF line endings, also inside quoted multi-line descriptions.
    pub crlf: bool,
    /// Start with a UTF-8 byte-order mark.
    pub bom: bool,
    /// Skus are `{sku_prefix}-{row index:08}`; must be in the sku charset, at most 150 chars.
    pub sku_prefix: String,
    /// Every record loads with Postgres `COPY ... (FORMAT csv)` and ClickHouse `CSVWithNames`
    /// as is: invalid rows carry only defects those accept (no wrong field count, no invalid
    /// UTF-8), and there are no NUL bytes and no blank lines. The benchmark's "limit" loads the
    /// very file the pipeline ingests, so it needs this.
    pub loadable_by_copy: bool,
    /// Write the next day's snapshot of the catalog `seed` describes instead of the catalog
    /// itself.
    pub next_day: Option<NextDay>,
}

/// The next day's snapshot of a catalog: most rows repeat byte for byte, some change price and
/// availability, some are gone, and new items appear at the end (shares per mille of the rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDay {
    pub changed_per_mille: u32,
    pub removed_per_mille: u32,
    pub added_per_mille: u32,
}

/// About 3% of a day's rows change, 1% disappear and 1% are new the next day.
pub const NEXT_DAY: NextDay = NextDay {
    changed_per_mille: 30,
    removed_per_mille: 10,
    added_per_mille: 10,
};

/// Salts the streams that decide a row's fate the next day, so they are independent of the
/// streams that generate the row itself.
const NEXT_DAY_SALT: u64 = 0x005E_ED0F_DA7E;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Same,
    Changed,
    Removed,
}

impl Fate {
    fn draw(cfg: &GeneratorConfig, index: u64) -> Self {
        let Some(day) = cfg.next_day else {
            return Self::Same;
        };
        let roll = row_rng(cfg.seed ^ NEXT_DAY_SALT, index).below(1_000);
        let removed = u64::from(day.removed_per_mille);
        if roll < removed {
            Self::Removed
        } else if roll < removed + u64::from(day.changed_per_mille) {
            Self::Changed
        } else {
            Self::Same
        }
    }
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            rows: 1_000,
            seed: 42,
            invalid_per_mille: 10,
            duplicate_per_mille: 20,
            crlf: false,
            bom: false,
            sku_prefix: "SKU".to_owned(),
            loadable_by_copy: false,
            next_day: None,
        }
    }
}

/// The outcome that validating the generated object must reproduce.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratedStats {
    pub rows_total: u64,
    pub rows_valid: u64,
    pub rows_invalid: u64,
    pub distinct_valid_skus: u64,
    /// Failure code → number of rows failing with it (each invalid row has exactly one failure).
    pub invalid_by_code: BTreeMap<String, u64>,
    /// Bytes written, byte-order mark included.
    pub bytes: u64,
}

/// The generated header, in order.
pub const COLUMNS: [&str; 13] = [
    "sku",
    "name",
    "brand",
    "category",
    "description",
    "price",
    "currency",
    "weight",
    "weight_unit",
    "availability",
    "product_url",
    "image_urls",
    "color",
];
const DESCRIPTION: usize = 4;
const MAX_PREFIX_CHARS: usize = 150;
/// Roughly one row in this many is followed by an empty line, which readers must skip.
const EMPTY_LINE_ONE_IN: u64 = 400;

/// Writes a catalog CSV of `cfg.rows` data rows to `out`, streaming row by row.
///
/// Fails with `InvalidInput` when the shares add up to more than 1000 per mille or the sku prefix
/// would make generated skus invalid.
pub fn write_catalog<W: Write>(cfg: &GeneratorConfig, mut out: W) -> io::Result<GeneratedStats> {
    check_config(cfg)?;
    let eol: &[u8] = if cfg.crlf { b"\r\n" } else { b"\n" };
    let mut stats = GeneratedStats {
        rows_total: cfg.rows,
        ..GeneratedStats::default()
    };
    let mut line = Vec::with_capacity(4 * 1024);
    if cfg.bom {
        line.extend_from_slice("\u{feff}".as_bytes());
    }
    line.extend_from_slice(COLUMNS.join(",").as_bytes());
    line.extend_from_slice(eol);
    emit(&mut out, &mut line, &mut stats)?;

    // The next day's distinct skus are counted exactly: a removed row may be the one a later
    // duplicate repeats.
    let mut next_day_skus = cfg.next_day.map(|_| std::collections::HashSet::new());
    let added = cfg
        .next_day
        .map_or(0, |day| cfg.rows * u64::from(day.added_per_mille) / 1_000);
    if next_day_skus.is_some() {
        stats.rows_total = 0;
    }
    for index in 0..cfg.rows + added {
        let fate = Fate::draw(cfg, index);
        if fate == Fate::Removed {
            continue;
        }
        let mut rng = row_rng(cfg.seed, index);
        let kind = Kind::draw(&mut rng, cfg);
        let product = if index >= cfg.rows {
            // A new item the next day: its sku follows from its index, after every old one.
            Some(Product::generate(&mut rng, cfg, index))
        } else {
            match kind {
                Kind::Invalid => None,
                Kind::Duplicate => match duplicate_target(cfg, index, &mut rng) {
                    Some(target) => {
                        let mut product = regenerate_fresh(cfg, target);
                        let cents = match product.price_cents {
                            Some(old) => old + 1 + rng.below(10_000),
                            None => random_cents(&mut rng),
                        };
                        product.price = plain_price(cents);
                        product.availability = (*rng.pick(AVAILABILITY)).to_owned();
                        Some(product)
                    }
                    // Too early in the file for a usable target: the row stands on its own.
                    None => {
                        if next_day_skus.is_none() {
                            stats.distinct_valid_skus += 1;
                        }
                        Some(Product::generate(&mut rng, cfg, index))
                    }
                },
                Kind::Fresh => {
                    if next_day_skus.is_none() {
                        stats.distinct_valid_skus += 1;
                    }
                    Some(Product::generate(&mut rng, cfg, index))
                }
            }
        };
        if let Some(skus) = &mut next_day_skus {
            stats.rows_total += 1;
            if let Some(product) = &product {
                skus.insert(product.sku.clone());
            }
        }
        let fields = match product {
            Some(mut product) => {
                stats.rows_valid += 1;
                if fate == Fate::Changed {
                    let mut change = row_rng(cfg.seed ^ NEXT_DAY_SALT ^ 1, index);
                    product.price = plain_price(random_cents(&mut change));
                    product.availability = (*change.pick(AVAILABILITY)).to_owned();
                }
                product.into_fields()
            }
            None => {
                let defects = if cfg.loadable_by_copy {
                    &Defect::ALL[2..]
                } else {
                    &Defect::ALL[..]
                };
                let defect = *rng.pick(defects);
                let product = Product::generate(&mut rng, cfg, index);
                stats.rows_invalid += 1;
                *stats
                    .invalid_by_code
                    .entry(defect.code().to_owned())
                    .or_default() += 1;
                defect.inject(product, &mut rng)
            }
        };
        for (column, field) in fields.iter().enumerate() {
            if column > 0 {
                line.push(b',');
            }
            push_field(&mut line, field, column == DESCRIPTION, eol);
        }
        line.extend_from_slice(eol);
        if rng.below(EMPTY_LINE_ONE_IN) == 0 && !cfg.loadable_by_copy {
            line.extend_from_slice(eol);
        }
        emit(&mut out, &mut line, &mut stats)?;
    }
    if let Some(skus) = next_day_skus {
        stats.distinct_valid_skus = skus.len() as u64;
    }
    out.flush()?;
    Ok(stats)
}

fn check_config(cfg: &GeneratorConfig) -> io::Result<()> {
    let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    if cfg
        .invalid_per_mille
        .saturating_add(cfg.duplicate_per_mille)
        > 1_000
    {
        return invalid(format!(
            "invalid_per_mille ({}) + duplicate_per_mille ({}) exceeds 1000",
            cfg.invalid_per_mille, cfg.duplicate_per_mille
        ));
    }
    let prefix_ok = cfg.sku_prefix.chars().count() <= MAX_PREFIX_CHARS
        && cfg
            .sku_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-'));
    if !prefix_ok {
        return invalid(format!(
            "sku_prefix {:?} must be at most {MAX_PREFIX_CHARS} characters of A-Z a-z 0-9 _ . / -",
            cfg.sku_prefix
        ));
    }
    Ok(())
}

fn emit(out: &mut impl Write, line: &mut Vec<u8>, stats: &mut GeneratedStats) -> io::Result<()> {
    out.write_all(line)?;
    stats.bytes += line.len() as u64;
    line.clear();
    Ok(())
}

/// RFC 4180 quoting. Newlines inside a field follow the file's line ending, as a spreadsheet
/// export would write them.
fn push_field(line: &mut Vec<u8>, field: &[u8], always_quote: bool, eol: &[u8]) {
    let needs_quotes = field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'));
    if !(always_quote || needs_quotes) {
        line.extend_from_slice(field);
        return;
    }
    line.push(b'"');
    for &b in field {
        match b {
            b'"' => line.extend_from_slice(b"\"\""),
            b'\n' => line.extend_from_slice(eol),
            other => line.push(other),
        }
    }
    line.push(b'"');
}

/// SplitMix64: tiny, fast and good enough for test data; avoids a `rand` dependency whose output
/// could change between versions and break byte-identical fixtures.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for the small `n` used here).
    fn below(&mut self, n: u64) -> u64 {
        let wide = u128::from(self.next_u64()) * u128::from(n);
        u64::try_from(wide >> 64).unwrap_or_default()
    }

    fn range(&mut self, low: u64, high_inclusive: u64) -> u64 {
        low + self.below(high_inclusive - low + 1)
    }

    fn usize_range(&mut self, low: usize, high_inclusive: usize) -> usize {
        usize::try_from(self.range(low as u64, high_inclusive as u64)).unwrap_or(low)
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// `items` must not be empty (all callers pass non-empty constants).
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        let index = usize::try_from(self.below(items.len() as u64)).unwrap_or_default();
        &items[index]
    }
}

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Each row gets its own stream. Hashing the index (rather than offsetting the state by it) keeps
/// neighbouring rows' streams from overlapping.
fn row_rng(seed: u64, index: u64) -> SplitMix64 {
    SplitMix64(mix(seed ^ mix(index ^ 0xA076_1D64_78BD_642F)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Fresh,
    Duplicate,
    Invalid,
}

impl Kind {
    /// Always the first draw of a row's stream, so any row's kind can be recomputed on its own.
    fn draw(rng: &mut SplitMix64, cfg: &GeneratorConfig) -> Self {
        let roll = rng.below(1_000);
        let invalid = u64::from(cfg.invalid_per_mille);
        if roll < invalid {
            Self::Invalid
        } else if roll < invalid + u64::from(cfg.duplicate_per_mille) {
            Self::Duplicate
        } else {
            Self::Fresh
        }
    }
}

/// An earlier row that was written as a fresh valid product. Only fresh rows qualify: their skus
/// are unique by construction, so distinct skus are counted without remembering any.
fn duplicate_target(cfg: &GeneratorConfig, index: u64, rng: &mut SplitMix64) -> Option<u64> {
    if index == 0 {
        return None;
    }
    let start = rng.below(index);
    (start.saturating_sub(31)..=start)
        .rev()
        .find(|&j| Kind::draw(&mut row_rng(cfg.seed, j), cfg) == Kind::Fresh)
}

/// The product a fresh row `index` was written with (same draws in the same order).
fn regenerate_fresh(cfg: &GeneratorConfig, index: u64) -> Product {
    let mut rng = row_rng(cfg.seed, index);
    Kind::draw(&mut rng, cfg);
    Product::generate(&mut rng, cfg, index)
}

/// A valid row, field by field, before encoding.
struct Product {
    sku: String,
    name: String,
    brand: String,
    category: String,
    description: String,
    price: String,
    price_cents: Option<u64>,
    currency: String,
    weight: String,
    weight_unit: String,
    availability: String,
    product_url: String,
    image_urls: String,
    color: String,
}

const ADJECTIVES: &[&str] = &[
    "Trail",
    "Alpine",
    "Urban",
    "Classic",
    "Featherweight",
    "Rugged",
    "Coastal",
    "Nordic",
    "Everyday",
    "Summit",
    "Café",
    "Über",
    "Crème",
    "Tōkyō",
    "Fjällräv",
];
const MATERIALS: &[&str] = &[
    "Merino",
    "Cotton",
    "Down",
    "Fleece",
    "Canvas",
    "Leather",
    "Recycled Nylon",
    "Linen",
    "Bamboo",
    "Ripstop",
];
const PRODUCTS: &[(&str, &str)] = &[
    ("Hoodie", "Apparel > Tops"),
    ("Jacket", "Apparel > Outerwear"),
    ("Vest", "Apparel > Outerwear"),
    ("Backpack", "Bags > Backpacks"),
    ("Duffel", "Bags > Travel"),
    ("Beanie", "Accessories > Hats"),
    ("Socks", "Apparel > Socks"),
    ("Tent", "Camping > Shelter"),
    ("Sleeping Bag", "Camping > Sleep"),
    ("Water Bottle", "Kitchen > Drinkware"),
    ("Mug", "Kitchen > Drinkware"),
    ("Trail Runner", "Footwear > Running"),
];
const NAME_SUFFIXES: &[&str] = &[
    "",
    "",
    "",
    "",
    " 2.0",
    " – Limited Edition",
    " (日本限定)",
    " 🌲",
    " Pro",
    " Kids'",
    " \"Originals\"",
];
const BRANDS: &[&str] = &[
    "Cotopaxi",
    "Patagonia",
    "Nordlicht",
    "Søren & Co",
    "山田工房",
    "Maison Élan",
    "Trailhead Supply, Inc.",
    "Big \"Sky\" Outfitters",
    "",
];
const COLORS: &[&str] = &[
    "Black",
    "Forest Green",
    "Bleu Marine",
    "Rouge Cerise",
    "Sand",
    "Graphite",
    "Glacier",
    "Sun-Faded Orange",
    "Noir/Blanc",
    "",
];
const SENTENCES: &[&str] = &[
    "Built for long days on the trail, with taped seams, a brushed lining and a cut that layers easily.",
    "Our \"do-anything\" fabric is recycled, quick-drying and surprisingly soft.",
    "Made in Portugal from organic cotton; pre-washed, so it won't shrink.",
    "Weighs next to nothing, packs into its own pocket, and shrugs off light rain.",
    "Conçu pour le quotidien : léger, respirant et résistant.",
    "Für Wanderungen über Stock und Stein — robust, bequem und langlebig.",
    "日本の職人が一つ一つ丁寧に仕上げました。",
    "Customers call it \"the only one I'd buy again\" 😍.",
    "Care: machine wash cold, tumble dry low, do not iron the print.",
    "Fits true to size; if you're between sizes, size up for layering.",
    "Includes a lifetime warranty, free repairs and a 30-day, no-questions return policy.",
    "Colours may vary slightly from the photos ☀️.",
    "Pairs well with our Alpine base layers, sold separately.",
    "Dimensions: 45 x 30 x 20 cm, 28 L capacity, 1.2 kg.",
];
const CURRENCIES_PLAIN: &[&str] = &["USD", "usd", "EUR", "CAD", "GBP", "", ""];
const WEIGHT_UNITS: &[(&[&str], u64)] = &[
    (&["g", "grams", "G", "Grams"], 0),
    (&["kg", "KG", "kilograms", "Kg"], 1),
    (&["oz", "ounces", "OZ", "oz."], 2),
    (&["lb", "lbs", "pounds", "LB"], 3),
];
const AVAILABILITY: &[&str] = &[
    "In Stock",
    "in_stock",
    "InStock",
    "available",
    "in stock",
    "https://schema.org/InStock",
    "sold out",
    "Out of Stock",
    "Pre-Order",
    "backorder",
    "discontinued",
    "https://schema.org/OutOfStock",
    "Only 3 left!",
    "",
];
const SHOP_HOSTS: &[&str] = &[
    "www.example-shop.com",
    "shop.example.org",
    "store.outdoor.example",
    "xn--bcher-kva.example",
];
const IMAGE_HOSTS: &[&str] = &[
    "cdn.example-shop.com",
    "images.example-cdn.net",
    "static.example.org",
];

impl Product {
    fn generate(rng: &mut SplitMix64, cfg: &GeneratorConfig, index: u64) -> Self {
        let sku = format!("{}-{index:08}", cfg.sku_prefix);
        let adjective = *rng.pick(ADJECTIVES);
        let material = *rng.pick(MATERIALS);
        let (noun, category) = *rng.pick(PRODUCTS);
        let suffix = *rng.pick(NAME_SUFFIXES);
        let mut name = format!("{adjective} {material} {noun}{suffix}");
        if rng.one_in(50) {
            // Scrapers often keep the whitespace around a cell.
            name = format!("  {name} ");
        }
        let description = if rng.one_in(20) {
            String::new()
        } else {
            let mut text = String::new();
            for n in 0..rng.range(3, 7) {
                if n > 0 {
                    text.push_str(if rng.one_in(4) { "\n" } else { " " });
                }
                let sentence = *rng.pick(SENTENCES);
                text.push_str(sentence);
            }
            if rng.one_in(300) && !cfg.loadable_by_copy {
                // A stray NUL, as some scrapers emit; the pipeline removes it.
                text.insert(text.find(' ').unwrap_or(0), '\0');
            }
            text
        };
        let (price, price_cents, currency) = if rng.one_in(25) {
            (String::new(), None, String::new())
        } else {
            let cents = random_cents(rng);
            let (price, currency) = match rng.below(6) {
                0 => (
                    format!("${}", grouped_price(cents)),
                    *rng.pick(&["USD", ""]),
                ),
                1 => (format!("€{}", plain_price(cents)), "EUR"),
                2 => (format!("€ {}", plain_price(cents)), "eur"),
                3 => (format!("£{}", grouped_price(cents)), "GBP"),
                4 => (
                    format!(" {} ", plain_price(cents)),
                    *rng.pick(CURRENCIES_PLAIN),
                ),
                _ => (plain_price(cents), *rng.pick(CURRENCIES_PLAIN)),
            };
            (price, Some(cents), currency.to_owned())
        };
        let (weight, weight_unit) = if rng.one_in(6) {
            // Sometimes a unit is left without a weight; it is ignored.
            let unit = if rng.one_in(2) { "kg" } else { "" };
            (String::new(), unit.to_owned())
        } else {
            let (spellings, kind) = *rng.pick(WEIGHT_UNITS);
            let weight = match kind {
                0 => rng.range(20, 2_500).to_string(),
                1 => format!("{}.{:02}", rng.range(0, 6), rng.range(1, 99)),
                2 => format!("{}.{}", rng.range(1, 60), rng.range(0, 9)),
                _ => format!("{}.{}", rng.range(0, 12), rng.range(1, 9)),
            };
            (weight, (*rng.pick(spellings)).to_owned())
        };
        let availability = (*rng.pick(AVAILABILITY)).to_owned();
        let product_url = format!(
            "https://{}/products/{}-{}?variant={}",
            rng.pick(SHOP_HOSTS),
            slug(&format!("{adjective} {material} {noun}")),
            index,
            rng.range(1, 99_999)
        );
        let image_urls = if rng.one_in(15) {
            String::new()
        } else {
            let count = rng.usize_range(2, 5);
            let separator = if rng.one_in(5) { " | " } else { "|" };
            let mut urls = image_list(rng, &sku, count).join(separator);
            if rng.one_in(30) {
                urls.push('|');
            }
            urls
        };
        Self {
            sku,
            name,
            brand: (*rng.pick(BRANDS)).to_owned(),
            category: category.to_owned(),
            description,
            price,
            price_cents,
            currency,
            weight,
            weight_unit,
            availability,
            product_url,
            image_urls,
            color: (*rng.pick(COLORS)).to_owned(),
        }
    }

    /// Fields in `COLUMNS` order.
    fn into_fields(self) -> Vec<Vec<u8>> {
        [
            self.sku,
            self.name,
            self.brand,
            self.category,
            self.description,
            self.price,
            self.currency,
            self.weight,
            self.weight_unit,
            self.availability,
            self.product_url,
            self.image_urls,
            self.color,
        ]
        .into_iter()
        .map(String::into_bytes)
        .collect()
    }
}

/// Mostly everyday prices, sometimes four-digit ones that need thousands separators.
fn random_cents(rng: &mut SplitMix64) -> u64 {
    if rng.one_in(10) {
        rng.range(100_000, 2_500_000)
    } else {
        rng.range(99, 50_000)
    }
}

fn plain_price(cents: u64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

fn grouped_price(cents: u64) -> String {
    let units = (cents / 100).to_string();
    let mut grouped = String::new();
    for (position, digit) in units.chars().enumerate() {
        if position > 0 && (units.len() - position).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    format!("{grouped}.{:02}", cents % 100)
}

fn slug(text: &str) -> String {
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

fn image_list(rng: &mut SplitMix64, sku: &str, count: usize) -> Vec<String> {
    let host = rng.pick(IMAGE_HOSTS);
    (1..=count)
        .map(|n| format!("https://{host}/images/{sku}/{n}.jpg"))
        .collect()
}

/// `text` repeated (cut on a character) to exactly `chars` characters.
fn text_of(text: &str, chars: usize) -> String {
    text.chars().cycle().take(chars).collect()
}

/// The single failure an invalid row carries. Each variant changes one field of a valid product
/// so that validation reports exactly its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Defect {
    FieldCount,
    EncodingInvalid,
    SkuMissing,
    SkuTooLong,
    SkuCharset,
    NameMissing,
    NameTooLong,
    UrlMissing,
    UrlInvalid,
    UrlScheme,
    UrlTooLong,
    UrlPrivateHost,
    UrlNonAsciiHost,
    BrandTooLong,
    CategoryTooLong,
    DescriptionTooLong,
    PriceInvalid,
    CurrencyInvalid,
    WeightInvalid,
    WeightUnitMissing,
    WeightUnitInvalid,
    ImageUrlInvalid,
    TooManyImages,
}

impl Defect {
    const ALL: [Self; 23] = [
        Self::FieldCount,
        Self::EncodingInvalid,
        Self::SkuMissing,
        Self::SkuTooLong,
        Self::SkuCharset,
        Self::NameMissing,
        Self::NameTooLong,
        Self::UrlMissing,
        Self::UrlInvalid,
        Self::UrlScheme,
        Self::UrlTooLong,
        Self::UrlPrivateHost,
        Self::UrlNonAsciiHost,
        Self::BrandTooLong,
        Self::CategoryTooLong,
        Self::DescriptionTooLong,
        Self::PriceInvalid,
        Self::CurrencyInvalid,
        Self::WeightInvalid,
        Self::WeightUnitMissing,
        Self::WeightUnitInvalid,
        Self::ImageUrlInvalid,
        Self::TooManyImages,
    ];

    fn code(self) -> &'static str {
        match self {
            Self::FieldCount => "field_count",
            Self::EncodingInvalid => "encoding_invalid",
            Self::SkuMissing => "sku_missing",
            Self::SkuTooLong => "sku_too_long",
            Self::SkuCharset => "sku_charset",
            Self::NameMissing => "name_missing",
            Self::NameTooLong => "name_too_long",
            Self::UrlMissing => "url_missing",
            Self::UrlInvalid => "url_invalid",
            Self::UrlScheme => "url_scheme",
            Self::UrlTooLong => "url_too_long",
            Self::UrlPrivateHost => "url_private_host",
            Self::UrlNonAsciiHost => "url_non_ascii_host",
            Self::BrandTooLong => "brand_too_long",
            Self::CategoryTooLong => "category_too_long",
            Self::DescriptionTooLong => "description_too_long",
            Self::PriceInvalid => "price_invalid",
            Self::CurrencyInvalid => "currency_invalid",
            Self::WeightInvalid => "weight_invalid",
            Self::WeightUnitMissing => "weight_unit_missing",
            Self::WeightUnitInvalid => "weight_unit_invalid",
            Self::ImageUrlInvalid => "image_url_invalid",
            Self::TooManyImages => "too_many_images",
        }
    }

    fn inject(self, mut p: Product, rng: &mut SplitMix64) -> Vec<Vec<u8>> {
        match self {
            Self::FieldCount => {
                let mut fields = p.into_fields();
                if rng.one_in(2) {
                    fields.pop();
                } else {
                    fields.push(b"stray value".to_vec());
                }
                return fields;
            }
            Self::EncodingInvalid => {
                // Latin-1 text leaking into a UTF-8 export.
                let mut fields = p.into_fields();
                fields[DESCRIPTION] = b"Caf\xe9 cr\xe8me, na\xefve design.".to_vec();
                return fields;
            }
            Self::SkuMissing => p.sku = (*rng.pick(&["", "   "])).to_owned(),
            Self::SkuTooLong => {
                let target = rng.usize_range(201, 240);
                while p.sku.len() < target {
                    p.sku.push('X');
                }
            }
            Self::SkuCharset => {
                // Inside the row number, so trimming cannot remove it even with an empty prefix.
                let bad = *rng.pick(&[' ', '#', 'é', ':']);
                p.sku.insert(p.sku.len() - 3, bad);
            }
            Self::NameMissing => p.name = (*rng.pick(&["", "  "])).to_owned(),
            Self::NameTooLong => {
                p.name = text_of("Ünïcödé Trail Jacket — ", rng.usize_range(501, 560))
            }
            Self::UrlMissing => p.product_url.clear(),
            Self::UrlInvalid => {
                p.product_url = (*rng.pick(&[
                    "www.example-shop.com/products/jacket",
                    "/products/jacket?variant=2",
                    "https://exa mple.com/p",
                ]))
                .to_owned();
            }
            Self::UrlScheme => {
                p.product_url = (*rng.pick(&[
                    "ftp://www.example-shop.com/products/jacket",
                    "javascript:void(0)",
                    "mailto:sales@example-shop.com",
                ]))
                .to_owned();
            }
            Self::UrlTooLong => {
                let filler = text_of("utm", rng.usize_range(2_050, 2_100));
                p.product_url = format!("https://www.example-shop.com/p?ref={filler}");
            }
            Self::UrlPrivateHost => {
                p.product_url = (*rng.pick(&[
                    "http://192.168.1.20/products/jacket",
                    "http://localhost:8080/products/jacket",
                    "http://[::1]/products/jacket",
                    "http://10.0.0.5/p/1",
                    "http://169.254.169.254/latest/meta-data/",
                    "http://2130706433/p/1",
                ]))
                .to_owned();
            }
            Self::UrlNonAsciiHost => {
                p.product_url = (*rng.pick(&[
                    "https://bücher.example/products/jacket",
                    "https://例え.テスト/p/1",
                ]))
                .to_owned();
            }
            Self::BrandTooLong => p.brand = text_of("Søren & Co ", rng.usize_range(201, 260)),
            Self::CategoryTooLong => {
                p.category = text_of("Apparel > Outerwear > ", rng.usize_range(201, 260));
            }
            Self::DescriptionTooLong => {
                p.description = text_of(SENTENCES[4], rng.usize_range(50_001, 50_100));
            }
            Self::PriceInvalid => {
                p.price = (*rng.pick(&["-5.00", "1e3", "free", "12,50", "$10,000,000.00", "N/A"]))
                    .to_owned();
            }
            Self::CurrencyInvalid => {
                p.currency = (*rng.pick(&["US", "DOLLARS", "€", "usd1"])).to_owned();
            }
            Self::WeightInvalid => {
                p.weight = (*rng.pick(&["-1", "0", "heavy", "1,5"])).to_owned();
                p.weight_unit = "kg".to_owned();
            }
            Self::WeightUnitMissing => {
                p.weight = "1.2".to_owned();
                p.weight_unit.clear();
            }
            Self::WeightUnitInvalid => {
                p.weight = "3".to_owned();
                p.weight_unit = (*rng.pick(&["stone", "mg", "tons"])).to_owned();
            }
            Self::ImageUrlInvalid => {
                let bad = *rng.pick(&[
                    "http://127.0.0.1/img.jpg",
                    "ftp://cdn.example-shop.com/a.jpg",
                    "data:image/png;base64,iVBORw0KGgo",
                    "//cdn.example-shop.com/a.jpg",
                    "https://cdn.exämple.com/a.jpg",
                ]);
                let mut urls: Vec<&str> = p
                    .image_urls
                    .split('|')
                    .filter(|u| !u.trim().is_empty())
                    .collect();
                let at = rng.usize_range(0, urls.len());
                urls.insert(at, bad);
                p.image_urls = urls.join("|");
            }
            Self::TooManyImages => {
                let count = rng.usize_range(51, 60);
                p.image_urls = image_list(rng, &p.sku, count).join("|");
            }
        }
        p.into_fields()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use activities::contract::{Header, validate_record};

    fn generate(cfg: &GeneratorConfig) -> (Vec<u8>, GeneratedStats) {
        let mut out = Vec::new();
        let stats = write_catalog(cfg, &mut out).expect("writing to a Vec cannot fail");
        (out, stats)
    }

    /// The next day's file: its own counts are exact, and it is mostly the first day's rows.
    #[test]
    fn the_next_day_repeats_most_rows_and_counts_exactly() {
        let day1 = GeneratorConfig {
            rows: 5_000,
            seed: 9,
            ..GeneratorConfig::default()
        };
        let day2 = GeneratorConfig {
            next_day: Some(NEXT_DAY),
            ..day1.clone()
        };
        let (first, _) = generate(&day1);
        let (second, stats) = generate(&day2);
        assert_eq!(validate(&second), stats);
        let lines = |bytes: &[u8]| -> HashSet<Vec<u8>> {
            bytes.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
        };
        let (old, new) = (lines(&first), lines(&second));
        let kept = new.intersection(&old).count() as f64 / new.len() as f64;
        assert!((0.9..0.99).contains(&kept), "{kept}");
        assert!(
            stats.rows_total > 4_900 && stats.rows_total < 5_100,
            "{stats:?}"
        );
    }

    /// Validates `bytes` the way the pipeline does and returns what it saw.
    fn validate(bytes: &[u8]) -> GeneratedStats {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let mut records = reader.byte_records();
        let first = records.next().expect("a header").expect("readable header");
        let header = Header::parse(&first).expect("valid header");
        let mut seen = GeneratedStats {
            bytes: bytes.len() as u64,
            ..GeneratedStats::default()
        };
        let mut skus = HashSet::new();
        for record in records {
            let record = record.expect("readable record");
            seen.rows_total += 1;
            match validate_record(&header, &record) {
                Ok(item) => {
                    seen.rows_valid += 1;
                    skus.insert(item.sku);
                }
                Err(errors) => {
                    seen.rows_invalid += 1;
                    assert_eq!(errors.len(), 1, "one failure per invalid row: {errors:?}");
                    *seen
                        .invalid_by_code
                        .entry(errors[0].code.clone())
                        .or_default() += 1;
                }
            }
        }
        seen.distinct_valid_skus = skus.len() as u64;
        seen
    }

    #[test]
    fn stats_match_what_validation_sees() {
        let configs = [
            GeneratorConfig::default(),
            GeneratorConfig {
                rows: 3_000,
                seed: 7,
                invalid_per_mille: 150,
                duplicate_per_mille: 100,
                crlf: true,
                bom: true,
                sku_prefix: "cotopaxi/2026.05_".to_owned(),
                loadable_by_copy: false,
                next_day: None,
            },
            GeneratorConfig {
                rows: 500,
                seed: u64::MAX,
                invalid_per_mille: 0,
                duplicate_per_mille: 1_000,
                ..GeneratorConfig::default()
            },
            GeneratorConfig {
                rows: 400,
                seed: 0,
                invalid_per_mille: 1_000,
                duplicate_per_mille: 0,
                sku_prefix: String::new(),
                ..GeneratorConfig::default()
            },
            GeneratorConfig {
                rows: 0,
                ..GeneratorConfig::default()
            },
        ];
        for cfg in configs {
            let (bytes, stats) = generate(&cfg);
            assert_eq!(validate(&bytes), stats, "{cfg:?}");
            assert_eq!(stats.rows_total, cfg.rows);
            assert_eq!(stats.rows_valid + stats.rows_invalid, stats.rows_total);
            assert_eq!(
                stats.invalid_by_code.values().sum::<u64>(),
                stats.rows_invalid
            );
        }
    }

    #[test]
    fn loadable_by_copy_has_only_well_formed_records() {
        let cfg = GeneratorConfig {
            rows: 4_000,
            seed: 17,
            invalid_per_mille: 200,
            loadable_by_copy: true,
            ..GeneratorConfig::default()
        };
        let (bytes, stats) = generate(&cfg);
        assert_eq!(validate(&bytes), stats);
        assert!(stats.rows_invalid > 500);
        assert!(!stats.invalid_by_code.contains_key("field_count"));
        assert!(!stats.invalid_by_code.contains_key("encoding_invalid"));
        assert!(std::str::from_utf8(&bytes).is_ok());
        assert!(!bytes.contains(&0));
        assert!(
            !bytes.windows(2).any(|pair| pair == b"\n\n"),
            "no blank lines"
        );
        let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[..]);
        let mut records = 0;
        for record in reader.byte_records() {
            assert_eq!(record.unwrap().len(), COLUMNS.len());
            records += 1;
        }
        assert_eq!(records, cfg.rows);
    }

    #[test]
    fn covers_every_failure_code_and_duplicates() {
        let cfg = GeneratorConfig {
            rows: 5_000,
            seed: 3,
            invalid_per_mille: 200,
            duplicate_per_mille: 50,
            ..GeneratorConfig::default()
        };
        let (_, stats) = generate(&cfg);
        let codes: Vec<&str> = stats.invalid_by_code.keys().map(String::as_str).collect();
        let mut expected: Vec<&str> = Defect::ALL.iter().map(|d| d.code()).collect();
        expected.sort_unstable();
        assert_eq!(codes, expected);
        assert!(
            stats.distinct_valid_skus < stats.rows_valid,
            "some skus repeat"
        );
    }

    #[test]
    fn duplicates_repeat_a_valid_sku_with_a_new_price() {
        let cfg = GeneratorConfig {
            rows: 2_000,
            duplicate_per_mille: 100,
            ..GeneratorConfig::default()
        };
        let (bytes, _) = generate(&cfg);
        let mut reader = csv::ReaderBuilder::new().from_reader(&bytes[..]);
        let header = Header::parse(reader.byte_headers().expect("header")).expect("valid header");
        let mut prices: std::collections::HashMap<String, Vec<Option<rust_decimal::Decimal>>> =
            std::collections::HashMap::new();
        for record in reader.byte_records() {
            if let Ok(item) = validate_record(&header, &record.expect("readable")) {
                prices.entry(item.sku).or_default().push(item.price);
            }
        }
        let repeated: Vec<_> = prices.values().filter(|p| p.len() > 1).collect();
        assert!(!repeated.is_empty());
        for history in repeated {
            let last = history.last().copied().flatten();
            assert!(last.is_some(), "a duplicate always carries a price");
            assert_ne!(
                history[0], last,
                "the later row changes the price: {history:?}"
            );
        }
    }

    #[test]
    fn output_is_deterministic_per_seed() {
        let cfg = GeneratorConfig {
            rows: 1_500,
            ..GeneratorConfig::default()
        };
        let (first, first_stats) = generate(&cfg);
        let (second, second_stats) = generate(&cfg);
        assert_eq!(first, second);
        assert_eq!(first_stats, second_stats);
        assert_eq!(first_stats.bytes, first.len() as u64);
        let (other, _) = generate(&GeneratorConfig { seed: 43, ..cfg });
        assert_ne!(first, other);
    }

    #[test]
    fn output_looks_like_a_real_export() {
        let (bytes, stats) = generate(&GeneratorConfig::default());
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("sku,name,brand,category,description,price,currency,weight,weight_unit,availability,product_url,image_urls,color\n"));
        for needle in ["\"\"", "日本", "😍", "é", "|https://", "\n\n"] {
            assert!(text.contains(needle), "missing {needle:?}");
        }
        let thousands = |rest: &str| {
            rest.trim_start_matches(|c: char| c.is_ascii_digit())
                .starts_with(',')
        };
        assert!(
            text.split('$').skip(1).any(thousands),
            "no $1,299.00-style price"
        );
        assert!(!bytes.contains(&b'\r'));
        let average = stats.bytes / stats.rows_total;
        assert!(
            (300..3_000).contains(&average),
            "average row {average} bytes"
        );
    }

    #[test]
    fn crlf_and_bom() {
        let cfg = GeneratorConfig {
            rows: 300,
            crlf: true,
            bom: true,
            ..GeneratorConfig::default()
        };
        let (bytes, _) = generate(&cfg);
        assert!(bytes.starts_with(b"\xef\xbb\xbfsku,"));
        for (at, _) in bytes.iter().enumerate().filter(|&(_, &b)| b == b'\n') {
            assert_eq!(bytes[at - 1], b'\r', "bare LF at byte {at}");
        }
    }

    #[test]
    fn rejects_unusable_configs() {
        for cfg in [
            GeneratorConfig {
                invalid_per_mille: 600,
                duplicate_per_mille: 401,
                ..GeneratorConfig::default()
            },
            GeneratorConfig {
                sku_prefix: "SKU 1".to_owned(),
                ..GeneratorConfig::default()
            },
            GeneratorConfig {
                sku_prefix: "A".repeat(151),
                ..GeneratorConfig::default()
            },
        ] {
            let err = write_catalog(&cfg, io::sink()).expect_err("rejected");
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn grouped_prices() {
        assert_eq!(grouped_price(99), "0.99");
        assert_eq!(grouped_price(129_900), "1,299.00");
        assert_eq!(grouped_price(123_456_789), "1,234,567.89");
        assert_eq!(grouped_price(10_000), "100.00");
    }
}
