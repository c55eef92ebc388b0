//! Parsing one planned chunk into valid items and invalid rows (pure, no I/O).

use std::collections::HashMap;

use crate::contract::{FieldError, Header, HeaderError, RawRecord, ValidItem, validate_record};

#[derive(Debug, Clone, PartialEq)]
pub struct ValidRow {
    pub row_number: u64,
    pub item: ValidItem,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InvalidRow {
    pub row_number: u64,
    pub errors: Vec<FieldError>,
    pub raw: RawRecord,
}

#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedChunk {
    pub rows_total: u64,
    /// Every valid record in row order (each one is an observation).
    pub valid: Vec<ValidRow>,
    pub invalid: Vec<InvalidRow>,
}

impl ParsedChunk {
    /// The last valid row of each sku: what the chunk contributes to the current catalog.
    pub fn latest_per_sku(&self) -> Vec<&ValidRow> {
        let mut latest: HashMap<&str, &ValidRow> = HashMap::with_capacity(self.valid.len());
        for row in &self.valid {
            latest.insert(row.item.sku.as_str(), row);
        }
        let mut rows: Vec<&ValidRow> = latest.into_values().collect();
        // One lock order for every transaction that upserts these skus: fewer deadlocks
        // between chunks that share skus.
        rows.sort_by(|a, b| a.item.sku.cmp(&b.item.sku));
        rows
    }
}

fn reader(bytes: &[u8]) -> csv::Reader<&[u8]> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(bytes)
}

/// Parses the header record captured by the planner.
pub fn parse_header(header_bytes: &[u8]) -> Result<Header, HeaderError> {
    let mut record = csv::ByteRecord::new();
    match reader(header_bytes).read_byte_record(&mut record) {
        Ok(true) => Header::parse(&record),
        _ => Err(HeaderError::Empty),
    }
}

/// Parses the records of `bytes` (a planned chunk: whole records only), numbering them from
/// `first_row`.
pub fn parse_chunk(header: &Header, bytes: &[u8], first_row: u64) -> ParsedChunk {
    let mut parsed = ParsedChunk::default();
    let mut reader = reader(bytes);
    let mut record = csv::ByteRecord::new();
    // The chunk is in memory, so reading cannot fail with I/O; csv reports no other errors in
    // flexible mode, and a record that is not UTF-8 is judged by the validator.
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let row_number = first_row + parsed.rows_total;
        parsed.rows_total += 1;
        match validate_record(header, &record) {
            Ok(item) => parsed.valid.push(ValidRow { row_number, item }),
            Err(errors) => {
                let start = record.position().map_or(0, |p| p.byte()) as usize;
                let end = reader.position().byte() as usize;
                let raw = trim_terminator(&bytes[start.min(end)..end]);
                parsed.invalid.push(InvalidRow {
                    row_number,
                    errors,
                    raw: RawRecord::from_bytes(raw),
                });
            }
        }
    }
    parsed
}

/// A record's span can start with the `\n` of a CRLF (csv_core ends records at the `\r`) and
/// ends with its terminator; neither belongs to the raw record.
fn trim_terminator(mut raw: &[u8]) -> &[u8] {
    while let [b'\n' | b'\r', rest @ ..] = raw {
        raw = rest;
    }
    while let [rest @ .., b'\n' | b'\r'] = raw {
        raw = rest;
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        parse_header(b"sku,name,product_url,price\n").unwrap()
    }

    #[test]
    fn numbers_rows_from_the_chunk_start_and_keeps_raw_invalid_records() {
        let chunk = b"A1,Alpha,https://shop.example/a,1.00\r\nbad sku!,Beta,https://shop.example/b,2\n\nA1,Alpha 2,https://shop.example/a2,3.00\n";
        let parsed = parse_chunk(&header(), chunk, 41);
        assert_eq!(parsed.rows_total, 3);
        assert_eq!(parsed.valid.len(), 2);
        assert_eq!(parsed.valid[0].row_number, 41);
        assert_eq!(parsed.valid[1].row_number, 43);
        assert_eq!(parsed.invalid.len(), 1);
        assert_eq!(parsed.invalid[0].row_number, 42);
        assert_eq!(parsed.invalid[0].errors[0].code, "sku_charset");
        assert_eq!(
            parsed.invalid[0].raw.as_str(),
            "bad sku!,Beta,https://shop.example/b,2"
        );
        let latest = parsed.latest_per_sku();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].row_number, 43, "the later row of a sku wins");
        assert_eq!(latest[0].item.name, "Alpha 2");
    }

    #[test]
    fn multi_line_quoted_record_is_one_row_with_its_raw_text() {
        let chunk = b"B2,\"Two\nlines\",ftp://x.example/b,1\n";
        let parsed = parse_chunk(&header(), chunk, 1);
        assert_eq!(parsed.rows_total, 1);
        assert_eq!(
            parsed.invalid[0].raw.as_str(),
            "B2,\"Two\nlines\",ftp://x.example/b,1"
        );
        assert_eq!(parsed.invalid[0].errors[0].code, "url_scheme");
    }
}
