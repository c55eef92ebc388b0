//! Row-aligned chunk planning.
//!
//! The planner runs the record splitter that later parses each chunk ([`crate::records`]) over the
//! whole object, and cuts only where that splitter finished a record. Seeking to the next `\n`
//! would cut inside quoted fields that hold newlines; a separate quote-toggling scanner could drift
//! from the parser on malformed quoting. Sharing the splitter makes "chunk boundaries are record
//! boundaries" and "the plan's record count is the parser's record count" true by construction.
//!
//! It also enforces the record size limit, and fails as soon as a record passes it: an unclosed
//! quote swallows the rest of the object into one record, and that must neither be scanned to the
//! end nor held in memory.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use crate::{
    chunk::{mentioned_sku, parse_header},
    contract::Column,
    item_hash::mention_hash,
    records::{FieldSink, RecordEnd, RecordReader},
};

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Longest record accepted unless the job asks for more (`--max-record-bytes`).
pub const DEFAULT_MAX_RECORD_BYTES: u64 = 1 << 20;
/// The most `--max-record-bytes` may allow.
pub const MAX_RECORD_BYTES_LIMIT: u64 = 64 << 20;

/// One planned chunk: a half-open byte range of the object holding whole records only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedChunk {
    pub index: u32,
    pub start: u64,
    pub end: u64,
    /// 1-based `row_number` of the first data record in the chunk.
    pub first_row: u64,
    pub rows: u64,
    /// The mention hashes ([`mention_hash`]) of the sku fields its records carry, distinct and
    /// sorted; empty unless the planner collects them ([`ChunkPlanner::collecting_mentions`]).
    pub mentions: Vec<i64>,
}

/// Captures the sku field of each record as the splitter passes it: a few bytes per record,
/// nothing else is copied.
#[derive(Debug, Default)]
struct SkuField {
    /// The sku column's position, once the header is known and if it has one.
    column: Option<usize>,
    field: usize,
    bytes: Vec<u8>,
}

impl FieldSink for SkuField {
    #[inline]
    fn data(&mut self, bytes: &[u8]) {
        if Some(self.field) == self.column {
            self.bytes.extend_from_slice(bytes);
        }
    }

    #[inline]
    fn end_field(&mut self) {
        self.field += 1;
    }
}

impl SkuField {
    /// The record just read ended: its sku field as the chunk parser will read it.
    fn take(&mut self) -> Option<String> {
        let sku = (self.column.is_some_and(|c| c < self.field))
            .then(|| mentioned_sku(&self.bytes))
            .flatten();
        self.field = 0;
        self.bytes.clear();
        sku
    }
}

/// Where the header record sits, so the caller can parse and check it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSpan {
    /// The header's first byte (after a byte-order mark and blank lines).
    pub start: u64,
    /// Just after the header's line end: where the data section (the first chunk) starts.
    pub end: u64,
}

/// A record longer than the limit (contract code `record_too_large`, not retryable): almost
/// always an unclosed quote that swallowed the rest of the object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "record_too_large: {} (starting at byte {byte_offset}) is longer than {limit} bytes; an unclosed quote usually causes this",
    which_record(.row_number)
)]
pub struct RecordTooLarge {
    /// The record's `row_number`; `None` for the header.
    pub row_number: Option<u64>,
    /// Object offset of the record's first byte.
    pub byte_offset: u64,
    pub limit: u64,
}

impl RecordTooLarge {
    /// The contract's failure code.
    pub const CODE: &'static str = "record_too_large";
}

fn which_record(row_number: &Option<u64>) -> String {
    match row_number {
        Some(row) => format!("row {row}"),
        None => "the header record".to_owned(),
    }
}

/// Incremental planner: feed the object's bytes in order (any slicing), take completed chunks
/// whenever convenient, then `finish`.
///
/// Memory stays bounded whatever the object: the splitter keeps a constant state and copies no
/// field; only the header record is kept (at most the record limit), and completed chunks wait
/// only until `take_chunks` (one finished chunk is held back until the next record starts, since
/// trailing blank lines at the end of the object still extend it).
pub struct ChunkPlanner {
    reader: RecordReader,
    /// `Some` while the planner collects mention hashes.
    sku: Option<SkuField>,
    /// The mention hashes of the chunk in progress.
    mentions: HashSet<i64>,
    chunk_bytes: u64,
    max_record_bytes: u64,
    /// Object offset of the next byte the splitter will see.
    offset: u64,
    /// The object's first bytes while they may still be a byte-order mark.
    bom: [u8; 3],
    bom_len: usize,
    bom_checked: bool,
    header: Option<HeaderSpan>,
    /// Until the header record ends: the bytes consumed last that may belong to it (the record
    /// so far, plus a `\r` whose meaning is not known yet). Then: the header record.
    header_bytes: Vec<u8>,
    chunk_start: u64,
    chunk_first_row: u64,
    chunk_rows: u64,
    rows: u64,
    /// The last completed chunk, until a record after it shows it is not the last chunk.
    held: Option<PlannedChunk>,
    chunks: Vec<PlannedChunk>,
    chunks_planned: u32,
    failed: Option<RecordTooLarge>,
}

/// The finished plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `None` for an object with no record at all (empty, or only a BOM and blank lines).
    pub header: Option<HeaderSpan>,
    /// The header record's bytes, without byte-order mark and line end, for
    /// [`crate::chunk::parse_header`].
    pub header_bytes: Vec<u8>,
    pub data_rows: u64,
    /// The chunks not taken with [`ChunkPlanner::take_chunks`] yet, in order.
    pub chunks: Vec<PlannedChunk>,
}

impl ChunkPlanner {
    /// `max_record_bytes` is clamped to `1..=MAX_RECORD_BYTES_LIMIT`.
    pub fn new(chunk_bytes: u64, max_record_bytes: u64) -> Self {
        Self {
            reader: RecordReader::new(),
            sku: None,
            mentions: HashSet::new(),
            chunk_bytes: chunk_bytes.max(1),
            max_record_bytes: max_record_bytes.clamp(1, MAX_RECORD_BYTES_LIMIT),
            offset: 0,
            bom: [0; 3],
            bom_len: 0,
            bom_checked: false,
            header: None,
            header_bytes: Vec::new(),
            chunk_start: 0,
            chunk_first_row: 1,
            chunk_rows: 0,
            rows: 0,
            held: None,
            chunks: Vec::new(),
            chunks_planned: 0,
            failed: None,
        }
    }

    /// Also records, per chunk, which skus its records mention (valid or not, as the chunk
    /// parser reads the `sku` field): a sku that more than one chunk mentions shows in the
    /// plan, before any chunk writes.
    pub fn collecting_mentions(mut self) -> Self {
        self.sku = Some(SkuField::default());
        self
    }

    /// Scans the next bytes of the object. Fails as soon as a record is longer than the limit
    /// (and then again on every later call).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), RecordTooLarge> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        // The BOM may arrive split across feeds; hold back up to three bytes until we know.
        while !self.bom_checked {
            let seen = &self.bom[..self.bom_len];
            if self.bom_len == UTF8_BOM.len() || !UTF8_BOM.starts_with(seen) {
                self.check_bom()?;
                break;
            }
            let Some((&first, rest)) = bytes.split_first() else {
                return Ok(());
            };
            self.bom[self.bom_len] = first;
            self.bom_len += 1;
            bytes = rest;
        }
        self.scan(bytes)
    }

    /// Completed chunks not taken yet, in order, removed from the planner.
    pub fn take_chunks(&mut self) -> Vec<PlannedChunk> {
        std::mem::take(&mut self.chunks)
    }

    /// Ends the object.
    pub fn finish(mut self) -> Result<Plan, RecordTooLarge> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        // Fewer than three bytes in the whole object, or the start of a BOM only: data.
        self.check_bom()?;
        if let Some(end) = self.finish_record() {
            if self.header.is_none() {
                // The header bytes kept so far (a pending `\r` included) are the whole record.
                self.keep_header_bytes(&[], end.len as usize);
            }
            self.on_record(end)?;
        }
        if self.chunk_rows > 0 {
            self.release_held();
            let mentions = self.take_mentions();
            self.chunks.push(PlannedChunk {
                index: self.chunks_planned,
                start: self.chunk_start,
                end: self.offset,
                first_row: self.chunk_first_row,
                rows: self.chunk_rows,
                mentions,
            });
        } else if let Some(mut last) = self.held.take() {
            // Trailing blank lines hold no record; give them to the last chunk so the chunks
            // cover the data section of the object without gaps.
            last.end = self.offset;
            self.chunks.push(last);
        }
        Ok(Plan {
            header: self.header,
            header_bytes: self.header_bytes,
            data_rows: self.rows,
            chunks: self.chunks,
        })
    }

    /// Bytes the planner holds on to (the header record, pending chunks), for tests of the
    /// memory bound.
    #[cfg(test)]
    fn retained_capacity(&self) -> usize {
        self.header_bytes.capacity() + self.chunks.capacity() * std::mem::size_of::<PlannedChunk>()
    }

    /// Decides about the held-back first bytes: skipped if they are a BOM, else scanned as data.
    fn check_bom(&mut self) -> Result<(), RecordTooLarge> {
        if self.bom_checked {
            return Ok(());
        }
        self.bom_checked = true;
        if self.bom[..self.bom_len] == *UTF8_BOM {
            self.offset = UTF8_BOM.len() as u64;
            return Ok(());
        }
        let held = self.bom;
        self.scan(&held[..self.bom_len])
    }

    fn scan(&mut self, mut input: &[u8]) -> Result<(), RecordTooLarge> {
        while !input.is_empty() {
            // Never hand the splitter more than the record in progress may still take (at
            // least one byte: the record is within the limit here), so a record that passes the
            // limit fails right there, not after the rest of the input.
            let room = self.max_record_bytes + 1 - self.reader.record_len();
            let piece = &input[..input.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
            let read = match &mut self.sku {
                Some(sku) => self.reader.read(piece, sku),
                None => self.reader.read(piece, &mut crate::records::Boundaries),
            };
            let consumed = &piece[..read.consumed];
            input = &input[read.consumed..];
            self.offset += read.consumed as u64;
            if self.header.is_none() {
                let keep = match read.record {
                    Some(end) => end.len + u64::from(end.terminator),
                    None => self.reader.record_len() + self.reader.undecided(),
                };
                // At most the limit plus a line end, or the checks below fail.
                self.keep_header_bytes(consumed, keep.min(self.max_record_bytes + 2) as usize);
            }
            match read.record {
                Some(end) => self.on_record(end)?,
                None if self.reader.record_len() > self.max_record_bytes => {
                    let start = self.offset - self.reader.undecided() - self.reader.record_len();
                    return Err(self.fail(start));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Keeps the last `keep` bytes of what was consumed so far (`header_bytes` followed by
    /// `consumed`). `header_bytes` always holds at least the bytes that the next `keep` can ask
    /// for, since the record in progress only grows until it ends.
    fn keep_header_bytes(&mut self, consumed: &[u8], keep: usize) {
        let limit = self.max_record_bytes as usize + 2;
        let buffer = &mut self.header_bytes;
        let (old, new) = if consumed.len() >= keep {
            (0, &consumed[consumed.len() - keep..])
        } else {
            (keep - consumed.len(), consumed)
        };
        if buffer.len() > old {
            buffer.drain(..buffer.len() - old);
        }
        if buffer.capacity() < keep {
            // Grow geometrically, but never past what the limit allows.
            let capacity = buffer.capacity().saturating_mul(2).min(limit).max(keep);
            buffer.reserve_exact(capacity - buffer.len());
        }
        buffer.extend_from_slice(new);
    }

    fn fail(&mut self, byte_offset: u64) -> RecordTooLarge {
        let err = RecordTooLarge {
            row_number: self.header.is_some().then_some(self.rows + 1),
            byte_offset,
            limit: self.max_record_bytes,
        };
        self.failed = Some(err.clone());
        err
    }

    fn release_held(&mut self) {
        if let Some(chunk) = self.held.take() {
            self.chunks.push(chunk);
        }
    }

    fn finish_record(&mut self) -> Option<RecordEnd> {
        match &mut self.sku {
            Some(sku) => self.reader.finish(sku),
            None => self.reader.finish(&mut crate::records::Boundaries),
        }
    }

    fn take_mentions(&mut self) -> Vec<i64> {
        let mut mentions: Vec<i64> = self.mentions.drain().collect();
        mentions.sort_unstable();
        mentions
    }

    fn on_record(&mut self, record: RecordEnd) -> Result<(), RecordTooLarge> {
        let mention = self.sku.as_mut().and_then(SkuField::take);
        let end = self.offset;
        let content_end = end - u64::from(record.terminator);
        let start = content_end - record.len;
        if record.len > self.max_record_bytes {
            return Err(self.fail(start));
        }
        if self.header.is_none() {
            self.header = Some(HeaderSpan { start, end });
            let bytes = &mut self.header_bytes;
            bytes.truncate(bytes.len() - usize::from(record.terminator));
            bytes.drain(..bytes.len() - record.len as usize);
            bytes.shrink_to_fit();
            if let Some(sku) = &mut self.sku {
                sku.column = parse_header(bytes)
                    .ok()
                    .and_then(|header| header.columns().iter().position(|c| *c == Column::Sku));
            }
            self.chunk_start = end;
            return Ok(());
        }
        if let Some(sku) = mention {
            self.mentions.insert(mention_hash(&sku));
        }
        // This record starts a new chunk, so the held one is not the last: it is final.
        self.release_held();
        self.rows += 1;
        self.chunk_rows += 1;
        if end - self.chunk_start >= self.chunk_bytes {
            let mentions = self.take_mentions();
            self.held = Some(PlannedChunk {
                index: self.chunks_planned,
                start: self.chunk_start,
                end,
                first_row: self.chunk_first_row,
                rows: self.chunk_rows,
                mentions,
            });
            self.chunks_planned += 1;
            self.chunk_start = end;
            self.chunk_first_row = self.rows + 1;
            self.chunk_rows = 0;
        }
        Ok(())
    }
}

/// Keeps, of each chunk's mention hashes, those that another chunk of the plan also carries
/// (what `etl_chunks.shared_hashes` holds): the same answer as the plan's statement in Postgres
/// (`PlanWriter::finish`), found in the worker. Holds one copy of every chunk's hashes, sorted:
/// the caller bounds how many it hands over.
pub fn keep_shared_mentions(chunks: &mut [PlannedChunk]) {
    let mut all: Vec<i64> = chunks
        .iter()
        .flat_map(|chunk| chunk.mentions.iter().copied())
        .collect();
    all.sort_unstable();
    // Each chunk's hashes are distinct, so a hash seen twice is carried by two chunks.
    let mut shared: Vec<i64> = all
        .windows(2)
        .filter(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
        .collect();
    drop(all);
    shared.dedup();
    for chunk in chunks {
        chunk
            .mentions
            .retain(|hash| shared.binary_search(hash).is_ok());
    }
}

/// Once a plan hands its mention hashes to Postgres, it stores its chunks in batches of this
/// many chunks, or of this many hashes, whichever comes first.
const PLAN_BATCH: usize = 1000;
const PLAN_BATCH_MENTIONS: usize = 1 << 16;

/// The chunks a plan has found and not stored yet. While their mention hashes fit in
/// `mentions_in_memory`, the plan holds them all and finds the shared hashes itself at the end;
/// past that, it stores them in batches as it scans, and Postgres finds the shared hashes.
#[derive(Debug)]
pub struct HeldChunks {
    chunks: Vec<PlannedChunk>,
    mentions: usize,
    mentions_in_memory: usize,
    past_memory: bool,
    handed_out: u32,
}

/// What is left to store when the scan ends.
#[derive(Debug, PartialEq)]
pub enum LastChunks {
    /// Every chunk of the plan, each with its shared hashes only.
    SharedFound(Vec<PlannedChunk>),
    /// The chunks after the last batch, with every hash they carry: Postgres finds the shared ones.
    ForPostgres(Vec<PlannedChunk>),
}

impl HeldChunks {
    pub fn new(mentions_in_memory: usize) -> Self {
        Self {
            chunks: Vec::new(),
            mentions: 0,
            mentions_in_memory,
            past_memory: false,
            handed_out: 0,
        }
    }

    pub fn hold(&mut self, chunks: impl IntoIterator<Item = PlannedChunk>) {
        for chunk in chunks {
            self.mentions += chunk.mentions.len();
            self.chunks.push(chunk);
        }
        self.past_memory |= self.mentions > self.mentions_in_memory;
    }

    /// A batch to store now, once the plan's hashes no longer fit in memory.
    pub fn full_batch(&mut self) -> Option<Vec<PlannedChunk>> {
        let full = self.chunks.len() >= PLAN_BATCH || self.mentions >= PLAN_BATCH_MENTIONS;
        (self.past_memory && full).then(|| self.take())
    }

    /// The rest, and how many chunks the plan has.
    pub fn finish(mut self) -> (LastChunks, u32) {
        let past_memory = self.past_memory;
        let mut rest = self.take();
        let last = if past_memory {
            LastChunks::ForPostgres(rest)
        } else {
            keep_shared_mentions(&mut rest);
            LastChunks::SharedFound(rest)
        };
        (last, self.handed_out)
    }

    fn take(&mut self) -> Vec<PlannedChunk> {
        self.handed_out += self.chunks.len() as u32;
        self.mentions = 0;
        std::mem::take(&mut self.chunks)
    }
}

/// Plans a whole in-memory object (tests, fuzzing and small inputs).
pub fn plan_bytes(
    object: &[u8],
    chunk_bytes: u64,
    max_record_bytes: u64,
) -> Result<Plan, RecordTooLarge> {
    let mut planner = ChunkPlanner::new(chunk_bytes, max_record_bytes);
    planner.feed(object)?;
    planner.finish()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::records::reference;

    const MIB: u64 = 1 << 20;

    fn plan(object: &[u8], chunk_bytes: u64) -> Plan {
        plan_bytes(object, chunk_bytes, DEFAULT_MAX_RECORD_BYTES).unwrap()
    }

    /// Plans `object` fed in pieces cut at `cuts`, taking chunks after every piece.
    fn plan_in_pieces(
        object: &[u8],
        cuts: &[usize],
        chunk_bytes: u64,
        limit: u64,
    ) -> Result<Plan, RecordTooLarge> {
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(object.len())).collect();
        bounds.push(object.len());
        bounds.sort_unstable();
        let mut planner = ChunkPlanner::new(chunk_bytes, limit);
        let mut taken = Vec::new();
        let mut from = 0;
        for bound in bounds {
            planner.feed(&object[from..bound])?;
            taken.extend(planner.take_chunks());
            from = bound;
        }
        let mut plan = planner.finish()?;
        taken.append(&mut plan.chunks);
        plan.chunks = taken;
        Ok(plan)
    }

    /// Checks a plan against the reference splitter: header, row count, contiguous chunks that
    /// cut at record ends and cover the data section, and every chunk re-split alone.
    fn check_against_reference(object: &[u8], plan: &Plan, chunk_bytes: u64) {
        let mut records = reference::records(object);
        assert_eq!(plan.data_rows, records.len().saturating_sub(1) as u64);
        if records.is_empty() {
            assert!(plan.header.is_none());
            assert!(plan.header_bytes.is_empty());
            assert!(plan.chunks.is_empty());
            return;
        }
        let header = records.remove(0);
        let span = plan.header.unwrap();
        assert_eq!(
            (span.start, span.end),
            (header.start as u64, header.end as u64)
        );
        assert_eq!(plan.header_bytes, &object[header.start..header.content_end]);
        let mut expected_start = header.end as u64;
        let mut row = 1;
        for (i, chunk) in plan.chunks.iter().enumerate() {
            assert_eq!(chunk.index as usize, i);
            assert_eq!(chunk.start, expected_start, "chunks are contiguous");
            assert_eq!(chunk.first_row, row);
            assert!(chunk.rows > 0);
            let last_row_end = records[(row + chunk.rows - 2) as usize].end as u64;
            if i + 1 < plan.chunks.len() {
                assert_eq!(chunk.end, last_row_end, "cut exactly at a record end");
                assert!(chunk.end - chunk.start >= chunk_bytes, "cut only when full");
            } else {
                assert_eq!(chunk.end, object.len() as u64, "last chunk reaches the end");
            }
            row += chunk.rows;
            expected_start = chunk.end;
        }
        assert_eq!(row - 1, plan.data_rows);
        // Every chunk split on its own (no BOM handling mid-object) yields its planned rows.
        for chunk in &plan.chunks {
            let slice = &object[chunk.start as usize..chunk.end as usize];
            let alone = reference::records(&[b"\n", slice].concat());
            assert_eq!(alone.len() as u64, chunk.rows);
        }
    }

    fn check(object: &[u8], chunk_bytes: u64) {
        check_against_reference(object, &plan(object, chunk_bytes), chunk_bytes);
    }

    #[test]
    fn cuts_never_split_quoted_newlines() {
        let object = b"sku,description\nA,\"line one\nline two\"\nB,\"x\r\ny\"\nC,plain\n";
        for chunk_bytes in 1..=object.len() as u64 + 1 {
            check(object, chunk_bytes);
        }
        let plan = plan(object, 1);
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
            check(object, chunk_bytes);
        }
        let plan = plan(object, MIB);
        assert_eq!(plan.data_rows, 3);
        assert_eq!(plan.header_bytes, b"sku,name");
        assert_eq!(plan.header, Some(HeaderSpan { start: 3, end: 13 }));
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(plan.chunks[0].start, 13);
    }

    #[test]
    fn lone_cr_is_data_not_a_line_end() {
        let object = b"h1,h2\na,b\rc\nd,e\r";
        let plan = plan(object, 1);
        assert_eq!(
            plan.data_rows, 2,
            "`a,b\\rc` and `d,e\\r` (CR at the end is data)"
        );
        assert_eq!((plan.chunks[0].start, plan.chunks[0].end), (6, 12));
        assert_eq!((plan.chunks[1].start, plan.chunks[1].end), (12, 16));
        check(object, 1);
        // A header with lone CRs is one record too.
        let plan = plan_bytes(b"a\rb,c\r\nx", 1, 3).unwrap_err();
        assert_eq!(plan.row_number, None, "`a\\rb,c` is 6 bytes, over 3");
    }

    #[test]
    fn crlf_blank_lines_are_skipped() {
        let object = b"h\r\n\r\n\r\nx\r\n\r\n\ny\r\n\r\n";
        let plan = plan(object, 1);
        assert_eq!(plan.data_rows, 2);
        assert_eq!(plan.header_bytes, b"h");
        assert_eq!(
            plan.chunks[0].start, 3,
            "blank lines before a record are its chunk's"
        );
        assert_eq!(plan.chunks[1].end, object.len() as u64);
        check(object, 1);
    }

    #[test]
    fn empty_and_header_only_objects() {
        let empty = plan(b"", 10);
        assert!(empty.header.is_none());
        assert_eq!(empty.data_rows, 0);
        let blank = plan(b"\xEF\xBB\xBF\n\r\n", 10);
        assert!(blank.header.is_none());
        let header_only = plan(b"sku,name,url\n\n", 10);
        assert!(header_only.header.is_some());
        assert_eq!(header_only.data_rows, 0);
        assert!(header_only.chunks.is_empty());
        // Part of a BOM is data.
        let partial_bom = plan(b"\xEF\xBB", 10);
        assert_eq!(partial_bom.header_bytes, b"\xEF\xBB");
        let cr_only = plan(b"\r", 10);
        assert_eq!(cr_only.header_bytes, b"\r");
    }

    #[test]
    fn bom_bytes_after_the_start_are_data() {
        let object = b"\xEF\xBB\xBFh\n\xEF\xBB\xBF\"\n,";
        let plan = plan(object, 1);
        assert_eq!(
            plan.data_rows, 2,
            "the quote after the BOM bytes is not at a field start"
        );
        assert_eq!(plan.chunks[0].start, 5);
        assert_eq!(plan.chunks[0].end, 10);
        check(object, 1);
    }

    #[test]
    fn a_record_longer_than_the_chunk_size_makes_its_chunk_longer() {
        let long = "x".repeat(1000);
        let object = format!("h\nshort\n\"{long}\n{long}\"\nafter\n");
        let plan = plan(object.as_bytes(), 5);
        assert_eq!(plan.data_rows, 3);
        assert_eq!(plan.chunks.len(), 3);
        assert!(plan.chunks[1].end - plan.chunks[1].start > 2000);
        check(object.as_bytes(), 5);
    }

    #[test]
    fn feeding_in_pieces_gives_the_same_plan() {
        let object = "\u{feff}h1,h2\n\"a\nb\",c\r\nd,\"e\"\"f\"\n\ng,h\r\r\n\r".as_bytes();
        let whole = plan(object, 4);
        for piece in 1..object.len() {
            let mut planner = ChunkPlanner::new(4, DEFAULT_MAX_RECORD_BYTES);
            for part in object.chunks(piece) {
                planner.feed(part).unwrap();
            }
            assert_eq!(planner.finish().unwrap(), whole, "piece size {piece}");
        }
        for cut in 0..=object.len() {
            for cut2 in cut..=object.len() {
                let pieces = plan_in_pieces(object, &[cut, cut2], 4, MIB).unwrap();
                assert_eq!(pieces, whole, "cut at {cut} and {cut2}");
            }
        }
    }

    #[test]
    fn chunks_can_be_taken_while_scanning() {
        let object = b"h\na\nb\nc\nd\n\n\n";
        let mut planner = ChunkPlanner::new(1, MIB);
        planner.feed(b"h\na\nb\nc\n").unwrap();
        let first = planner.take_chunks();
        assert_eq!(
            first.len(),
            2,
            "the last completed chunk waits for the next record"
        );
        assert_eq!((first[0].index, first[1].index), (0, 1));
        planner.feed(b"d\n\n\n").unwrap();
        let second = planner.take_chunks();
        assert_eq!(second.len(), 1);
        assert!(planner.take_chunks().is_empty());
        let plan = planner.finish().unwrap();
        assert_eq!(plan.chunks.len(), 1);
        assert_eq!(plan.chunks[0].index, 3);
        assert_eq!(
            plan.chunks[0].end,
            object.len() as u64,
            "trailing blank lines included"
        );
        assert_eq!(plan.data_rows, 4);
    }

    #[test]
    fn record_too_large_exact_limit_is_accepted() {
        let limit = 10;
        let exact = "x".repeat(limit);
        for terminator in ["\n", "\r\n", ""] {
            // Header and data record of exactly the limit, with either line end or none.
            let object = format!("{exact}\n{exact}{terminator}");
            for cut in 0..=object.len() {
                let plan = plan_in_pieces(object.as_bytes(), &[cut], 1, limit as u64).unwrap();
                assert_eq!(plan.data_rows, 1);
            }
        }
        // Quoted line ends inside count; the record's own line end does not.
        let quoted = b"h\n\"a\r\nbc\"\r\n";
        assert_eq!(
            plan_bytes(quoted, 1, 7).unwrap().data_rows,
            1,
            "`\"a\\r\\nbc\"` is 7 bytes"
        );
        assert!(plan_bytes(quoted, 1, 6).is_err());
    }

    #[test]
    fn record_too_large_limit_plus_one_is_refused() {
        let limit = 10u64;
        let over = "y".repeat(limit as usize + 1);
        for (object, row, offset) in [
            (format!("h\r\n{over}\n"), Some(1), 3),
            (format!("h\n\nok\n{over}"), Some(2), 6),
            (
                format!("h\nok\n{}\r\r\n", "y".repeat(limit as usize)),
                Some(2),
                5,
            ),
            (
                format!("h\nok\n{}\r", "y".repeat(limit as usize)),
                Some(2),
                5,
            ),
            (format!("\u{feff}\n{over}\r\n"), None, 4),
        ] {
            for cut in 0..=object.len() {
                let err = plan_in_pieces(object.as_bytes(), &[cut], 1, limit).unwrap_err();
                let expected = RecordTooLarge {
                    row_number: row,
                    byte_offset: offset,
                    limit,
                };
                assert_eq!(err, expected, "{object:?} cut at {cut}");
            }
        }
        let message = plan_bytes(b"h\n\"abc", 1, 3).unwrap_err().to_string();
        assert_eq!(
            message,
            "record_too_large: row 1 (starting at byte 2) is longer than 3 bytes; an unclosed quote usually causes this"
        );
        let message = plan_bytes(b"abcd\n", 1, 3).unwrap_err().to_string();
        assert!(
            message.contains("the header record (starting at byte 0)"),
            "{message}"
        );
    }

    #[test]
    fn record_too_large_header() {
        let header = format!("sku,{}", "n".repeat(100));
        let err = plan_bytes(format!("{header}\nA,b\n").as_bytes(), 1, 100).unwrap_err();
        assert_eq!(err.row_number, None);
        assert_eq!(err.byte_offset, 0);
        let plan = plan_bytes(format!("{header}\nA,b\n").as_bytes(), 1, 104).unwrap();
        assert_eq!(plan.header_bytes, header.as_bytes());
        // A failed planner stays failed.
        let mut planner = ChunkPlanner::new(1, 100);
        assert!(planner.feed(header.as_bytes()).is_err());
        assert_eq!(planner.feed(b"\n").unwrap_err(), err);
        assert_eq!(planner.finish().unwrap_err(), err);
    }

    #[test]
    fn limit_is_clamped() {
        let planner = ChunkPlanner::new(1, u64::MAX);
        assert_eq!(planner.max_record_bytes, MAX_RECORD_BYTES_LIMIT);
        let planner = ChunkPlanner::new(1, 0);
        assert_eq!(planner.max_record_bytes, 1);
    }

    #[test]
    fn unclosed_quote_fails_after_about_the_limit() {
        // 1 GiB of object after an unclosed quote near the start, fed 64 KiB at a time: the
        // planner must give up right after the limit.
        let piece = vec![b'x'; 64 * 1024];
        let mut planner = ChunkPlanner::new(MIB, DEFAULT_MAX_RECORD_BYTES);
        planner.feed(b"sku,name\nA,\"").unwrap();
        let mut fed = 12u64;
        let err = loop {
            match planner.feed(&piece) {
                Ok(()) => fed += piece.len() as u64,
                Err(err) => break err,
            }
            assert!(fed < 1 << 30, "never failed");
        };
        assert_eq!(err.row_number, Some(1));
        assert_eq!(err.byte_offset, 9);
        assert_eq!(err.limit, DEFAULT_MAX_RECORD_BYTES);
        // The failing feed held the limit's last byte: nothing was fed after the limit was hit.
        assert!(fed <= 9 + DEFAULT_MAX_RECORD_BYTES, "fed {fed}");
        assert!(
            fed + piece.len() as u64 > 9 + DEFAULT_MAX_RECORD_BYTES,
            "fed {fed}"
        );
        // In one big feed, too, the scan stops at the limit (and the rest is never looked at).
        let mut big = b"sku,name\nA,\"".to_vec();
        big.resize(64 * MIB as usize, b'x');
        let mut planner = ChunkPlanner::new(MIB, DEFAULT_MAX_RECORD_BYTES);
        assert_eq!(planner.feed(&big).unwrap_err(), err);
        assert_eq!(
            planner.offset,
            9 + DEFAULT_MAX_RECORD_BYTES + 1,
            "scanned up to the limit"
        );
    }

    #[test]
    fn memory_stays_bounded_for_a_huge_quoted_field() {
        // 50 MB of one unclosed quoted field, under a 64 MiB limit: nothing is buffered.
        let piece = vec![b'x'; 1 << 20];
        let mut planner = ChunkPlanner::new(MIB, MAX_RECORD_BYTES_LIMIT);
        planner.feed(b"sku,name\nA,\"").unwrap();
        for _ in 0..50 {
            planner.feed(&piece).unwrap();
            assert!(
                planner.retained_capacity() < 1024,
                "{}",
                planner.retained_capacity()
            );
        }
        let plan = planner.finish().unwrap();
        assert_eq!(plan.data_rows, 1);
        assert_eq!(plan.chunks[0].end, 12 + 50 * (1 << 20));
        // Many small records: chunks wait only until taken.
        let mut planner = ChunkPlanner::new(64, DEFAULT_MAX_RECORD_BYTES);
        planner.feed(b"sku,name\n").unwrap();
        for _ in 0..10_000 {
            planner.feed(b"A,\"b\nc\"\r\nd,e\n").unwrap();
            planner.take_chunks();
            assert!(planner.retained_capacity() < 1024);
        }
        // A header is kept, within the limit (plus a line end) even while it is growing.
        let mut planner = ChunkPlanner::new(MIB, 4 * MIB);
        for _ in 0..4 {
            planner.feed(&piece).unwrap();
            assert!(planner.retained_capacity() <= 4 * MIB as usize + 2);
        }
        assert!(planner.feed(b"x").is_err());
        assert!(planner.retained_capacity() <= 4 * MIB as usize + 2);
    }

    /// Planning throughput against the machine the planner used before (csv_core with reused
    /// scratch buffers). Run in release with `--ignored --nocapture`.
    #[test]
    #[ignore]
    fn bench_plan_bytes() {
        use generator::{GeneratorConfig, write_catalog};
        let cfg = GeneratorConfig {
            rows: 40_000,
            ..GeneratorConfig::default()
        };
        let mut object = Vec::new();
        write_catalog(&cfg, &mut object).unwrap();
        let baseline = |object: &[u8]| {
            let mut reader = csv_core::Reader::new();
            let (mut out, mut ends) = (vec![0u8; 64 * 1024], vec![0usize; 256]);
            let (mut input, mut records) = (object, 0u64);
            loop {
                let (result, consumed, _, _) = reader.read_record(input, &mut out, &mut ends);
                input = &input[consumed..];
                match result {
                    csv_core::ReadRecordResult::Record => records += 1,
                    csv_core::ReadRecordResult::End => return records,
                    _ => {}
                }
            }
        };
        let (mut before, mut after) = (std::time::Duration::MAX, std::time::Duration::MAX);
        for _ in 0..10 {
            let started = std::time::Instant::now();
            let records = baseline(std::hint::black_box(&object));
            before = before.min(started.elapsed());
            let started = std::time::Instant::now();
            let plan = plan_bytes(std::hint::black_box(&object), 8 * MIB, MIB).unwrap();
            after = after.min(started.elapsed());
            assert_eq!(plan.data_rows + 1, records);
        }
        for (name, time) in [("csv_core (before)", before), ("plan_bytes (after)", after)] {
            eprintln!(
                "{name}: {} bytes in {time:?} ({:.0} MiB/s)",
                object.len(),
                object.len() as f64 / time.as_secs_f64() / MIB as f64
            );
        }
    }

    /// Objects made of records, with every kind of line end, quoting and blank line.
    fn arb_field() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-zA-Z0-9 ]{0,12}",
            "[a-z \r]{0,6}",
            "[a-z,\"\n\r é日]{0,16}".prop_map(|s| format!("\"{}\"", s.replace('"', "\"\""))),
            // Malformed quoting: a stray quote, or data after the closing quote.
            "[a-z\"\r]{0,6}",
            "\"[a-z]{0,3}\"[a-z\"\r]{0,3}",
        ]
    }

    fn arb_object() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<bool>(),
            prop::collection::vec(
                (
                    prop::collection::vec(arb_field(), 1..5),
                    prop_oneof!["\n", "\r\n", "\n\n", "\r\n\r\n", "\n\r\n", "\r", "\r\r\n"],
                ),
                0..40,
            ),
            prop_oneof!["", "\n", "\r\n", "\r", "\"", "\"a\nb", "\n\n\r\n"],
        )
            .prop_map(|(bom, records, tail)| {
                let mut out = Vec::new();
                if bom {
                    out.extend_from_slice(UTF8_BOM);
                }
                out.extend_from_slice(b"sku,name\n");
                for (fields, terminator) in records {
                    out.extend_from_slice(fields.join(",").as_bytes());
                    out.extend_from_slice(terminator.as_bytes());
                }
                out.extend_from_slice(tail.as_bytes());
                out
            })
    }

    /// Arbitrary bytes rich in the bytes that matter.
    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                Just(b'"'),
                Just(b','),
                Just(b'\n'),
                Just(b'\r'),
                Just(0xEF),
                Just(0xBB),
                Just(0xBF),
                any::<u8>()
            ],
            0..400,
        )
    }

    /// A chunk of no bytes carrying `hashes`: what the mention tests look at.
    fn chunk_mentioning(index: u32, hashes: &std::collections::BTreeSet<i64>) -> PlannedChunk {
        PlannedChunk {
            index,
            start: 0,
            end: 0,
            first_row: 1,
            rows: 0,
            mentions: hashes.iter().copied().collect(),
        }
    }

    proptest! {
        #[test]
        fn shared_mentions_are_the_hashes_more_than_one_chunk_carries(
            chunks in prop::collection::vec(
                prop::collection::btree_set(-6i64..6, 0..8), 0..6),
        ) {
            let mut planned: Vec<PlannedChunk> = chunks
                .iter()
                .enumerate()
                .map(|(index, hashes)| chunk_mentioning(index as u32, hashes))
                .collect();
            keep_shared_mentions(&mut planned);
            for (chunk, hashes) in planned.iter().zip(&chunks) {
                let expected: Vec<i64> = hashes
                    .iter()
                    .copied()
                    .filter(|h| chunks.iter().filter(|other| other.contains(h)).count() > 1)
                    .collect();
                prop_assert_eq!(&chunk.mentions, &expected);
            }
        }

        /// Pieces of a scan, each a run of chunks with a few hashes; the plan overflows its
        /// memory somewhere in some cases and never in others.
        #[test]
        fn held_chunks_come_out_once_in_order_and_in_batches_only_past_memory(
            pieces in prop::collection::vec(
                prop::collection::vec(prop::collection::btree_set(-4i64..4, 0..3), 0..1300),
                0..5),
            mentions_in_memory in 0usize..3000,
        ) {
            let mut next_index = 0u32;
            let mut held = HeldChunks::new(mentions_in_memory);
            let mut all = Vec::new();
            let mut handed_out: Vec<PlannedChunk> = Vec::new();
            let mut mentions_so_far = 0usize;
            for piece in &pieces {
                let chunks: Vec<PlannedChunk> = piece
                    .iter()
                    .map(|hashes| {
                        next_index += 1;
                        chunk_mentioning(next_index - 1, hashes)
                    })
                    .collect();
                mentions_so_far += piece.iter().map(|h| h.len()).sum::<usize>();
                all.extend(chunks.iter().cloned());
                held.hold(chunks);
                if let Some(batch) = held.full_batch() {
                    prop_assert!(mentions_so_far > mentions_in_memory, "a batch within memory");
                    let hashes: usize = batch.iter().map(|c| c.mentions.len()).sum();
                    prop_assert!(batch.len() >= PLAN_BATCH || hashes >= PLAN_BATCH_MENTIONS);
                    handed_out.extend(batch);
                }
            }
            let (last, count) = held.finish();
            prop_assert_eq!(count as usize, all.len());
            if mentions_so_far > mentions_in_memory {
                let LastChunks::ForPostgres(rest) = last else {
                    return Err(TestCaseError::fail("past memory, the shared hashes are found in the worker"));
                };
                handed_out.extend(rest);
                prop_assert_eq!(handed_out, all);
            } else {
                prop_assert!(handed_out.is_empty());
                keep_shared_mentions(&mut all);
                prop_assert_eq!(last, LastChunks::SharedFound(all));
            }
        }

        #[test]
        fn boundaries_equal_the_reference(
            object in arb_object(),
            chunk_bytes in 1u64..200,
            cuts in prop::collection::vec(0usize..600, 0..5),
        ) {
            let plan = plan_in_pieces(&object, &cuts, chunk_bytes, MIB).unwrap();
            check_against_reference(&object, &plan, chunk_bytes);
            prop_assert_eq!(plan, plan_bytes(&object, chunk_bytes, MIB).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_chunks_cover_all_rows(
            object in arb_bytes(),
            chunk_bytes in 1u64..64,
            cuts in prop::collection::vec(0usize..400, 0..5),
        ) {
            let plan = plan_in_pieces(&object, &cuts, chunk_bytes, MIB).unwrap();
            check_against_reference(&object, &plan, chunk_bytes);
        }

        #[test]
        fn the_limit_is_exact(
            object in arb_object(),
            limit in 1u64..40,
            cuts in prop::collection::vec(0usize..600, 0..4),
        ) {
            let records = reference::records(&object);
            let too_long = records
                .iter()
                .enumerate()
                .find(|(_, r)| (r.content_end - r.start) as u64 > limit);
            match (plan_in_pieces(&object, &cuts, 16, limit), too_long) {
                (Ok(plan), None) => check_against_reference(&object, &plan, 16),
                (Err(err), Some((index, record))) => {
                    prop_assert_eq!(err.row_number, (index > 0).then_some(index as u64));
                    prop_assert_eq!(err.byte_offset, record.start as u64);
                    prop_assert_eq!(err.limit, limit);
                }
                (result, expected) => {
                    prop_assert!(false, "{result:?} where the reference says {expected:?}")
                }
            }
        }
    }
}
