//! Rendering drafted records as CSV bytes, with every liberty the contract allows: a byte-order
//! mark, LF and CRLF line ends mixed, blank lines, optional quoting, a last record without a
//! line end.

use crate::rng::Rng;

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LineEnds {
    Lf,
    CrLf,
    Mixed,
}

#[derive(Debug, Clone)]
pub(super) struct Rendered {
    pub(super) csv: Vec<u8>,
    /// Bytes after the header record's line end: what the planner cuts into chunks.
    pub(super) data_bytes: usize,
    /// The longest data record with the blank lines around it and its line end: no chunk is
    /// longer than its chunk size plus twice this.
    pub(super) longest_record_span: usize,
}

/// Renders a header and records given as fields as read. No record may be a single empty
/// field (that would be a blank line).
pub(super) fn render(rng: &mut Rng, header: &[Vec<u8>], records: &[&[Vec<u8>]]) -> Rendered {
    let line_ends = match rng.below(3) {
        0 => LineEnds::Lf,
        1 => LineEnds::CrLf,
        _ => LineEnds::Mixed,
    };
    let mut csv = Vec::new();
    if rng.percent(30) {
        csv.extend_from_slice(UTF8_BOM);
    }
    if rng.percent(5) {
        push_line_end(rng, &mut csv, line_ends);
    }
    push_record(rng, &mut csv, header);
    push_line_end(rng, &mut csv, line_ends);
    let data_start = csv.len();
    let mut longest_record_span = 0;
    for (index, record) in records.iter().enumerate() {
        let span_start = csv.len();
        if rng.percent(8) {
            for _ in 0..rng.between(1..=2) {
                push_line_end(rng, &mut csv, line_ends);
            }
        }
        push_record(rng, &mut csv, record);
        let is_last = index + 1 == records.len();
        if !is_last || rng.percent(70) {
            push_line_end(rng, &mut csv, line_ends);
            if is_last && rng.percent(10) {
                push_line_end(rng, &mut csv, line_ends);
            }
        }
        longest_record_span = longest_record_span.max(csv.len() - span_start);
    }
    Rendered {
        data_bytes: csv.len() - data_start,
        csv,
        longest_record_span,
    }
}

fn push_line_end(rng: &mut Rng, csv: &mut Vec<u8>, line_ends: LineEnds) {
    let crlf = match line_ends {
        LineEnds::Lf => false,
        LineEnds::CrLf => true,
        LineEnds::Mixed => rng.percent(50),
    };
    csv.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
}

fn push_record(rng: &mut Rng, csv: &mut Vec<u8>, fields: &[Vec<u8>]) {
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            csv.push(b',');
        }
        push_field(rng, csv, field);
    }
}

/// Quotes a field when its bytes need it (a quote only opens at a field's start, and inside
/// quotes `""` is one quote), and sometimes when they do not.
fn push_field(rng: &mut Rng, csv: &mut Vec<u8>, field: &[u8]) {
    let needs_quotes = field
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\n' | b'\r'));
    if !needs_quotes && !rng.percent(10) {
        csv.extend_from_slice(field);
        return;
    }
    csv.push(b'"');
    for &byte in field {
        if byte == b'"' {
            csv.push(b'"');
        }
        csv.push(byte);
    }
    csv.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(values: &[&str]) -> Vec<Vec<u8>> {
        values.iter().map(|v| v.as_bytes().to_vec()).collect()
    }

    #[test]
    fn quotes_what_needs_quoting() {
        let mut rng = Rng::new(1);
        for _ in 0..50 {
            let mut csv = Vec::new();
            push_record(
                &mut rng,
                &mut csv,
                &fields(&["a,b", "say \"hi\"", "x\r\ny"]),
            );
            assert_eq!(csv, b"\"a,b\",\"say \"\"hi\"\"\",\"x\r\ny\"");
        }
    }

    #[test]
    fn spans_bound_the_data_section() {
        let mut rng = Rng::new(2);
        let records: Vec<Vec<Vec<u8>>> = (0..20)
            .map(|i| fields(&[&format!("S{i}"), "name", "https://a.example/"]))
            .collect();
        let borrowed: Vec<&[Vec<u8>]> = records.iter().map(Vec::as_slice).collect();
        let rendered = render(&mut rng, &fields(&["sku", "name", "url"]), &borrowed);
        assert!(rendered.longest_record_span >= "S0,name,https://a.example/".len());
        assert!(rendered.data_bytes <= records.len() * rendered.longest_record_span);
        assert!(rendered.data_bytes < rendered.csv.len());
    }
}
