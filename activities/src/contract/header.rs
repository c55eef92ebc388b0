//! Mapping the header record to columns.

use std::collections::HashSet;
use std::fmt;

use csv::ByteRecord;

/// A column of the catalog CSV, identified by its header name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Column {
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
    /// Any other column; holds the trimmed header name as written. Its values are kept as item
    /// attributes under that name.
    Attribute(String),
}

/// Number of non-attribute columns; sizes `Header`'s lookup table.
const KNOWN_COLUMNS: usize = 12;

/// Columns a header must have, in the order a failure reports them.
const REQUIRED: [Column; 3] = [Column::Sku, Column::Name, Column::ProductUrl];

impl Column {
    /// Maps a trimmed header name to its column, case-insensitively and with the contract's aliases.
    fn from_name(name: &str) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "sku" => Self::Sku,
            "name" => Self::Name,
            "product_url" | "url" => Self::ProductUrl,
            "brand" => Self::Brand,
            "category" => Self::Category,
            "description" => Self::Description,
            "price" => Self::Price,
            "currency" => Self::Currency,
            "weight" => Self::Weight,
            "weight_unit" | "weight_units" => Self::WeightUnit,
            "availability" => Self::Availability,
            "image_urls" | "images" => Self::ImageUrls,
            _ => Self::Attribute(name.to_owned()),
        }
    }

    /// The canonical name: what failures report in `FieldError::field`, and the attribute key.
    pub fn name(&self) -> &str {
        match self {
            Self::Sku => "sku",
            Self::Name => "name",
            Self::ProductUrl => "product_url",
            Self::Brand => "brand",
            Self::Category => "category",
            Self::Description => "description",
            Self::Price => "price",
            Self::Currency => "currency",
            Self::Weight => "weight",
            Self::WeightUnit => "weight_unit",
            Self::Availability => "availability",
            Self::ImageUrls => "image_urls",
            Self::Attribute(name) => name,
        }
    }

    /// Slot in `Header::known`; `None` for attributes.
    const fn slot(&self) -> Option<usize> {
        Some(match self {
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
            Self::Availability => 10,
            Self::ImageUrls => 11,
            Self::Attribute(_) => return None,
        })
    }
}

/// Why a header record cannot be used. Every variant is a non-retryable job failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// The object has no header record at all.
    Empty,
    /// A header name is not valid UTF-8.
    NotUtf8,
    MissingColumns(Vec<String>),
    DuplicateColumns(Vec<String>),
    /// Both of the above at once, so that one run tells the user everything to fix.
    Invalid {
        missing: Vec<String>,
        duplicated: Vec<String>,
    },
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("the CSV has no header record"),
            Self::NotUtf8 => f.write_str("the header record is not valid UTF-8"),
            Self::MissingColumns(missing) => {
                write!(f, "missing required column(s): {}", missing.join(", "))
            }
            Self::DuplicateColumns(duplicated) => {
                write!(f, "duplicated column(s): {}", duplicated.join(", "))
            }
            Self::Invalid {
                missing,
                duplicated,
            } => write!(
                f,
                "missing required column(s): {}; duplicated column(s): {}",
                missing.join(", "),
                duplicated.join(", ")
            ),
        }
    }
}

impl std::error::Error for HeaderError {}

/// The parsed header: one `Column` per field, in record order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    columns: Vec<Column>,
    names: Vec<String>,
    /// Field index of each non-attribute column, by `Column::slot`, so that validating a record
    /// never searches the header.
    known: [Option<usize>; KNOWN_COLUMNS],
}

impl Header {
    /// Parses the first record of the object (the caller has already dropped a byte-order mark).
    ///
    /// NUL bytes are removed and names trimmed, as for data fields. A blank name becomes the
    /// attribute `column_N` (N = 1-based position): spreadsheet exports often leave an unnamed
    /// column, and its values should neither be lost nor make two blank names a "duplicate".
    pub fn parse(record: &ByteRecord) -> Result<Self, HeaderError> {
        if record.is_empty() {
            return Err(HeaderError::Empty);
        }
        let mut columns = Vec::with_capacity(record.len());
        let mut names = Vec::with_capacity(record.len());
        let mut known = [None; KNOWN_COLUMNS];
        let mut seen = HashSet::new();
        let mut reported = HashSet::new();
        let mut duplicated: Vec<String> = Vec::new();
        for (index, raw) in record.iter().enumerate() {
            let without_nul: Vec<u8> = raw.iter().copied().filter(|&b| b != 0).collect();
            let name = String::from_utf8(without_nul).map_err(|_| HeaderError::NotUtf8)?;
            let name = match name.trim() {
                "" => format!("column_{}", index + 1),
                trimmed => trimmed.to_owned(),
            };
            let column = Column::from_name(&name);
            // Attributes are compared by their lower-cased name, known columns by identity, so an
            // alias and its canonical name clash.
            let key = match &column {
                Column::Attribute(name) => Column::Attribute(name.to_lowercase()),
                other => other.clone(),
            };
            if !seen.insert(key.clone()) && reported.insert(key) {
                duplicated.push(column.name().to_owned());
            }
            if let Some(slot) = column.slot() {
                known[slot].get_or_insert(index);
            }
            columns.push(column);
            names.push(name);
        }
        let missing: Vec<String> = REQUIRED
            .iter()
            .filter(|c| c.slot().is_some_and(|slot| known[slot].is_none()))
            .map(|c| c.name().to_owned())
            .collect();
        match (missing.is_empty(), duplicated.is_empty()) {
            (true, true) => Ok(Self {
                columns,
                names,
                known,
            }),
            (false, true) => Err(HeaderError::MissingColumns(missing)),
            (true, false) => Err(HeaderError::DuplicateColumns(duplicated)),
            (false, false) => Err(HeaderError::Invalid {
                missing,
                duplicated,
            }),
        }
    }

    /// Number of fields every data record must have.
    #[expect(
        clippy::len_without_is_empty,
        reason = "a parsed header always holds the required columns"
    )]
    pub fn len(&self) -> usize {
        self.columns.len()
    }

    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// Header names as written (trimmed, NUL bytes removed), in record order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Field index of a non-attribute column, if the header has it.
    pub(super) fn position(&self, column: &Column) -> Option<usize> {
        column.slot().and_then(|slot| self.known[slot])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &[&[u8]]) -> Result<Header, HeaderError> {
        Header::parse(&ByteRecord::from(fields.to_vec()))
    }

    #[test]
    fn maps_names_case_insensitively_after_trimming() {
        let header = parse(&[
            b" SKU ",
            b"Name",
            b"URL",
            b"Weight_Units",
            b"IMAGES",
            b" Color ",
        ])
        .expect("valid header");
        assert_eq!(
            header.columns(),
            [
                Column::Sku,
                Column::Name,
                Column::ProductUrl,
                Column::WeightUnit,
                Column::ImageUrls,
                Column::Attribute("Color".into()),
            ]
        );
        assert_eq!(
            header.names(),
            ["SKU", "Name", "URL", "Weight_Units", "IMAGES", "Color"]
        );
        assert_eq!(header.len(), 6);
        assert_eq!(header.position(&Column::ProductUrl), Some(2));
        assert_eq!(header.position(&Column::Price), None);
    }

    #[test]
    fn all_known_columns_and_canonical_names() {
        let header = parse(&[
            b"sku",
            b"name",
            b"product_url",
            b"brand",
            b"category",
            b"description",
            b"price",
            b"currency",
            b"weight",
            b"weight_unit",
            b"availability",
            b"image_urls",
        ])
        .expect("valid header");
        for (index, column) in header.columns().iter().enumerate() {
            assert_eq!(header.position(column), Some(index));
            assert_eq!(column.name(), header.names()[index]);
        }
    }

    #[test]
    fn removes_nul_bytes_from_names() {
        let header = parse(&[b"s\0ku", b"name", b"product_url"]).expect("valid header");
        assert_eq!(header.columns()[0], Column::Sku);
    }

    #[test]
    fn blank_names_become_positional_attributes() {
        let header = parse(&[b"sku", b"", b"name", b"product_url", b"  "]).expect("valid header");
        assert_eq!(
            header.names(),
            ["sku", "column_2", "name", "product_url", "column_5"]
        );
        assert_eq!(header.columns()[4], Column::Attribute("column_5".into()));
    }

    #[test]
    fn missing_required_columns_are_named() {
        let err = parse(&[b"name", b"brand"]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::MissingColumns(vec!["sku".into(), "product_url".into()])
        );
        assert_eq!(
            err.to_string(),
            "missing required column(s): sku, product_url"
        );
    }

    #[test]
    fn duplicates_are_case_insensitive_and_include_aliases() {
        let err = parse(&[b"sku", b"name", b"NAME", b"url", b"product_url"]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::DuplicateColumns(vec!["name".into(), "product_url".into()])
        );
        assert_eq!(err.to_string(), "duplicated column(s): name, product_url");

        let err = parse(&[b"sku", b"name", b"url", b"Color", b"color ", b"COLOR"]).unwrap_err();
        assert_eq!(err, HeaderError::DuplicateColumns(vec!["color".into()]));
        let err = parse(&[b"sku", b"name", b"url", b"images", b"image_urls"]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::DuplicateColumns(vec!["image_urls".into()])
        );
    }

    #[test]
    fn missing_and_duplicated_are_reported_together() {
        let err = parse(&[b"sku", b"sku", b"url"]).unwrap_err();
        assert_eq!(
            err,
            HeaderError::Invalid {
                missing: vec!["name".into()],
                duplicated: vec!["sku".into()],
            }
        );
        assert_eq!(
            err.to_string(),
            "missing required column(s): name; duplicated column(s): sku"
        );
    }

    #[test]
    fn empty_and_non_utf8_headers() {
        assert_eq!(parse(&[]).unwrap_err(), HeaderError::Empty);
        assert_eq!(
            parse(&[b"sku", b"na\xffme", b"url"]).unwrap_err(),
            HeaderError::NotUtf8
        );
    }
}
