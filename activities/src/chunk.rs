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
    // csv_core drops a UTF-8 BOM at the start of its input. The planner saw this chunk in the
    // middle of the object, where those bytes are data, so the parser must too: a leading
    // blank line (skipped like any blank line) puts the chunk's first byte mid-input.
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(std::io::Read::chain(&b"\n"[..], bytes));
    let mut record = csv::ByteRecord::new();
    // The chunk is in memory, so reading cannot fail with I/O; csv reports no other errors in
    // flexible mode, and a record that is not UTF-8 is judged by the validator.
    while let Ok(true) = reader.read_byte_record(&mut record) {
        let row_number = first_row + parsed.rows_total;
        parsed.rows_total += 1;
        match validate_record(header, &record) {
            Ok(item) => parsed.valid.push(ValidRow { row_number, item }),
            Err(errors) => {
                // Positions count the leading blank line; a record's start may be on it.
                let start = record.position().map_or(0, |p| p.byte()).saturating_sub(1) as usize;
                let end = reader.position().byte().saturating_sub(1) as usize;
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

    /// Found by the property test below: csv_core strips a BOM at the start of its input, but
    /// a chunk starting with those bytes is mid-object, where the planner read them as data.
    #[test]
    fn a_chunk_starting_with_bom_bytes_keeps_them_as_data() {
        let parsed = parse_chunk(&header(), b"\xEF\xBB\xBF\"\n,", 7);
        assert_eq!(parsed.rows_total, 2, "the quote is not at a field start");
        assert_eq!(parsed.invalid[0].raw.as_str(), "\u{feff}\"");
        assert_eq!(parsed.invalid[1].row_number, 8);
    }

    /// Bytes that hit the parser's and the validator's edge cases more often than uniform
    /// random bytes would: quotes, separators, both line ends, a BOM, non-UTF-8, URLs.
    fn fuzz_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just(b",".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\xEF\xBB\xBF".to_vec()),
            Just(b"\xFF\xFE".to_vec()),
            Just(b"https://shop.example/p".to_vec()),
            Just(b"http://127.0.0.1/".to_vec()),
            Just(b"$1,299.00".to_vec()),
            Just(b"A-1".to_vec()),
            prop::collection::vec(any::<u8>(), 0..8),
        ];
        prop::collection::vec(piece, 0..60).prop_map(|pieces| pieces.concat())
    }

    proptest::proptest! {
        /// The whole pipeline on any bytes: plan, header, every chunk parsed and validated.
        /// Nothing panics, every planned record is parsed once, and each one is valid or
        /// invalid: `rows_total = rows_valid + rows_invalid`.
        #[test]
        fn planner_parser_validator_account_for_every_row(
            header_line in proptest::sample::select(vec![
                &b"sku,name,product_url,price,weight,weight_unit,image_urls\n"[..],
                &b"\xEF\xBB\xBFsku,name,url\r\n"[..],
                &b"sku,name\n"[..],
                &b""[..],
            ]),
            body in fuzz_bytes(),
            chunk_bytes in 1u64..96,
        ) {
            let object = [header_line, &body[..]].concat();
            let plan = crate::planner::plan_bytes(&object, chunk_bytes);
            let Ok(header) = parse_header(&plan.header_bytes) else {
                return Ok(());
            };
            let (mut total, mut valid, mut invalid) = (0u64, 0u64, 0u64);
            for chunk in &plan.chunks {
                let bytes = &object[chunk.start as usize..chunk.end as usize];
                let parsed = parse_chunk(&header, bytes, chunk.first_row);
                proptest::prop_assert_eq!(parsed.rows_total, chunk.rows);
                proptest::prop_assert_eq!(
                    parsed.valid.len() + parsed.invalid.len(),
                    parsed.rows_total as usize
                );
                total += parsed.rows_total;
                valid += parsed.valid.len() as u64;
                invalid += parsed.invalid.len() as u64;
            }
            proptest::prop_assert_eq!(total, plan.data_rows);
            proptest::prop_assert_eq!(total, valid + invalid);
        }
    }
}
