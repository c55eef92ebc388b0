//! Validating one data record against the contract's field rules.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use csv::ByteRecord;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

use super::RAW_RECORD_LIMIT;
use super::header::{Column, Header};
use super::url_rule::check_url;

const MAX_SKU_CHARS: usize = 200;
const NAME: TextLimit = TextLimit {
    field: "name",
    max_chars: 500,
    too_long: "name_too_long",
};
const BRAND: TextLimit = TextLimit {
    field: "brand",
    max_chars: 200,
    too_long: "brand_too_long",
};
const CATEGORY: TextLimit = TextLimit {
    field: "category",
    max_chars: 200,
    too_long: "category_too_long",
};
const DESCRIPTION: TextLimit = TextLimit {
    field: "description",
    max_chars: 50_000,
    too_long: "description_too_long",
};
const MAX_IMAGES: usize = 50;
const DEFAULT_CURRENCY: &str = "USD";
/// Prices must be below this many currency units.
const PRICE_LIMIT: i64 = 10_000_000;
/// Values quoted in messages are cut to this many characters.
const MESSAGE_VALUE_CHARS: usize = 100;

/// One failure of a record: which field, the contract's code, and a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// Canonical column name (`sku`, `product_url`, an attribute's name, …), or `record` for
    /// failures of the record as a whole (`field_count`).
    pub field: String,
    pub code: String,
    pub message: String,
}

impl FieldError {
    fn new(field: &str, code: &str, message: String) -> Self {
        Self {
            field: field.to_owned(),
            code: code.to_owned(),
            message,
        }
    }
}

/// Normalised availability of an item.
///
/// Spellings are compared case-insensitively, ignoring spaces, underscores and hyphens, and after
/// dropping a schema.org prefix (`https://schema.org/InStock` is what many scrapers copy from
/// product markup):
/// - `in_stock`: in stock, available, available now, yes, true, limited stock, low stock,
///   limited availability, in store only, online only
/// - `out_of_stock`: out of stock, sold out, unavailable, not available, currently unavailable,
///   temporarily out of stock, no, false
/// - `preorder`: preorder, pre-sale, backorder, backordered (orderable now, shipped later)
/// - `discontinued`: discontinued, no longer available
/// - anything else that is not blank: `unknown` (not a failure)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    InStock,
    OutOfStock,
    Preorder,
    Discontinued,
    Unknown,
}

impl Availability {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InStock => "in_stock",
            Self::OutOfStock => "out_of_stock",
            Self::Preorder => "preorder",
            Self::Discontinued => "discontinued",
            Self::Unknown => "unknown",
        }
    }

    /// Normalises a trimmed field value; `None` when it is empty (availability not given).
    pub fn parse(value: &str) -> Option<Self> {
        if value.is_empty() {
            return None;
        }
        Some(Self::parse_short_ascii(value).unwrap_or_else(|| Self::parse_any(value)))
    }

    fn parse_any(value: &str) -> Self {
        let lower = value.to_lowercase();
        let key: String = Self::without_schema_prefix(&lower)
            .chars()
            .filter(|c| !Self::ignored(*c))
            .collect();
        Self::from_key(&key)
    }

    /// [`Self::parse_any`] for the values nearly every file has (short and ASCII), on the stack:
    /// every row has this field, and the general path allocates twice. `None` for any other
    /// value.
    fn parse_short_ascii(value: &str) -> Option<Self> {
        const MAX: usize = 64;
        if value.len() > MAX || !value.is_ascii() {
            return None;
        }
        let mut lower = [0u8; MAX];
        let lower = &mut lower[..value.len()];
        lower.copy_from_slice(value.as_bytes());
        lower.make_ascii_lowercase();
        let spelling = Self::without_schema_prefix(std::str::from_utf8(lower).ok()?);
        let mut key = [0u8; MAX];
        let mut len = 0;
        for byte in spelling.bytes().filter(|&b| !Self::ignored(char::from(b))) {
            key[len] = byte;
            len += 1;
        }
        Some(Self::from_key(std::str::from_utf8(&key[..len]).ok()?))
    }

    fn without_schema_prefix(lower: &str) -> &str {
        ["https://schema.org/", "http://schema.org/"]
            .iter()
            .find_map(|prefix| lower.strip_prefix(prefix))
            .unwrap_or(lower)
    }

    /// Characters a spelling may add or leave out: `In Stock`, `in_stock` and `in-stock` are
    /// one value.
    fn ignored(c: char) -> bool {
        c.is_whitespace() || matches!(c, '_' | '-')
    }

    fn from_key(key: &str) -> Self {
        match key {
            "instock"
            | "available"
            | "availablenow"
            | "yes"
            | "true"
            | "limitedstock"
            | "lowstock"
            | "limitedavailability"
            | "instoreonly"
            | "onlineonly" => Self::InStock,
            "outofstock"
            | "soldout"
            | "unavailable"
            | "notavailable"
            | "currentlyunavailable"
            | "temporarilyoutofstock"
            | "no"
            | "false" => Self::OutOfStock,
            "preorder" | "presale" | "backorder" | "backordered" => Self::Preorder,
            "discontinued" | "nolongeravailable" => Self::Discontinued,
            _ => Self::Unknown,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The raw text of a record as stored with its failures: lossy UTF-8, NUL bytes removed, at most
/// `RAW_RECORD_LIMIT` bytes (cut on a character boundary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawRecord(String);

impl RawRecord {
    pub fn from_bytes(raw: &[u8]) -> Self {
        // Lossy decoding never shrinks its input, so the first LIMIT non-NUL bytes plus a partial
        // character's worth are all that can survive the cut; this keeps huge records cheap.
        let kept: Vec<u8> = raw
            .iter()
            .copied()
            .filter(|&b| b != 0)
            .take(RAW_RECORD_LIMIT + 4)
            .collect();
        let mut text = String::from_utf8_lossy(&kept).into_owned();
        if text.len() > RAW_RECORD_LIMIT {
            let mut cut = RAW_RECORD_LIMIT;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        Self(text)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// A record that passed every rule, with its values normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidItem {
    pub sku: String,
    pub name: String,
    pub product_url: String,
    /// Empty optional text fields are `None`.
    pub brand: Option<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    /// As written (scale kept, so `$1,299.00` is `1299.00`).
    pub price: Option<Decimal>,
    /// Upper-cased; `USD` when the field is empty or the column absent.
    pub currency: String,
    /// Converted to grams, rounded to the microgram (half away from zero), trailing zeros
    /// dropped.
    pub weight_grams: Option<Decimal>,
    pub availability: Option<Availability>,
    pub image_urls: Vec<String>,
    /// Every attribute column with a non-empty (trimmed) value, keyed by its header name as
    /// written. Empty values are left out so that a blank cell and an absent column look alike.
    pub attributes: BTreeMap<String, String>,
}

/// Validates one data record. On failure returns every failure of the record, except that a
/// wrong field count is reported alone (the fields cannot be matched to columns then).
pub fn validate_record(header: &Header, record: &ByteRecord) -> Result<ValidItem, Vec<FieldError>> {
    if record.len() != header.len() {
        return Err(vec![FieldError::new(
            "record",
            "field_count",
            format!(
                "the record has {} field(s) but the header has {} column(s)",
                record.len(),
                header.len()
            ),
        )]);
    }

    let mut errors = Vec::new();
    let fields: Vec<Option<Cow<'_, str>>> = header
        .columns()
        .iter()
        .zip(decode_fields(record))
        .map(|(column, decoded)| match decoded {
            Ok(text) => Some(text),
            Err(offset) => {
                errors.push(FieldError::new(
                    column.name(),
                    "encoding_invalid",
                    format!(
                        "{} is not valid UTF-8 (bad byte at offset {offset})",
                        column.name()
                    ),
                ));
                None
            }
        })
        .collect();
    // `None` when the field failed to decode (already reported, so its rules are skipped); an
    // absent optional column reads as empty.
    let text = |column: &Column| -> Option<&str> {
        match header.position(column) {
            Some(index) => fields.get(index)?.as_deref().map(str::trim),
            None => Some(""),
        }
    };

    let errs = &mut errors;
    let sku = text(&Column::Sku).map(|v| sku(v, errs)).unwrap_or_default();
    let name = text(&Column::Name)
        .map(|v| required_text(&NAME, "name_missing", v, errs))
        .unwrap_or_default();
    let product_url = text(&Column::ProductUrl)
        .map(|v| product_url(v, errs))
        .unwrap_or_default();
    let brand = text(&Column::Brand).and_then(|v| optional_text(&BRAND, v, errs));
    let category = text(&Column::Category).and_then(|v| optional_text(&CATEGORY, v, errs));
    let description = text(&Column::Description).and_then(|v| optional_text(&DESCRIPTION, v, errs));
    let price = text(&Column::Price).and_then(|v| price(v, errs));
    let currency = text(&Column::Currency)
        .map(|v| currency(v, errs))
        .unwrap_or_default();
    let weight_grams =
        text(&Column::Weight).and_then(|v| weight_grams(v, text(&Column::WeightUnit), errs));
    let availability = text(&Column::Availability).and_then(Availability::parse);
    let image_urls = text(&Column::ImageUrls)
        .map(|v| image_urls(v, errs))
        .unwrap_or_default();
    // Only attribute columns are trimmed here (the known ones were above), and each one is
    // inserted: collecting gathered and sorted the pairs first, a tenth of a row's validation.
    let mut attributes = BTreeMap::new();
    for (column, value) in header.columns().iter().zip(&fields) {
        if let (Column::Attribute(name), Some(value)) = (column, value.as_deref()) {
            let value = value.trim();
            if !value.is_empty() {
                attributes.insert(name.clone(), value.to_owned());
            }
        }
    }

    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(ValidItem {
        sku,
        name,
        product_url,
        brand,
        category,
        description,
        price,
        currency,
        weight_grams,
        availability,
        image_urls,
        attributes,
    })
}

/// Each field of `record` as [`decode`] gives it, with one search for NUL bytes and one UTF-8
/// check of the whole record instead of one per field (NUL bytes and bad bytes are rare, and a
/// check per field cost more in calls than in bytes). A field of a valid, NUL-free record is
/// valid when it starts and ends on character boundaries, which `str::get` checks; any other
/// field (rare: its record has a NUL or a bad byte) takes `decode`. Both whole-record passes
/// use the vector units (`memchr`, `simdutf8`): with `<[u8]>::contains` and `str::from_utf8`
/// they were 17% of parsing and validating a record (callgrind, `make bench-rows`' file).
fn decode_fields(record: &ByteRecord) -> impl Iterator<Item = Result<Cow<'_, str>, usize>> {
    let has_nul = memchr::memchr(0, record.as_slice()).is_some();
    let whole = if has_nul {
        None
    } else {
        simdutf8::basic::from_utf8(record.as_slice()).ok()
    };
    record.iter().enumerate().map(move |(index, raw)| {
        match whole.and_then(|whole| whole.get(record.range(index)?)) {
            Some(text) => Ok(Cow::Borrowed(text)),
            None => decode(raw),
        }
    })
}

/// Removes NUL bytes (Postgres text cannot hold them), then decodes UTF-8; on failure returns the
/// offset of the first bad byte in the NUL-free field.
fn decode(raw: &[u8]) -> Result<Cow<'_, str>, usize> {
    if raw.contains(&0) {
        String::from_utf8(raw.iter().copied().filter(|&b| b != 0).collect())
            .map(Cow::Owned)
            .map_err(|e| e.utf8_error().valid_up_to())
    } else {
        std::str::from_utf8(raw)
            .map(Cow::Borrowed)
            .map_err(|e| e.valid_up_to())
    }
}

/// A value for a message: Debug-quoted (so quotes, newlines and control characters are visible)
/// and cut to `MESSAGE_VALUE_CHARS` characters.
fn quote(value: &str) -> String {
    match value.char_indices().nth(MESSAGE_VALUE_CHARS) {
        Some((cut, _)) => format!("{:?}", format!("{}…", &value[..cut])),
        None => format!("{value:?}"),
    }
}

fn sku(value: &str, errors: &mut Vec<FieldError>) -> String {
    if value.is_empty() {
        errors.push(FieldError::new("sku", "sku_missing", "sku is empty".into()));
        return String::new();
    }
    let chars = value.chars().count();
    if chars > MAX_SKU_CHARS {
        errors.push(FieldError::new(
            "sku",
            "sku_too_long",
            format!(
                "sku {} is {chars} characters long; the limit is {MAX_SKU_CHARS}",
                quote(value)
            ),
        ));
    }
    let is_allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    if let Some(bad) = value.chars().find(|&c| !is_allowed(c)) {
        errors.push(FieldError::new(
            "sku",
            "sku_charset",
            format!(
                "sku {} contains {bad:?}; only A-Z, a-z, 0-9 and _ . / - are allowed",
                quote(value)
            ),
        ));
    }
    value.to_owned()
}

/// A free-text field with a length limit in characters.
struct TextLimit {
    field: &'static str,
    max_chars: usize,
    too_long: &'static str,
}

fn required_text(
    limit: &TextLimit,
    missing: &str,
    value: &str,
    errors: &mut Vec<FieldError>,
) -> String {
    if value.is_empty() {
        errors.push(FieldError::new(
            limit.field,
            missing,
            format!("{} is empty", limit.field),
        ));
        return String::new();
    }
    optional_text(limit, value, errors).unwrap_or_default()
}

fn optional_text(limit: &TextLimit, value: &str, errors: &mut Vec<FieldError>) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    // Bytes bound characters from above, so most values skip the count.
    let chars = if value.len() > limit.max_chars {
        value.chars().count()
    } else {
        value.len()
    };
    if chars > limit.max_chars {
        errors.push(FieldError::new(
            limit.field,
            limit.too_long,
            format!(
                "{} {} is {chars} characters long; the limit is {}",
                limit.field,
                quote(value),
                limit.max_chars
            ),
        ));
    }
    Some(value.to_owned())
}

fn product_url(value: &str, errors: &mut Vec<FieldError>) -> String {
    if value.is_empty() {
        errors.push(FieldError::new(
            "product_url",
            "url_missing",
            "product_url is empty".into(),
        ));
    } else if let Err(e) = check_url(value) {
        errors.push(FieldError::new(
            "product_url",
            e.code,
            format!("product_url {} {}", quote(value), e.message),
        ));
    }
    value.to_owned()
}

/// Why a number was rejected; worded to follow the quoted value in a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberError {
    NotANumber,
    Exponent,
    Signed,
    TooPrecise,
}

impl NumberError {
    fn reason(self) -> &'static str {
        match self {
            Self::NotANumber => "is not a plain decimal number",
            Self::Exponent => "uses exponent notation; write the number out",
            Self::Signed => "has a sign; write the plain amount without + or -",
            Self::TooPrecise => "has more digits than can be stored exactly",
        }
    }
}

/// Parses `digits[.digits]` (either side may be empty, not both), keeping the scale as written.
/// No sign, exponent, separators or special values.
fn parse_plain_decimal(s: &str) -> Result<Decimal, NumberError> {
    if s.starts_with(['+', '-']) {
        return Err(NumberError::Signed);
    }
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(int) || !all_digits(frac) || (int.is_empty() && frac.is_empty()) {
        let exponent_like = s.contains(['e', 'E'])
            && s.bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
        return Err(if exponent_like {
            NumberError::Exponent
        } else {
            NumberError::NotANumber
        });
    }
    // Leading zeros carry no precision, and would otherwise count against Decimal's 28 digits.
    let int = match int.trim_start_matches('0') {
        "" => "0",
        significant => significant,
    };
    decimal_of_digits(int, frac)
}

/// `int` without leading zeros (or `0`) and `frac`, both all digits, with `frac`'s length as
/// the scale.
fn decimal_of_digits(int: &str, frac: &str) -> Result<Decimal, NumberError> {
    // Up to 19 digits fit a u64 mantissa: built directly, without the text round trip of
    // `decimal_of_text` (every price and weight goes through here).
    if int.len() + frac.len() <= 19 {
        let mantissa = int
            .bytes()
            .chain(frac.bytes())
            .fold(0u64, |m, digit| m * 10 + u64::from(digit - b'0'));
        return Ok(Decimal::from_i128_with_scale(
            i128::from(mantissa),
            frac.len() as u32,
        ));
    }
    decimal_of_text(int, frac)
}

/// [`decimal_of_digits`] through Decimal's own parser, for any number of digits.
fn decimal_of_text(int: &str, frac: &str) -> Result<Decimal, NumberError> {
    let canonical = if frac.is_empty() {
        Cow::Borrowed(int)
    } else {
        Cow::Owned(format!("{int}.{frac}"))
    };
    Decimal::from_str_exact(&canonical).map_err(|_| NumberError::TooPrecise)
}

/// Price: one optional leading `$`, `€` or `£`, optionally followed by spaces (`€ 19.90`), then
/// digits with `,` thousands separators in groups of three and an optional `.` fraction. The
/// scale is kept as written. Misplaced commas are rejected rather than dropped so that a decimal
/// comma (`12,50`) never silently becomes 1250.
fn price(value: &str, errors: &mut Vec<FieldError>) -> Option<Decimal> {
    if value.is_empty() {
        return None;
    }
    match parse_price(value) {
        Ok(price) => Some(price),
        Err(reason) => {
            errors.push(FieldError::new(
                "price",
                "price_invalid",
                format!("price {} {reason}", quote(value)),
            ));
            None
        }
    }
}

fn parse_price(value: &str) -> Result<Decimal, &'static str> {
    let amount = value
        .strip_prefix(['$', '€', '£'])
        .map_or(value, str::trim_start);
    if amount.is_empty() {
        return Err("has no amount after the currency symbol");
    }
    let (int, frac) = match amount.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (amount, None),
    };
    let ungrouped = if int.contains(',') {
        let int = ungroup_thousands(int)
            .ok_or("has misplaced thousands separators (expected e.g. 1,299.00)")?;
        Cow::Owned(frac.map_or_else(|| int.clone(), |frac| format!("{int}.{frac}")))
    } else {
        Cow::Borrowed(amount)
    };
    let price = parse_plain_decimal(&ungrouped).map_err(NumberError::reason)?;
    if price >= Decimal::from(PRICE_LIMIT) {
        return Err("is too large; prices must be below 10,000,000");
    }
    Ok(price)
}

/// `1,299,000` → `1299000`; `None` unless every group after the first has exactly three
/// characters and the first has one to three.
fn ungroup_thousands(int: &str) -> Option<String> {
    let mut groups = int.split(',');
    let first = groups.next().filter(|g| (1..=3).contains(&g.len()))?;
    let mut digits = first.to_owned();
    for group in groups {
        if group.len() != 3 {
            return None;
        }
        digits.push_str(group);
    }
    Some(digits)
}

fn currency(value: &str, errors: &mut Vec<FieldError>) -> String {
    if value.is_empty() {
        return DEFAULT_CURRENCY.to_owned();
    }
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_alphabetic()) {
        return value.to_ascii_uppercase();
    }
    errors.push(FieldError::new(
        "currency",
        "currency_invalid",
        format!(
            "currency {} is not a three-letter code such as USD or EUR",
            quote(value)
        ),
    ));
    String::new()
}

/// Weight in grams. `unit` is `None` when the unit field failed to decode (already reported).
/// A unit without a weight is ignored.
fn weight_grams(value: &str, unit: Option<&str>, errors: &mut Vec<FieldError>) -> Option<Decimal> {
    if value.is_empty() {
        return None;
    }
    let weight = match parse_plain_decimal(value) {
        Ok(weight) if weight > Decimal::ZERO => Some(weight),
        Ok(_) => {
            errors.push(weight_invalid(value, "must be greater than zero"));
            None
        }
        Err(e) => {
            errors.push(weight_invalid(value, e.reason()));
            None
        }
    };
    let grams_per_unit = match unit? {
        "" => {
            errors.push(FieldError::new(
                "weight_unit",
                "weight_unit_missing",
                format!(
                    "weight {} has no weight_unit (expected g, kg, oz or lb)",
                    quote(value)
                ),
            ));
            None
        }
        unit => {
            let factor = grams_per(unit);
            if factor.is_none() {
                errors.push(FieldError::new(
                    "weight_unit",
                    "weight_unit_invalid",
                    format!(
                        "weight_unit {} is not one of g, kg, oz or lb (or grams, kilograms, \
                         ounces, lbs, pounds)",
                        quote(unit)
                    ),
                ));
            }
            factor
        }
    };
    let grams = weight?.checked_mul(grams_per_unit?);
    if grams.is_none() {
        errors.push(weight_invalid(value, "is too large to convert to grams"));
    }
    // To the microgram: ClickHouse keeps weights as Float64, and a digest that compares the
    // stores must see the same value in both, which a seventh decimal would not always give.
    grams.map(|g| {
        g.round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
            .normalize()
    })
}

fn weight_invalid(value: &str, reason: &str) -> FieldError {
    FieldError::new(
        "weight",
        "weight_invalid",
        format!("weight {} {reason}", quote(value)),
    )
}

/// Grams per unit, exact: 1 oz = 28.349523125 g and 1 lb = 453.59237 g by definition.
fn grams_per(unit: &str) -> Option<Decimal> {
    let unit = unit.to_ascii_lowercase();
    // "oz." and "lbs." are common abbreviations.
    match unit.strip_suffix('.').unwrap_or(&unit) {
        "g" | "gram" | "grams" | "gramme" | "grammes" => Some(Decimal::ONE),
        "kg" | "kgs" | "kilo" | "kilos" | "kilogram" | "kilograms" => Some(Decimal::ONE_THOUSAND),
        "oz" | "ounce" | "ounces" => Some(Decimal::new(28_349_523_125, 9)),
        "lb" | "lbs" | "pound" | "pounds" => Some(Decimal::new(45_359_237, 5)),
        _ => None,
    }
}

/// `|`-separated URLs, each trimmed, empty segments ignored. At most `MAX_IMAGES` bad URLs are
/// reported one by one: more bad URLs than that imply `too_many_images`, and reporting them all
/// would let one huge field produce an unbounded list of failures.
fn image_urls(value: &str, errors: &mut Vec<FieldError>) -> Vec<String> {
    let urls: Vec<&str> = value
        .split('|')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect();
    let total = urls.len();
    if total > MAX_IMAGES {
        errors.push(FieldError::new(
            "image_urls",
            "too_many_images",
            format!("image_urls has {total} URLs; the limit is {MAX_IMAGES}"),
        ));
    }
    let failures = urls.iter().enumerate().filter_map(|(index, url)| {
        check_url(url).err().map(|e| {
            FieldError::new(
                "image_urls",
                "image_url_invalid",
                format!(
                    "image URL {} of {total} {} {} ({})",
                    index + 1,
                    quote(url),
                    e.message,
                    e.code
                ),
            )
        })
    });
    errors.extend(failures.take(MAX_IMAGES));
    urls.into_iter().map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const ALL: [&str; 13] = [
        "sku",
        "name",
        "product_url",
        "brand",
        "category",
        "description",
        "price",
        "currency",
        "weight",
        "weight_unit",
        "availability",
        "image_urls",
        "color",
    ];

    fn header(names: &[&str]) -> Header {
        Header::parse(&ByteRecord::from(names.to_vec())).expect("valid header")
    }

    /// Validates a record of the full header, with `changes` (column, bytes) applied to a valid
    /// base record.
    fn check(changes: &[(&str, &[u8])]) -> Result<ValidItem, Vec<FieldError>> {
        let mut fields: Vec<Vec<u8>> = [
            "SKU-1",
            "Trail Hoodie",
            "https://shop.example.com/p/1",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
            "",
        ]
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect();
        for (column, value) in changes {
            let index = ALL.iter().position(|c| c == column).expect("known column");
            fields[index] = value.to_vec();
        }
        validate_record(&header(&ALL), &ByteRecord::from(fields))
    }

    fn codes(changes: &[(&str, &[u8])]) -> Vec<(String, String)> {
        check(changes)
            .expect_err("record should be invalid")
            .into_iter()
            .map(|e| (e.field, e.code))
            .collect()
    }

    fn one(field: &str, code: &str) -> Vec<(String, String)> {
        vec![(field.to_owned(), code.to_owned())]
    }

    fn dec(s: &str) -> Decimal {
        s.parse().expect("test decimal")
    }

    #[test]
    fn minimal_record_is_valid_with_defaults() {
        let item = check(&[]).expect("valid");
        assert_eq!(
            item,
            ValidItem {
                sku: "SKU-1".into(),
                name: "Trail Hoodie".into(),
                product_url: "https://shop.example.com/p/1".into(),
                brand: None,
                category: None,
                description: None,
                price: None,
                currency: "USD".into(),
                weight_grams: None,
                availability: None,
                image_urls: vec![],
                attributes: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn full_record_is_trimmed_and_normalised() {
        let item = check(&[
            ("sku", b"  AB-12_3./x "),
            ("name", "\u{a0}Café Crème 日本 🎉 ".as_bytes()),
            ("brand", b" Cotopaxi "),
            ("category", b"Apparel > Jackets"),
            ("description", b"Warm, light.\nSecond line."),
            ("price", b" $1,299.00 "),
            ("currency", b"eur"),
            ("weight", b"1.5"),
            ("weight_unit", b"KG"),
            ("availability", b"In Stock"),
            (
                "image_urls",
                b" https://cdn.example.com/a.jpg || https://cdn.example.com/b.jpg |",
            ),
            ("color", b" Forest Green "),
        ])
        .expect("valid");
        assert_eq!(item.sku, "AB-12_3./x");
        assert_eq!(item.name, "Café Crème 日本 🎉");
        assert_eq!(item.brand.as_deref(), Some("Cotopaxi"));
        assert_eq!(
            item.description.as_deref(),
            Some("Warm, light.\nSecond line.")
        );
        assert_eq!(item.price, Some(dec("1299.00")));
        assert_eq!(item.price.map(|p| p.to_string()), Some("1299.00".into()));
        assert_eq!(item.currency, "EUR");
        assert_eq!(item.weight_grams, Some(dec("1500")));
        assert_eq!(item.availability, Some(Availability::InStock));
        assert_eq!(
            item.image_urls,
            [
                "https://cdn.example.com/a.jpg",
                "https://cdn.example.com/b.jpg"
            ]
        );
        assert_eq!(
            item.attributes,
            BTreeMap::from([("color".to_owned(), "Forest Green".to_owned())])
        );
    }

    #[test]
    fn field_count_is_reported_alone() {
        let header = header(&ALL);
        for fields in [vec![""; 12], vec![""; 14], vec![""]] {
            let errors = validate_record(&header, &ByteRecord::from(fields.clone()))
                .expect_err("wrong field count");
            assert_eq!(errors.len(), 1);
            assert_eq!(
                (errors[0].field.as_str(), errors[0].code.as_str()),
                ("record", "field_count")
            );
            assert!(
                errors[0]
                    .message
                    .contains(&format!("has {} field(s)", fields.len()))
            );
            assert!(errors[0].message.contains("13 column(s)"));
        }
    }

    #[test]
    fn nul_bytes_are_removed_before_anything_else() {
        let item = check(&[
            ("sku", b"SK\0U-1"),
            ("name", b"\0 Hoodie \0"),
            // A NUL splitting a multibyte character must not make it invalid UTF-8.
            ("brand", b"Caf\xc3\0\xa9"),
            ("color", b"\0"),
        ])
        .expect("valid");
        assert_eq!(item.sku, "SKU-1");
        assert_eq!(item.name, "Hoodie");
        assert_eq!(item.brand.as_deref(), Some("Café"));
        assert!(item.attributes.is_empty());
    }

    #[test]
    fn encoding_invalid_is_reported_with_other_failures() {
        let errors =
            check(&[("name", b"Caf\xe9"), ("sku", b""), ("color", b"\xff")]).expect_err("invalid");
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("name", "encoding_invalid"),
                ("color", "encoding_invalid"),
                ("sku", "sku_missing"),
            ]
        );
        assert!(
            errors[0].message.contains("offset 3"),
            "{}",
            errors[0].message
        );
        // A required field that does not decode is not also reported missing.
        assert_eq!(
            codes(&[("sku", b"\xff\xfe")]),
            one("sku", "encoding_invalid")
        );
    }

    #[test]
    fn sku_rules() {
        assert_eq!(codes(&[("sku", b"   ")]), one("sku", "sku_missing"));
        let exact = "A".repeat(200);
        assert!(check(&[("sku", exact.as_bytes())]).is_ok());
        let over = "A".repeat(201);
        assert_eq!(
            codes(&[("sku", over.as_bytes())]),
            one("sku", "sku_too_long")
        );
        for bad in ["SKU 1", "SKU#1", "SKÜ-1", "a,b", "x\ty"] {
            assert_eq!(
                codes(&[("sku", bad.as_bytes())]),
                one("sku", "sku_charset"),
                "{bad}"
            );
        }
        let both = format!("{}#", "A".repeat(200));
        assert_eq!(
            codes(&[("sku", both.as_bytes())]),
            [one("sku", "sku_too_long"), one("sku", "sku_charset")].concat()
        );
        let message = &check(&[("sku", b"SKU#1")]).unwrap_err()[0].message;
        assert!(
            message.contains("\"SKU#1\"") && message.contains("'#'"),
            "{message}"
        );
    }

    #[test]
    fn name_rules_count_characters_not_bytes() {
        assert_eq!(codes(&[("name", b"")]), one("name", "name_missing"));
        let exact = "é".repeat(500);
        assert!(check(&[("name", exact.as_bytes())]).is_ok());
        let over = "é".repeat(501);
        let errors = check(&[("name", over.as_bytes())]).unwrap_err();
        assert_eq!(errors[0].code, "name_too_long");
        assert!(errors[0].message.contains("501 characters"));
        assert!(
            errors[0].message.chars().count() < 200,
            "value is truncated"
        );
    }

    #[test]
    fn optional_text_limits() {
        for (field, limit, code) in [
            ("brand", 200, "brand_too_long"),
            ("category", 200, "category_too_long"),
            ("description", 50_000, "description_too_long"),
        ] {
            let exact = "ü".repeat(limit);
            assert!(check(&[(field, exact.as_bytes())]).is_ok(), "{field}");
            let over = "ü".repeat(limit + 1);
            assert_eq!(codes(&[(field, over.as_bytes())]), one(field, code));
        }
    }

    #[test]
    fn product_url_rules() {
        assert_eq!(
            codes(&[("product_url", b" ")]),
            one("product_url", "url_missing")
        );
        for (url, code) in [
            ("shop.example.com/p/1", "url_invalid"),
            ("ftp://shop.example.com/p/1", "url_scheme"),
            ("http://bücher.example/", "url_non_ascii_host"),
            ("http://[::1]/", "url_private_host"),
        ] {
            assert_eq!(
                codes(&[("product_url", url.as_bytes())]),
                one("product_url", code)
            );
        }
        let long = format!("https://shop.example.com/{}", "a".repeat(2_100));
        let errors = check(&[("product_url", long.as_bytes())]).unwrap_err();
        assert_eq!(errors[0].code, "url_too_long");
        assert!(
            errors[0]
                .message
                .starts_with("product_url \"https://shop.example.com/aaa")
        );
        assert!(check(&[("product_url", b"http://xn--bcher-kva.example/")]).is_ok());
    }

    #[test]
    fn url_column_alias_works_in_records() {
        let header = header(&["URL", "Name", "SKU"]);
        let item = validate_record(
            &header,
            &ByteRecord::from(vec!["https://shop.example.com/x", "X", "S1"]),
        )
        .expect("valid");
        assert_eq!(item.product_url, "https://shop.example.com/x");
        assert_eq!(item.sku, "S1");
    }

    #[test]
    fn prices() {
        for (input, expected) in [
            ("$1,299.00", "1299.00"),
            ("€0", "0"),
            ("£ 7.50", "7.50"),
            ("49.95", "49.95"),
            ("9999999.99", "9999999.99"),
            ("9,999,999", "9999999"),
            ("0.5", "0.5"),
            (".5", "0.5"),
            ("5.", "5"),
            ("007", "7"),
            ("12,345.6789", "12345.6789"),
        ] {
            let item = check(&[("price", input.as_bytes())]).expect(input);
            assert_eq!(item.price, Some(dec(expected)), "{input}");
        }
        assert_eq!(check(&[("price", b"  ")]).expect("valid").price, None);
    }

    #[test]
    fn price_invalid() {
        for (input, reason) in [
            ("-1", "sign"),
            ("+1", "sign"),
            ("$-1", "sign"),
            ("10000000", "too large"),
            ("10,000,000.00", "too large"),
            ("1e5", "exponent"),
            ("1.5E+3", "exponent"),
            ("NaN", "not a plain decimal"),
            ("inf", "not a plain decimal"),
            ("$", "no amount"),
            ("$$5", "not a plain decimal"),
            ("5$", "not a plain decimal"),
            ("USD 5", "not a plain decimal"),
            ("12,50", "thousands"),
            ("1,2345", "thousands"),
            (",100", "thousands"),
            ("1.2.3", "not a plain decimal"),
            ("1 299", "not a plain decimal"),
            (".", "not a plain decimal"),
            ("0.00000000000000000000000000001", "digits"),
        ] {
            let errors = check(&[("price", input.as_bytes())]).expect_err(input);
            assert_eq!(errors.len(), 1, "{input}");
            assert_eq!(errors[0].code, "price_invalid", "{input}");
            assert!(
                errors[0].message.contains(reason),
                "{input}: {}",
                errors[0].message
            );
            assert!(errors[0].message.contains(&format!("{input:?}")), "{input}");
        }
    }

    #[test]
    fn currency_rules() {
        assert_eq!(
            check(&[("currency", b"gbp")]).expect("valid").currency,
            "GBP"
        );
        assert_eq!(
            check(&[("currency", b"  ")]).expect("valid").currency,
            "USD"
        );
        let header = header(&["sku", "name", "url"]);
        let item = validate_record(
            &header,
            &ByteRecord::from(vec!["S", "N", "https://a.example/"]),
        )
        .expect("valid");
        assert_eq!(item.currency, "USD");
        for bad in ["US", "USDD", "U$D", "€UR", "12A"] {
            assert_eq!(
                codes(&[("currency", bad.as_bytes())]),
                one("currency", "currency_invalid")
            );
        }
    }

    #[test]
    fn weights_convert_to_grams_to_the_microgram() {
        for (weight, unit, grams) in [
            ("250", "g", "250"),
            ("250", "Grams", "250"),
            ("1.5", "kg", "1500"),
            ("2", "KILOGRAMS", "2000"),
            ("1", "oz", "28.349523"),
            ("4", "oz", "113.398093"),
            ("2", "Ounces", "56.699046"),
            ("1", "lb", "453.59237"),
            ("0.5", "lbs.", "226.796185"),
            ("3", "Pounds", "1360.77711"),
            ("0.001", "gram", "0.001"),
        ] {
            let item = check(&[
                ("weight", weight.as_bytes()),
                ("weight_unit", unit.as_bytes()),
            ])
            .expect(unit);
            assert_eq!(item.weight_grams, Some(dec(grams)), "{weight} {unit}");
        }
        // A unit without a weight is ignored, even when it is not a unit.
        let item = check(&[("weight_unit", b"stone")]).expect("valid");
        assert_eq!(item.weight_grams, None);
    }

    #[test]
    fn weight_failures() {
        for bad in ["0", "0.000", "-1", "heavy", "1,5", "1e3", "NaN"] {
            assert_eq!(
                codes(&[("weight", bad.as_bytes()), ("weight_unit", b"kg")]),
                one("weight", "weight_invalid"),
                "{bad}"
            );
        }
        assert_eq!(
            codes(&[("weight", b"2"), ("weight_unit", b" ")]),
            one("weight_unit", "weight_unit_missing")
        );
        assert_eq!(
            codes(&[("weight", b"2"), ("weight_unit", b"stone")]),
            one("weight_unit", "weight_unit_invalid")
        );
        // Both the weight and its unit are reported.
        assert_eq!(
            codes(&[("weight", b"-2"), ("weight_unit", b"st")]),
            [
                one("weight", "weight_invalid"),
                one("weight_unit", "weight_unit_invalid")
            ]
            .concat()
        );
        let big = "9".repeat(28);
        assert_eq!(
            codes(&[("weight", big.as_bytes()), ("weight_unit", b"lb")]),
            one("weight", "weight_invalid")
        );
        // Without a weight_unit column at all.
        let header = header(&["sku", "name", "url", "weight"]);
        let errors = validate_record(
            &header,
            &ByteRecord::from(vec!["S", "N", "https://a.example/", "3"]),
        )
        .expect_err("unit missing");
        assert_eq!(errors[0].code, "weight_unit_missing");
    }

    #[test]
    fn availability_spellings() {
        for (input, expected) in [
            ("In Stock", Availability::InStock),
            ("InStock", Availability::InStock),
            ("in-stock", Availability::InStock),
            ("IN_STOCK", Availability::InStock),
            ("available", Availability::InStock),
            ("Yes", Availability::InStock),
            ("https://schema.org/InStock", Availability::InStock),
            (
                "http://schema.org/LimitedAvailability",
                Availability::InStock,
            ),
            ("sold out", Availability::OutOfStock),
            ("Out of Stock", Availability::OutOfStock),
            ("unavailable", Availability::OutOfStock),
            ("https://schema.org/SoldOut", Availability::OutOfStock),
            ("Pre-Order", Availability::Preorder),
            ("preorder", Availability::Preorder),
            ("Backorder", Availability::Preorder),
            ("https://schema.org/BackOrder", Availability::Preorder),
            ("discontinued", Availability::Discontinued),
            ("No longer available", Availability::Discontinued),
            ("ask the shop", Availability::Unknown),
            ("3 left", Availability::Unknown),
        ] {
            let item = check(&[("availability", input.as_bytes())]).expect(input);
            assert_eq!(item.availability, Some(expected), "{input}");
        }
        assert_eq!(
            check(&[("availability", b" ")])
                .expect("valid")
                .availability,
            None
        );
        assert_eq!(Availability::OutOfStock.as_str(), "out_of_stock");
        assert_eq!(
            serde_json::to_string(&Availability::Preorder).expect("serialises"),
            "\"preorder\""
        );
    }

    fn image_list(count: usize) -> String {
        (0..count)
            .map(|i| format!("https://cdn.example.com/{i}.jpg"))
            .collect::<Vec<_>>()
            .join("|")
    }

    #[test]
    fn image_count_edges() {
        let fifty = image_list(50);
        assert_eq!(
            check(&[("image_urls", fifty.as_bytes())])
                .expect("valid")
                .image_urls
                .len(),
            50
        );
        let fifty_one = image_list(51);
        let errors = check(&[("image_urls", fifty_one.as_bytes())]).expect_err("too many");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, "too_many_images");
        assert!(errors[0].message.contains("51"));
    }

    #[test]
    fn image_url_invalid_names_url_and_reason() {
        let value = "https://cdn.example.com/a.jpg | http://127.0.0.1/b.jpg | /c.jpg";
        let errors = check(&[("image_urls", value.as_bytes())]).expect_err("invalid");
        let got: Vec<_> = errors
            .iter()
            .map(|e| (e.field.as_str(), e.code.as_str()))
            .collect();
        assert_eq!(got, [("image_urls", "image_url_invalid"); 2]);
        assert!(
            errors[0]
                .message
                .starts_with("image URL 2 of 3 \"http://127.0.0.1/b.jpg\"")
        );
        assert!(errors[0].message.contains("url_private_host"));
        assert!(errors[1].message.contains("url_invalid"));
    }

    #[test]
    fn bad_image_reports_are_capped() {
        let value = vec!["ftp://x.example/a"; 500].join("|");
        let errors = check(&[("image_urls", value.as_bytes())]).expect_err("invalid");
        assert_eq!(errors.len(), 1 + 50);
        assert_eq!(errors[0].code, "too_many_images");
    }

    #[test]
    fn attributes_keep_written_names_and_skip_empty_values() {
        let header = header(&["sku", "name", "url", "Color", "Size", ""]);
        let item = validate_record(
            &header,
            &ByteRecord::from(vec!["S", "N", "https://a.example/", " Red ", "  ", "x"]),
        )
        .expect("valid");
        assert_eq!(
            item.attributes,
            BTreeMap::from([
                ("Color".to_owned(), "Red".to_owned()),
                ("column_6".to_owned(), "x".to_owned()),
            ])
        );
        let errors = validate_record(
            &header,
            &ByteRecord::from(vec![
                &b"S"[..],
                b"N",
                b"https://a.example/",
                b"\xff",
                b"",
                b"",
            ]),
        )
        .expect_err("invalid");
        assert_eq!(errors[0].field, "Color");
    }

    #[test]
    fn field_error_round_trips_through_json() {
        let error = check(&[("sku", b"")]).unwrap_err().remove(0);
        let json = serde_json::to_string(&error).expect("serialises");
        assert_eq!(
            json,
            r#"{"field":"sku","code":"sku_missing","message":"sku is empty"}"#
        );
        assert_eq!(
            serde_json::from_str::<FieldError>(&json).expect("parses"),
            error
        );
    }

    #[test]
    fn raw_record_is_lossy_nul_free_and_truncated() {
        assert_eq!(
            RawRecord::from_bytes(b"a,\0b,\xff").as_str(),
            "a,b,\u{fffd}"
        );
        let long = "€".repeat(RAW_RECORD_LIMIT);
        let raw = RawRecord::from_bytes(long.as_bytes());
        assert_eq!(raw.as_str().len(), RAW_RECORD_LIMIT - RAW_RECORD_LIMIT % 3);
        assert!(raw.as_str().chars().all(|c| c == '€'));
        let exact = "a".repeat(RAW_RECORD_LIMIT);
        assert_eq!(RawRecord::from_bytes(exact.as_bytes()).into_string(), exact);
        let nuls: Vec<u8> = [vec![0; 20_000], b"tail".to_vec()].concat();
        assert_eq!(RawRecord::from_bytes(&nuls).as_str(), "tail");
        let invalid = vec![0xff; 10_000];
        let raw = RawRecord::from_bytes(&invalid);
        assert!(raw.as_str().len() <= RAW_RECORD_LIMIT);
        assert_eq!(raw.as_str().chars().count(), RAW_RECORD_LIMIT / 3);
    }

    proptest! {
        #[test]
        fn any_bytes_either_validate_or_explain(
            fields in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 13)
        ) {
            match validate_record(&header(&ALL), &ByteRecord::from(fields)) {
                Ok(item) => {
                    prop_assert!(!item.sku.is_empty() && !item.name.is_empty());
                    prop_assert_eq!(item.currency.len(), 3);
                }
                Err(errors) => prop_assert!(!errors.is_empty()),
            }
        }

        #[test]
        fn raw_record_is_a_bounded_prefix(
            raw in prop::collection::vec(any::<u8>(), 0..20_000)
        ) {
            let text = RawRecord::from_bytes(&raw).into_string();
            let without_nul: Vec<u8> = raw.iter().copied().filter(|&b| b != 0).collect();
            let full = String::from_utf8_lossy(&without_nul);
            prop_assert!(text.len() <= RAW_RECORD_LIMIT);
            prop_assert!(full.starts_with(&text));
            // Only a character straddling the limit may be dropped.
            prop_assert!(full.len() <= RAW_RECORD_LIMIT || text.len() > RAW_RECORD_LIMIT - 4);
        }

        /// The stack path decides every short ASCII value as the general one does.
        #[test]
        fn short_ascii_availability_is_read_as_any_other(
            prefix in prop::sample::select(
                vec!["", "https://schema.org/", "HTTP://Schema.org/", "http://"]),
            key in prop::sample::select(vec!["instock", "limitedavailability", "outofstock",
                "temporarilyoutofstock", "no", "preorder", "nolongeravailable", "other"]),
            upper in prop::collection::vec(any::<bool>(), 21),
            gaps in prop::collection::vec(prop::sample::select(vec![
                "", "", "", " ", "_", "-", "\t", "\x0b", "\x0c", "\r", "\n", "  ", "/", "."]), 22),
        ) {
            // A known spelling with random case and random separators between its letters.
            let mut body = String::from(gaps[0]);
            for (i, c) in key.chars().enumerate() {
                body.push(if upper[i] { c.to_ascii_uppercase() } else { c });
                body.push_str(gaps[i + 1]);
            }
            let value = format!("{prefix}{body}");
            prop_assert_eq!(
                Availability::parse_short_ascii(&value),
                (value.len() <= 64).then(|| Availability::parse_any(&value))
            );
        }

        /// The whole-record checks decode every field as `decode` does alone, also where a
        /// character is split between fields (the record is valid, its fields are not).
        #[test]
        fn a_record_decodes_as_its_fields_do(
            fields in prop::collection::vec(
                prop::collection::vec(prop::sample::select(vec![
                    &b"a"[..], b"bc", b" ", b"\xc3\xa9", b"\xc3", b"\xa9", b"\xe2\x82\xac",
                    b"\xe2", b"\x82\xac", b"\xf0\x9f\x98\x80", b"\0", b"\xff",
                ]), 0..5).prop_map(|pieces| pieces.concat()),
                1..6,
            )
        ) {
            let record = ByteRecord::from(fields.clone());
            let whole: Vec<_> = decode_fields(&record).collect();
            let alone: Vec<_> = fields.iter().map(|raw| decode(raw)).collect();
            prop_assert_eq!(whole, alone);
        }

        /// The digits' path keeps the text path's value and scale, and its errors.
        #[test]
        fn short_plain_decimals_are_read_as_long_ones(
            int in "0|[1-9][0-9]{0,21}",
            frac in "[0-9]{0,19}",
        ) {
            let fast = decimal_of_digits(&int, &frac);
            let general = decimal_of_text(&int, &frac);
            prop_assert_eq!(fast, general);
            if let (Ok(fast), Ok(general)) = (fast, general) {
                prop_assert_eq!(fast.scale(), general.scale());
            }
        }

        #[test]
        fn prices_round_trip(units in 0u64..10_000_000, cents in 0u64..100) {
            let plain = format!("{units}.{cents:02}");
            let parsed = parse_price(&plain).map_err(TestCaseError::fail)?;
            prop_assert_eq!(parsed.to_string(), plain);
        }
    }

    #[test]
    fn messages_truncate_long_values() {
        let quoted = quote(&"x".repeat(1_000));
        assert_eq!(quoted.chars().count(), 100 + 3);
        assert!(quoted.ends_with("…\""));
        assert_eq!(quote("a\"b\nc"), r#""a\"b\nc""#);
    }
}
