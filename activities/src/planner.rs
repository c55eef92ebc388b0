//! Row-aligned chunk planning.
//!
//! The planner runs the same RFC 4180 state machine (`csv_core`) that later parses each chunk, over
//! the whole object, and cuts only where that machine finished a record. Seeking to the next `\n`
//! would cut inside quoted fields that hold newlines; a separate quote-toggling scanner could drift
//! from the parser on malformed quoting. Sharing the machine makes "chunk boundaries are record
//! boundaries" and "the plan's record count is the parser's record count" true by construction.

use csv_core::{ReadRecordResult, Reader};
use serde::{Deserialize, Serialize};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// One planned chunk: a half-open byte range of the object holding whole records only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    pub index: u32,
    pub start: u64,
    pub end: u64,
    /// 1-based `row_number` of the first data record in the chunk.
    pub first_row: u64,
    pub rows: u64,
}

/// Where the header record sits, so the caller can parse and check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    pub start: u64,
    pub end: u64,
}

/// Incremental planner: feed the object's bytes in order (any slicing), then `finish`.
///
/// Memory stays bounded by the longest single field seen, not by the object's size: record
/// contents are parsed into a scratch buffer that is reused, and only the chunk list grows (one
/// entry per `chunk_bytes` of input).
pub struct ChunkPlanner {
    reader: Reader,
    chunk_bytes: u64,
    /// Absolute offset of the next byte the state machine will see.
    offset: u64,
    bom_checked: bool,
    pending_bom: Vec<u8>,
    header: Option<HeaderSpan>,
    header_bytes: Vec<u8>,
    record_start: u64,
    chunk_start: u64,
    chunk_first_row: u64,
    chunk_rows: u64,
    rows: u64,
    chunks: Vec<PlannedChunk>,
    field_scratch: Vec<u8>,
    ends_scratch: Vec<usize>,
}

/// The finished plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `None` for an object with no record at all (empty, or only a BOM and blank lines).
    pub header: Option<HeaderSpan>,
    /// Raw bytes of the header record (without BOM), for `contract::Header::parse`.
    pub header_bytes: Vec<u8>,
    pub data_rows: u64,
    pub chunks: Vec<PlannedChunk>,
}

impl ChunkPlanner {
    pub fn new(chunk_bytes: u64) -> Self {
        Self {
            reader: Reader::new(),
            chunk_bytes: chunk_bytes.max(1),
            offset: 0,
            bom_checked: false,
            pending_bom: Vec::new(),
            header: None,
            header_bytes: Vec::new(),
            record_start: 0,
            chunk_start: 0,
            chunk_first_row: 1,
            chunk_rows: 0,
            rows: 0,
            chunks: Vec::new(),
            field_scratch: vec![0; 64 * 1024],
            ends_scratch: vec![0; 256],
        }
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let bytes = self.strip_bom(bytes);
        let bytes = bytes.as_ref();
        self.run(bytes, false);
    }

    pub fn finish(mut self) -> Plan {
        if !self.bom_checked && !self.pending_bom.is_empty() {
            // Fewer than three bytes in the whole object: not a BOM, just data.
            let pending = std::mem::take(&mut self.pending_bom);
            self.bom_checked = true;
            self.run(&pending, false);
        }
        self.run(&[], true);
        if self.chunk_rows > 0 {
            self.chunks.push(PlannedChunk {
                index: self.chunks.len() as u32,
                start: self.chunk_start,
                end: self.offset,
                first_row: self.chunk_first_row,
                rows: self.chunk_rows,
            });
        } else if let Some(last) = self.chunks.last_mut() {
            // Trailing blank lines hold no record; give them to the last chunk so the chunks
            // cover the data section of the object without gaps.
            last.end = self.offset;
        }
        Plan {
            header: self.header,
            header_bytes: self.header_bytes,
            data_rows: self.rows,
            chunks: self.chunks,
        }
    }

    /// The BOM may arrive split across feeds; hold back up to three bytes until we know.
    fn strip_bom<'a>(&mut self, bytes: &'a [u8]) -> std::borrow::Cow<'a, [u8]> {
        if self.bom_checked {
            return std::borrow::Cow::Borrowed(bytes);
        }
        self.pending_bom.extend_from_slice(bytes);
        if self.pending_bom.len() < UTF8_BOM.len() && UTF8_BOM.starts_with(&self.pending_bom) {
            return std::borrow::Cow::Owned(Vec::new());
        }
        self.bom_checked = true;
        let mut pending = std::mem::take(&mut self.pending_bom);
        if pending.starts_with(UTF8_BOM) {
            pending.drain(..UTF8_BOM.len());
            self.offset = UTF8_BOM.len() as u64;
            self.record_start = self.offset;
        }
        std::borrow::Cow::Owned(pending)
    }

    fn run(&mut self, mut input: &[u8], at_eof: bool) {
        loop {
            let (result, consumed, _, _) =
                self.reader
                    .read_record(input, &mut self.field_scratch, &mut self.ends_scratch);
            if self.header.is_none() {
                self.header_bytes.extend_from_slice(&input[..consumed]);
            }
            input = &input[consumed..];
            self.offset += consumed as u64;
            match result {
                ReadRecordResult::InputEmpty => {
                    if !at_eof {
                        return;
                    }
                }
                ReadRecordResult::OutputFull => {
                    let grown = self.field_scratch.len() * 2;
                    self.field_scratch.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.ends_scratch.len() * 2;
                    self.ends_scratch.resize(grown, 0);
                }
                ReadRecordResult::Record => self.on_record(),
                ReadRecordResult::End => return,
            }
        }
    }

    fn on_record(&mut self) {
        let end = self.offset;
        if self.header.is_none() {
            self.header = Some(HeaderSpan {
                start: self.record_start,
                end,
            });
            self.chunk_start = end;
            self.record_start = end;
            return;
        }
        self.rows += 1;
        self.chunk_rows += 1;
        self.record_start = end;
        if end - self.chunk_start >= self.chunk_bytes {
            self.chunks.push(PlannedChunk {
                index: self.chunks.len() as u32,
                start: self.chunk_start,
                end,
                first_row: self.chunk_first_row,
                rows: self.chunk_rows,
            });
            self.chunk_start = end;
            self.chunk_first_row = self.rows + 1;
            self.chunk_rows = 0;
        }
    }
}

/// Plans a whole in-memory object (tests, fuzzing and small inputs).
pub fn plan_bytes(object: &[u8], chunk_bytes: u64) -> Plan {
    let mut planner = ChunkPlanner::new(chunk_bytes);
    planner.feed(object);
    planner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Record end offsets as a full parse with the `csv` crate sees them (header excluded).
    fn full_parse_record_ends(object: &[u8]) -> (u64, Vec<u64>) {
        let body = object.strip_prefix(UTF8_BOM).unwrap_or(object);
        let bom = (object.len() - body.len()) as u64;
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(body);
        let mut record = csv::ByteRecord::new();
        let mut ends = Vec::new();
        while reader.read_byte_record(&mut record).unwrap() {
            ends.push(bom + reader.position().byte());
        }
        if ends.is_empty() {
            return (0, ends);
        }
        let header_end = ends.remove(0);
        (header_end, ends)
    }

    fn check_against_full_parse(object: &[u8], chunk_bytes: u64) {
        let plan = plan_bytes(object, chunk_bytes);
        let (header_end, record_ends) = full_parse_record_ends(object);
        assert_eq!(plan.data_rows, record_ends.len() as u64);
        if plan.header.is_none() {
            assert!(plan.chunks.is_empty());
            return;
        }
        assert_eq!(plan.header.unwrap().end, header_end);
        let mut expected_start = header_end;
        let mut row = 1;
        for (i, chunk) in plan.chunks.iter().enumerate() {
            assert_eq!(chunk.index as usize, i);
            assert_eq!(chunk.start, expected_start, "chunks are contiguous");
            assert_eq!(chunk.first_row, row);
            let last_row_end = record_ends[(row + chunk.rows - 2) as usize];
            if i + 1 < plan.chunks.len() {
                assert_eq!(chunk.end, last_row_end, "cut exactly at a record end");
            } else {
                assert_eq!(chunk.end, object.len() as u64, "last chunk reaches the end");
            }
            assert!(chunk.rows > 0);
            row += chunk.rows;
            expected_start = chunk.end;
        }
        assert_eq!(row - 1, plan.data_rows);
        // Every chunk parsed on its own yields exactly its planned rows.
        for chunk in &plan.chunks {
            let slice = &object[chunk.start as usize..chunk.end as usize];
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(slice);
            assert_eq!(reader.byte_records().count() as u64, chunk.rows);
        }
    }

    #[test]
    fn cuts_never_split_quoted_newlines() {
        let object = b"sku,description\nA,\"line one\nline two\"\nB,\"x\r\ny\"\nC,plain\n";
        for chunk_bytes in 1..=object.len() as u64 + 1 {
            check_against_full_parse(object, chunk_bytes);
        }
        let plan = plan_bytes(object, 1);
        assert_eq!(plan.data_rows, 3);
        assert_eq!(plan.chunks.len(), 3);
        assert_eq!(
            &object[plan.chunks[0].start as usize..plan.chunks[0].end as usize],
            b"A,\"line one\nline two\"\n"
        );
    }

    #[test]
    fn bom_crlf_blank_lines_and_missing_final_newline() {
        let object = "\u{feff}sku,name\r\n\r\nA,é\r\n\nB,\"日本\r\n語\"\r\nC,last".as_bytes();
        for chunk_bytes in 1..=object.len() as u64 {
            check_against_full_parse(object, chunk_bytes);
        }
        let plan = plan_bytes(object, 1 << 20);
        assert_eq!(plan.data_rows, 3);
        // csv_core ends a CRLF record at the `\r`; the `\n` is skipped as a blank line by
        // whoever parses next, identically in the planner and in the chunk parser.
        assert_eq!(plan.header_bytes, b"sku,name\r");
        assert_eq!(plan.header.unwrap().start, 3);
        assert_eq!(plan.chunks.len(), 1);
    }

    #[test]
    fn empty_and_header_only_objects() {
        let empty = plan_bytes(b"", 10);
        assert!(empty.header.is_none());
        assert_eq!(empty.data_rows, 0);
        let blank = plan_bytes(b"\xEF\xBB\xBF\n\r\n", 10);
        assert!(blank.header.is_none());
        let header_only = plan_bytes(b"sku,name,url\n\n", 10);
        assert!(header_only.header.is_some());
        assert_eq!(header_only.data_rows, 0);
        assert!(header_only.chunks.is_empty());
    }

    #[test]
    fn a_record_longer_than_the_chunk_size_makes_its_chunk_longer() {
        let long = "x".repeat(1000);
        let object = format!("h\nshort\n\"{long}\n{long}\"\nafter\n");
        let plan = plan_bytes(object.as_bytes(), 5);
        assert_eq!(plan.data_rows, 3);
        assert_eq!(plan.chunks.len(), 3);
        assert!(plan.chunks[1].end - plan.chunks[1].start > 2000);
        check_against_full_parse(object.as_bytes(), 5);
    }

    #[test]
    fn feeding_in_pieces_gives_the_same_plan() {
        let object = "\u{feff}h1,h2\n\"a\nb\",c\r\nd,\"e\"\"f\"\n\ng,h".as_bytes();
        let whole = plan_bytes(object, 4);
        for piece in 1..object.len() {
            let mut planner = ChunkPlanner::new(4);
            for part in object.chunks(piece) {
                planner.feed(part);
            }
            assert_eq!(planner.finish(), whole, "piece size {piece}");
        }
    }

    fn arb_field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ]{0,12}",
            "[a-z,\"\n\r é日]{0,16}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
        ]
    }

    fn arb_object() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            prop::collection::vec(
                (
                    prop::collection::vec(arb_field(), 1..5),
                    prop_oneof!["\n", "\r\n", "\n\n"],
                ),
                0..40,
            ),
            any::<bool>(),
        )
            .prop_map(|(bom, records, trailing)| {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(UTF8_BOM);
                }
                out.extend_from_slice(b"sku,name\n");
                let count = records.len();
                for (i, (fields, terminator)) in records.into_iter().enumerate() {
                    out.extend_from_slice(fields.join(",").as_bytes());
                    if trailing || i + 1 < count {
                        out.extend_from_slice(terminator.as_bytes());
                    }
                }
                out
            })
    }

    proptest! {
        #[test]
        fn boundaries_equal_a_full_parse(object in arb_object(), chunk_bytes in 1u64..200) {
            check_against_full_parse(&object, chunk_bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_chunks_cover_all_rows(
            object in prop::collection::vec(any::<u8>(), 0..400),
            chunk_bytes in 1u64..64,
        ) {
            check_against_full_parse(&object, chunk_bytes);
        }
    }
}
