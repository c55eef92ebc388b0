//! What a record is: the one record (and field) splitter that the planner and the chunk parser
//! share, so that "chunks are cut at record ends" and "a chunk parses to its planned rows" hold by
//! construction (`shared/CATALOG_CSV.md`, "The object").
//!
//! RFC 4180 with the contract's line ends, quoting exactly as `csv_core` (and so the `csv` crate)
//! quotes:
//! - a record ends at `\n` or `\r\n` outside quotes; a `\r` not followed by `\n` is data (it stays
//!   in its field, where the validator's trimming applies);
//! - a line with no bytes, or with only the `\r` of its `\r\n`, is skipped: it is not a record;
//! - a `"` opens a quoted field only at the start of a field; inside, `""` is one `"` and any other
//!   `"` closes the quotes; bytes after the closing quote continue the field unquoted (a later `"`
//!   is then data); quoted fields may hold `,`, `\n` and `\r\n`;
//! - the last record may lack a line end; an unclosed quote runs to the end of the input, and all
//!   of that is one record.
//!
//! A record's length runs from its first byte up to its terminator, excluded. A byte-order mark is
//! the caller's business: only the object's first three bytes may be one, so the reader itself
//! never drops one (mid-object, those bytes are data).
//!
//! The reader works on any slicing of its input and keeps a constant-size state; it copies nothing
//! unless the [`FieldSink`] does.

/// Receives the fields of records as the reader splits them: field contents arrive unquoted (the
/// quotes that delimit a field dropped, `""` turned into `"`), possibly in several pieces, each
/// field closed by `end_field`. A record ends after its last field's `end_field`.
pub trait FieldSink {
    fn data(&mut self, bytes: &[u8]);
    fn end_field(&mut self);
}

/// A sink for callers that only need record boundaries (the planner): it keeps nothing, and
/// compiles away.
#[derive(Debug, Default, Clone, Copy)]
pub struct Boundaries;

impl FieldSink for Boundaries {
    #[inline(always)]
    fn data(&mut self, _: &[u8]) {}
    #[inline(always)]
    fn end_field(&mut self) {}
}

/// A sink that collects a record's fields into a `csv::ByteRecord` (what the validator takes).
#[derive(Debug, Default, Clone)]
pub struct RecordFields {
    pub record: csv::ByteRecord,
    field: Vec<u8>,
}

impl RecordFields {
    /// Forgets the fields of the record just read.
    pub fn clear(&mut self) {
        self.record.clear();
        self.field.clear();
    }
}

impl FieldSink for RecordFields {
    #[inline]
    fn data(&mut self, bytes: &[u8]) {
        self.field.extend_from_slice(bytes);
    }

    #[inline]
    fn end_field(&mut self) {
        self.record.push_field(&self.field);
        self.field.clear();
    }
}

/// The end of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordEnd {
    /// The record's length in bytes, from its first byte up to its terminator (excluded).
    pub len: u64,
    /// Length of the terminator: 2 for `\r\n`, 1 for `\n`, 0 at the end of the input.
    pub terminator: u8,
}

/// What one [`RecordReader::read`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Read {
    /// Bytes of the input used. Without a record end, that is the whole input.
    pub consumed: usize,
    /// The record that ended within those bytes (its terminator is their last byte).
    pub record: Option<RecordEnd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between records, where `\n` and `\r\n` are blank lines.
    StartRecord,
    StartField,
    /// Unquoted data, also after a quoted part has been closed.
    InField,
    InQuoted,
    /// Just read a `"` inside quotes: another `"` makes it a literal quote, anything else means
    /// it closed the quotes.
    QuoteInQuoted,
}

/// Incremental record splitter: call [`read`](Self::read) with the input in order (any slicing)
/// until it has consumed it all, then [`finish`](Self::finish) at the end of the input.
#[derive(Debug, Clone)]
pub struct RecordReader {
    state: State,
    /// The last byte consumed was a `\r` outside quotes: the next byte tells whether it is data or
    /// the start of a `\r\n`.
    pending_cr: bool,
    /// Length of the record in progress so far, without a pending `\r`.
    len: u64,
}

impl Default for RecordReader {
    fn default() -> Self {
        Self::new()
    }
}

/// What a `\r` outside quotes turned out to be, when the next byte is known.
enum Cr {
    Data,
    Terminator,
    Unknown,
}

impl RecordReader {
    pub fn new() -> Self {
        Self {
            state: State::StartRecord,
            pending_cr: false,
            len: 0,
        }
    }

    /// Length of the record in progress, as far as it is known to be part of the record (a
    /// trailing `\r` whose next byte has not been seen yet is not counted). 0 between records.
    pub fn record_len(&self) -> u64 {
        self.len
    }

    /// Bytes consumed after the record in progress as far as [`record_len`](Self::record_len)
    /// counts it: 1 while a `\r` waits for its next byte, else 0.
    pub fn undecided(&self) -> u64 {
        u64::from(self.pending_cr)
    }

    /// Reads from `input` until a record ends (its terminator consumed) or the input runs out,
    /// passing field contents to `sink`.
    pub fn read<S: FieldSink>(&mut self, input: &[u8], sink: &mut S) -> Read {
        let mut i = 0;
        if self.pending_cr {
            let Some(&next) = input.first() else {
                return Read {
                    consumed: 0,
                    record: None,
                };
            };
            self.pending_cr = false;
            match (next, self.state) {
                // The `\r\n` of a blank line.
                (b'\n', State::StartRecord) => i = 1,
                (b'\n', _) => return self.end_record(sink, 0, 1, 2),
                _ => {
                    self.len += 1;
                    self.cr_is_data(sink);
                }
            }
        }
        // `input[start..i]` belongs to the record in progress and is not counted in `len` yet.
        let mut start = i;
        while i < input.len() {
            match self.state {
                State::StartRecord => match input[i] {
                    b'\n' => {
                        i += 1;
                        start = i;
                    }
                    b'\r' if input.get(i + 1) == Some(&b'\n') => {
                        i += 2;
                        start = i;
                    }
                    b'\r' if i + 1 == input.len() => {
                        // A blank `\r\n` line or a record starting with data: the next input says.
                        self.pending_cr = true;
                        return Read {
                            consumed: i + 1,
                            record: None,
                        };
                    }
                    _ => {
                        start = i;
                        self.state = State::StartField;
                    }
                },
                State::StartField => match input[i] {
                    b'"' => {
                        i += 1;
                        self.state = State::InQuoted;
                    }
                    b',' => {
                        sink.end_field();
                        i += 1;
                    }
                    b'\n' => return self.end_record(sink, i - start, i + 1, 1),
                    b'\r' => match self.cr(input, i) {
                        Cr::Terminator => return self.end_record(sink, i - start, i + 2, 2),
                        Cr::Data => {
                            self.cr_is_data(sink);
                            i += 1;
                        }
                        Cr::Unknown => return self.wait_for_cr(start, i),
                    },
                    _ => self.state = State::InField,
                },
                State::InField => {
                    // The bytes that end an unquoted run, found with SIMD: every byte of the
                    // object passes here twice (the plan's scan and the chunk's parse), and a
                    // lookup per byte made the plan's scan a third slower.
                    let run = i;
                    i = memchr::memchr3(b',', b'\n', b'\r', &input[i..])
                        .map_or(input.len(), |n| i + n);
                    if i > run {
                        sink.data(&input[run..i]);
                    }
                    let Some(&special) = input.get(i) else {
                        break;
                    };
                    match special {
                        b',' => {
                            sink.end_field();
                            i += 1;
                            self.state = State::StartField;
                        }
                        b'\n' => return self.end_record(sink, i - start, i + 1, 1),
                        _ => match self.cr(input, i) {
                            Cr::Terminator => return self.end_record(sink, i - start, i + 2, 2),
                            Cr::Data => {
                                sink.data(&input[i..=i]);
                                i += 1;
                            }
                            Cr::Unknown => return self.wait_for_cr(start, i),
                        },
                    }
                }
                State::InQuoted => match memchr::memchr(b'"', &input[i..]) {
                    Some(quote) => {
                        sink.data(&input[i..i + quote]);
                        i += quote + 1;
                        self.state = State::QuoteInQuoted;
                    }
                    None => {
                        sink.data(&input[i..]);
                        i = input.len();
                    }
                },
                State::QuoteInQuoted => match input[i] {
                    b'"' => {
                        sink.data(&input[i..=i]);
                        i += 1;
                        self.state = State::InQuoted;
                    }
                    b',' => {
                        sink.end_field();
                        i += 1;
                        self.state = State::StartField;
                    }
                    b'\n' => return self.end_record(sink, i - start, i + 1, 1),
                    b'\r' => match self.cr(input, i) {
                        Cr::Terminator => return self.end_record(sink, i - start, i + 2, 2),
                        Cr::Data => {
                            self.cr_is_data(sink);
                            i += 1;
                        }
                        Cr::Unknown => return self.wait_for_cr(start, i),
                    },
                    _ => self.state = State::InField,
                },
            }
        }
        self.len += (i - start) as u64;
        Read {
            consumed: i,
            record: None,
        }
    }

    /// Ends the input: returns the last record if one is in progress (a line without a line end,
    /// or an unclosed quote). The reader is then ready for a new input.
    pub fn finish<S: FieldSink>(&mut self, sink: &mut S) -> Option<RecordEnd> {
        if self.pending_cr {
            // A `\r` at the end of the input is not followed by `\n`: data.
            self.pending_cr = false;
            self.len += 1;
            self.cr_is_data(sink);
        }
        if self.state == State::StartRecord {
            return None;
        }
        self.end_record(sink, 0, 0, 0).record
    }

    #[inline]
    fn cr(&self, input: &[u8], i: usize) -> Cr {
        match input.get(i + 1) {
            Some(b'\n') => Cr::Terminator,
            Some(_) => Cr::Data,
            None => Cr::Unknown,
        }
    }

    /// A `\r` outside quotes that is data: it continues (or starts) an unquoted field.
    #[inline]
    fn cr_is_data<S: FieldSink>(&mut self, sink: &mut S) {
        sink.data(b"\r");
        self.state = State::InField;
    }

    /// The input ends with a `\r` at `i`, outside quotes.
    fn wait_for_cr(&mut self, start: usize, i: usize) -> Read {
        self.len += (i - start) as u64;
        self.pending_cr = true;
        Read {
            consumed: i + 1,
            record: None,
        }
    }

    #[inline]
    fn end_record<S: FieldSink>(
        &mut self,
        sink: &mut S,
        uncounted: usize,
        consumed: usize,
        terminator: u8,
    ) -> Read {
        sink.end_field();
        let len = self.len + uncounted as u64;
        self.len = 0;
        self.state = State::StartRecord;
        Read {
            consumed,
            record: Some(RecordEnd { len, terminator }),
        }
    }
}

/// Test support: the contract's record rules written out the plainest way, byte by byte over a
/// whole object, as the oracle for the reader, the planner and the parser.
#[cfg(test)]
pub(crate) mod reference {
    pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Record {
        /// Object offset of the first byte.
        pub start: usize,
        /// Object offset of the terminator (or of the end of the object).
        pub content_end: usize,
        /// Object offset just after the terminator.
        pub end: usize,
        pub fields: Vec<Vec<u8>>,
    }

    /// Every record of `object`, which may start with a byte-order mark.
    pub fn records(object: &[u8]) -> Vec<Record> {
        let mut records = Vec::new();
        let mut i = if object.starts_with(UTF8_BOM) { 3 } else { 0 };
        while i < object.len() {
            // Empty lines are not records.
            if object[i] == b'\n' {
                i += 1;
                continue;
            }
            if object[i] == b'\r' && object.get(i + 1) == Some(&b'\n') {
                i += 2;
                continue;
            }
            let start = i;
            let mut fields = Vec::new();
            let mut field = Vec::new();
            let mut at_field_start = true;
            let mut quoted = false;
            loop {
                let Some(&b) = object.get(i) else {
                    fields.push(field);
                    records.push(Record {
                        start,
                        content_end: i,
                        end: i,
                        fields,
                    });
                    break;
                };
                if quoted {
                    if b == b'"' && object.get(i + 1) == Some(&b'"') {
                        field.push(b'"');
                        i += 2;
                    } else if b == b'"' {
                        quoted = false;
                        i += 1;
                    } else {
                        field.push(b);
                        i += 1;
                    }
                    continue;
                }
                if b == b'"' && at_field_start {
                    quoted = true;
                    at_field_start = false;
                    i += 1;
                    continue;
                }
                at_field_start = false;
                let terminator = if b == b'\n' {
                    1
                } else if b == b'\r' && object.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    0
                };
                if terminator > 0 {
                    fields.push(field);
                    records.push(Record {
                        start,
                        content_end: i,
                        end: i + terminator,
                        fields,
                    });
                    i += terminator;
                    break;
                }
                if b == b',' {
                    fields.push(std::mem::take(&mut field));
                    at_field_start = true;
                } else {
                    field.push(b);
                }
                i += 1;
            }
        }
        records
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::reference::{self, UTF8_BOM};
    use super::*;

    #[derive(Default)]
    struct Collect {
        fields: Vec<Vec<u8>>,
        field: Vec<u8>,
    }

    impl FieldSink for Collect {
        fn data(&mut self, bytes: &[u8]) {
            self.field.extend_from_slice(bytes);
        }
        fn end_field(&mut self) {
            self.fields.push(std::mem::take(&mut self.field));
        }
    }

    /// `(start, content_end, end, fields)` of every record, feeding `body` in pieces cut at `cuts`.
    fn read_all(body: &[u8], cuts: &[usize]) -> Vec<reference::Record> {
        let mut reader = RecordReader::new();
        let mut sink = Collect::default();
        let mut spans = Vec::new();
        let mut offset = 0usize;
        let mut bounds: Vec<usize> = cuts.iter().map(|&c| c.min(body.len())).collect();
        bounds.push(body.len());
        bounds.sort_unstable();
        let mut piece_start = 0;
        let mut push = |end: RecordEnd, offset: usize, sink: &mut Collect| {
            let content_end = offset - usize::from(end.terminator);
            spans.push(reference::Record {
                start: content_end - end.len as usize,
                content_end,
                end: offset,
                fields: std::mem::take(&mut sink.fields),
            });
        };
        for bound in bounds {
            let mut piece = &body[piece_start..bound];
            piece_start = bound;
            while !piece.is_empty() {
                let read = reader.read(piece, &mut sink);
                assert!(read.consumed > 0 || piece.is_empty());
                offset += read.consumed;
                piece = &piece[read.consumed..];
                match read.record {
                    Some(end) => push(end, offset, &mut sink),
                    None => assert!(piece.is_empty(), "without a record end, all is consumed"),
                }
            }
        }
        if let Some(end) = reader.finish(&mut sink) {
            push(end, offset, &mut sink);
        }
        assert_eq!(
            reader.finish(&mut sink),
            None,
            "finish leaves a fresh reader"
        );
        spans
    }

    fn fields(object: &[u8]) -> Vec<Vec<String>> {
        read_all(object, &[])
            .into_iter()
            .map(|r| {
                r.fields
                    .iter()
                    .map(|f| String::from_utf8_lossy(f).into_owned())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn lone_cr_is_data() {
        assert_eq!(fields(b"a,b\rc\n"), [["a", "b\rc"]]);
        assert_eq!(fields(b"a,\rb\r\rc"), [["a", "\rb\r\rc"]]);
        assert_eq!(fields(b"\r\ra"), [["\r\ra"]]);
        // Also after a closing quote, where the field continues unquoted.
        assert_eq!(fields(b"\"a\"\rb\n"), [["a\rb"]]);
    }

    #[test]
    fn crlf_ends_a_record_and_blank_lines_are_skipped() {
        assert_eq!(
            fields(b"a,b\r\n\r\n\nc\r\n"),
            vec![vec!["a", "b"], vec!["c"]]
        );
        assert_eq!(fields(b"\r\n\n\r\n"), Vec::<Vec<String>>::new());
        // `\r\r\n`: the first `\r` is data, the record is not empty.
        assert_eq!(fields(b"\r\r\nx"), [["\r"], ["x"]]);
        let spans = read_all(b"a,b\r\n\r\nc", &[]);
        assert_eq!(
            (spans[0].start, spans[0].content_end, spans[0].end),
            (0, 3, 5)
        );
        assert_eq!(
            (spans[1].start, spans[1].content_end, spans[1].end),
            (7, 8, 8)
        );
    }

    #[test]
    fn cr_at_the_end_of_the_input_is_data() {
        assert_eq!(fields(b"a,b\r"), [["a", "b\r"]]);
        // A line holding only a `\r` is not empty: it is a record of one field.
        assert_eq!(fields(b"a\n\r"), [["a"], ["\r"]]);
        // The same when the `\r` ends one piece of input and the input then ends.
        let spans = read_all(b"a,b\r", &[4]);
        assert_eq!(
            (spans[0].start, spans[0].content_end, spans[0].end),
            (0, 4, 4)
        );
    }

    #[test]
    fn crlf_split_across_pieces() {
        for object in [&b"a,b\r\nc"[..], b"\r\nc", b"\"q\"\r\nc", b"a,\r\nc"] {
            let whole = read_all(object, &[]);
            for cut in 0..=object.len() {
                assert_eq!(read_all(object, &[cut]), whole, "{object:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn quoting_like_csv_core() {
        assert_eq!(
            fields(b"\"a,b\",\"c\"\"d\",\"e\nf\",\"g\r\nh\"\n"),
            [["a,b", "c\"d", "e\nf", "g\r\nh"]]
        );
        // A quote opens only at a field start; after a closing quote the field goes on unquoted.
        assert_eq!(fields(b"a\"b,\"c\"d\"e\n"), [["a\"b", "cd\"e"]]);
        assert_eq!(fields(b"\"\"\n"), [[""]]);
        assert_eq!(fields(b",\n"), [["", ""]]);
    }

    #[test]
    fn an_unclosed_quote_runs_to_the_end_of_the_input() {
        assert_eq!(fields(b"a,\"b\nc\r\nd"), [["a", "b\nc\r\nd"]]);
        let spans = read_all(b"h\n\"x\n\n", &[]);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[1].start, spans[1].end), (2, 6));
    }

    #[test]
    fn bom_bytes_are_data_for_the_reader() {
        assert_eq!(fields(b"\xEF\xBB\xBF\"a\"\n"), [["\u{feff}\"a\""]]);
    }

    #[test]
    fn record_len_counts_committed_bytes_only() {
        let mut reader = RecordReader::new();
        let read = reader.read(b"\n\r\nabc\r", &mut Boundaries);
        assert_eq!(read.consumed, 7);
        assert_eq!((reader.record_len(), reader.undecided()), (3, 1));
        let read = reader.read(b"\n", &mut Boundaries);
        assert_eq!(
            read.record,
            Some(RecordEnd {
                len: 3,
                terminator: 2
            })
        );
        assert_eq!(reader.record_len(), 0);
        reader.read(b"ab\r", &mut Boundaries);
        reader.read(b"c", &mut Boundaries);
        assert_eq!((reader.record_len(), reader.undecided()), (4, 0));
    }

    /// The `csv` crate with `\n` as its only terminator, adjusted for the contract: the `\r` of a
    /// `\r\n` ends up at the end of the last field there, and a `\r\n` line is a record of one
    /// field `\r`. An oracle independent of the reference that confirms it quotes as csv_core.
    fn csv_crate_records(object: &[u8]) -> Vec<Vec<Vec<u8>>> {
        let body = object.strip_prefix(UTF8_BOM).unwrap_or(object);
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .terminator(csv::Terminator::Any(b'\n'))
            // csv strips a BOM at its input's start; keep BOM bytes after the first one as data.
            .from_reader(std::io::Read::chain(&b"\n"[..], body));
        let mut out = Vec::new();
        let mut record = csv::ByteRecord::new();
        while reader.read_byte_record(&mut record).unwrap() {
            // Offsets in `body` (the chained `\n` is offset 0 of the reader's input).
            let start = (record.position().unwrap().byte() as usize).saturating_sub(1);
            let end = reader.position().byte() as usize - 1;
            let mut fields: Vec<Vec<u8>> = record.iter().map(<[u8]>::to_vec).collect();
            // Ended by `\r\n` (not by the end of the input inside quotes, where the `\n` would be
            // the field's last byte).
            if body[start..end].ends_with(b"\r\n") && fields.last().unwrap().ends_with(b"\r") {
                let raw = &body[start..end];
                let first = raw.iter().position(|&b| b != b'\n').unwrap();
                if &raw[first..] == b"\r\n" {
                    continue;
                }
                fields.last_mut().unwrap().pop();
            }
            out.push(fields);
        }
        out
    }

    fn tricky_bytes() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b",".to_vec()),
            Just(b"\"".to_vec()),
            Just(b"\"\"".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(UTF8_BOM.to_vec()),
            Just(b"ab".to_vec()),
            prop::collection::vec(any::<u8>(), 0..4),
        ];
        prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn reader_equals_the_reference_for_any_slicing(
            object in tricky_bytes(),
            cuts in prop::collection::vec(0usize..200, 0..6),
        ) {
            let body = object.strip_prefix(UTF8_BOM).unwrap_or(&object);
            let bom = object.len() - body.len();
            let shifted: Vec<reference::Record> = read_all(body, &cuts)
                .into_iter()
                .map(|r| reference::Record {
                    start: r.start + bom,
                    content_end: r.content_end + bom,
                    end: r.end + bom,
                    ..r
                })
                .collect();
            prop_assert_eq!(shifted, reference::records(&object));
        }

        #[test]
        fn reference_quotes_as_csv_core(object in tricky_bytes()) {
            let fields: Vec<Vec<Vec<u8>>> =
                reference::records(&object).into_iter().map(|r| r.fields).collect();
            prop_assert_eq!(fields, csv_crate_records(&object));
        }
    }
}
