//! The worker's pure per-row work on one generated chunk: parse and validate, the latest row
//! per sku, the content hash and the catalog digest. No service is involved, so instruction
//! counts are repeatable whatever else the machine runs:
//!
//! ```text
//! cargo build --release -p activities --example chunk_cpu
//! valgrind --tool=callgrind --callgrind-out-file=chunk.cg target/release/examples/chunk_cpu 11500
//! callgrind_annotate --inclusive=yes chunk.cg | grep -E 'parse_chunk|content_hashes|catalog_digests'
//! ```
//!
//! 11,500 rows of `etl-bench`'s catalog are about one 8 MiB chunk (the default size).

use activities::{
    chunk::{parse_chunk, parse_header},
    item_hash::{DigestFields, catalog_digests, content_hashes},
};
use generator::{GeneratorConfig, write_catalog};

fn main() {
    let rows: u64 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of rows"))
        .unwrap_or(11_500);
    let config = GeneratorConfig {
        rows,
        seed: 2026,
        loadable_by_copy: true,
        ..Default::default()
    };
    let mut object = Vec::new();
    write_catalog(&config, &mut object).expect("generated");
    let header_end = object
        .iter()
        .position(|&b| b == b'\n')
        .expect("a header line");
    let header = parse_header(&object[..header_end]).expect("the generated header");

    let started = std::time::Instant::now();
    let parsed = parse_chunk(&header, &object[header_end + 1..], 2);
    let latest = parsed.latest_per_sku();
    let modified_at = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("a time");
    let hashes = content_hashes(latest.iter().map(|row| &row.item));
    let digests = catalog_digests(latest.iter().map(|row| {
        DigestFields::of_item(
            &row.item,
            modified_at,
            "catalog.csv",
            "\"etag\"",
            row.row_number as i64,
        )
    }));
    let digest_bytes = hashes.len() * 16 + digests.iter().map(String::len).sum::<usize>();
    println!(
        "{} bytes, {} valid and {} invalid rows, {} items ({} bytes of hashes) in {:?}",
        object.len() - header_end - 1,
        parsed.valid.len(),
        parsed.invalid.len(),
        latest.len(),
        digest_bytes,
        started.elapsed()
    );
}
