//! The unchanged-item lookup: which of a snapshot chunk's items differ from the catalog (or are
//! missing from it, or delisted), so that only those are written.
//!
//! A probe of the primary key per sku costs about 4 µs (four buffer hits), 50 ms for a chunk of
//! 11,000 skus; reading the same items in one ordered scan of the key costs 5 ms, when they lie
//! together. They do when the object lists its items in sku order or in runs of it (a database
//! export, a sitemap); they do not when it lists them in any other order. So the chunk's skus,
//! sorted, are cut into segments, and each segment's key range is scanned in order, capped at a
//! quarter more items than the segment has skus (some items of the range may be gone from the
//! object, delisted, or another chunk's), so no scan reads more than that, whatever the range
//! holds. A segment's skus up to the last item its scan read are decided by the scan; the rest
//! (a segment spread over the catalog, or a few skus far from the others: new items, or a sku
//! the object repeats from far away) are probed one by one, as before. Spread skus cost their
//! probes and the capped scans, about a quarter of the probes more.

use std::{collections::HashSet, ops::Range};

use sqlx::{Postgres, Transaction};

use crate::error::EtlError;

/// A segment holds at least this many skus, so a small chunk is one scan.
const MIN_SEGMENT_SKUS: usize = 256;
/// Segments per chunk, at most: few enough that the scans' fixed costs stay small, enough that
/// a few far-off skus at either end of the sorted chunk spoil only the segments they are in.
const MAX_SEGMENTS: usize = 16;

/// One segment's scan: its number (from 1), and the items it read: skus, and content hashes
/// (`None` for a delisted item).
type SegmentScan = (i64, Vec<String>, Vec<Option<Vec<u8>>>);

/// The segments of `skus` sorted skus: consecutive index ranges of near-equal length.
fn segments(skus: usize) -> Vec<Range<usize>> {
    if skus == 0 {
        return Vec::new();
    }
    let count = skus.div_ceil(MIN_SEGMENT_SKUS).min(MAX_SEGMENTS);
    (0..count)
        .map(|i| i * skus / count..(i + 1) * skus / count)
        .collect()
}

/// How many items the scan of a segment of `skus` reads at most.
fn scan_cap(skus: usize) -> usize {
    skus + skus / 4 + 64
}

/// What the scan of one segment's key range decided. `chunk` is the segment's (sku, content
/// hash), sorted by sku; `read` the items the scan read, in sku order, at most `cap`, with
/// their content hashes (`None` for a delisted item). Returns the changed skus among the
/// decided ones, and how many of the segment's skus (a prefix) are decided.
fn decide<'a>(
    chunk: &[(&'a str, &[u8])],
    read: &[(String, Option<Vec<u8>>)],
    cap: usize,
) -> (Vec<&'a str>, usize) {
    let decided = if read.len() < cap {
        chunk.len()
    } else {
        let read_to = read.last().map(|(sku, _)| sku.as_str()).unwrap_or("");
        chunk.partition_point(|(sku, _)| *sku <= read_to)
    };
    let mut changed = Vec::new();
    let mut next = read.iter().peekable();
    for &(sku, hash) in &chunk[..decided] {
        while next.next_if(|(item, _)| item.as_str() < sku).is_some() {}
        let same = match next.peek() {
            Some((item, stored)) => item == sku && stored.as_deref() == Some(hash),
            None => false,
        };
        if !same {
            changed.push(sku);
        }
    }
    (changed, decided)
}

/// The skus among `chunk` (sku, content hash; sorted by sku, each once) whose listed item in
/// `source` has another content hash, or none. Runs in the chunk's commit transaction, after the
/// source row's lock: it reads the catalog as the chunk's writes will meet it.
pub(super) async fn changed_skus(
    tx: &mut Transaction<'_, Postgres>,
    source: &str,
    chunk: &[(&str, &[u8])],
) -> Result<HashSet<String>, EtlError> {
    let segments = segments(chunk.len());
    if segments.is_empty() {
        return Ok(HashSet::new());
    }
    let low: Vec<&str> = segments.iter().map(|s| chunk[s.start].0).collect();
    let high: Vec<&str> = segments.iter().map(|s| chunk[s.end - 1].0).collect();
    let caps: Vec<i64> = segments.iter().map(|s| scan_cap(s.len()) as i64).collect();
    // One ordered scan of the primary key per segment (the sku column's "C" collation orders
    // by bytes, as Rust orders strings).
    let scans: Vec<SegmentScan> = sqlx::query_as(
        "SELECT g.i, coalesce(l.skus, '{}'), coalesce(l.hashes, '{}')
         FROM unnest($2::text[], $3::text[], $4::bigint[]) WITH ORDINALITY AS g(low, high, cap, i)
         CROSS JOIN LATERAL (
             SELECT array_agg(e.sku) AS skus, array_agg(e.content_hash) AS hashes
             FROM (SELECT e.sku,
                          CASE WHEN e.delisted_at IS NULL THEN e.content_hash END
                              AS content_hash
                   FROM catalog_items e
                   WHERE e.source = $1 AND e.sku >= g.low COLLATE \"C\"
                     AND e.sku <= g.high COLLATE \"C\"
                   ORDER BY e.sku LIMIT g.cap) AS e) AS l
         ORDER BY g.i",
    )
    .bind(source)
    .bind(&low)
    .bind(&high)
    .bind(&caps)
    .fetch_all(&mut **tx)
    .await?;
    let mut scans = scans.into_iter().peekable();
    let mut changed = HashSet::new();
    let mut probe: Vec<(&str, &[u8])> = Vec::new();
    for (number, segment) in (1..).zip(&segments) {
        let part = &chunk[segment.clone()];
        // A segment without its scan (none is expected) is probed whole.
        let Some((_, skus, hashes)) = scans.next_if(|(i, _, _)| *i == number) else {
            probe.extend_from_slice(part);
            continue;
        };
        let mut read: Vec<(String, Option<Vec<u8>>)> = skus.into_iter().zip(hashes).collect();
        // `array_agg` keeps the scan's order in practice; the merge below must not rely on it.
        if !read.is_sorted_by(|a, b| a.0 <= b.0) {
            read.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        let (found, decided) = decide(part, &read, scan_cap(part.len()));
        changed.extend(found.into_iter().map(str::to_owned));
        probe.extend_from_slice(&part[decided..]);
    }
    if probe.is_empty() {
        return Ok(changed);
    }
    let (skus, hashes): (Vec<&str>, Vec<&[u8]>) = probe.into_iter().unzip();
    // One primary-key probe per sku, whatever the statistics say: `OFFSET 0` keeps the
    // planner from flattening the lookup into a join. Right after a source's first snapshot
    // the statistics still count a few rows for it, and the planner then hashed all of the
    // source's items for every chunk (194 ms a chunk on 200,000 items, against 40 ms).
    let probed: Vec<String> = sqlx::query_scalar(
        "SELECT s.sku FROM unnest($2::text[], $3::bytea[]) AS s(sku, content_hash)
         LEFT JOIN LATERAL (SELECT e.content_hash FROM catalog_items e
                            WHERE e.source = $1 AND e.sku = s.sku AND e.delisted_at IS NULL
                            OFFSET 0) AS e ON true
         WHERE e.content_hash IS DISTINCT FROM s.content_hash",
    )
    .bind(source)
    .bind(&skus)
    .bind(&hashes)
    .fetch_all(&mut **tx)
    .await?;
    changed.extend(probed);
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// The catalog as the lookup sees it: sku → (content hash, listed).
    type Catalog = BTreeMap<String, (Vec<u8>, bool)>;

    /// The lookup's answer from its definition: a sku is unchanged when it is listed with the
    /// same content hash.
    fn changed_by_definition(chunk: &[(String, Vec<u8>)], catalog: &Catalog) -> HashSet<String> {
        chunk
            .iter()
            .filter(|(sku, hash)| catalog.get(sku) != Some(&(hash.clone(), true)))
            .map(|(sku, _)| sku.clone())
            .collect()
    }

    /// The segments' scans and the probes, with the scans done as the SQL does them.
    fn changed_by_scans(chunk: &[(String, Vec<u8>)], catalog: &Catalog) -> HashSet<String> {
        let chunk: Vec<(&str, &[u8])> = chunk
            .iter()
            .map(|(sku, hash)| (sku.as_str(), hash.as_slice()))
            .collect();
        let mut changed = HashSet::new();
        for segment in segments(chunk.len()) {
            let part = &chunk[segment];
            let cap = scan_cap(part.len());
            let (low, high) = (part[0].0.to_owned(), part[part.len() - 1].0.to_owned());
            let read: Vec<(String, Option<Vec<u8>>)> = catalog
                .range(low..=high)
                .take(cap)
                .map(|(sku, (hash, listed))| (sku.clone(), listed.then(|| hash.clone())))
                .collect();
            let (found, decided) = decide(part, &read, cap);
            changed.extend(found.into_iter().map(str::to_owned));
            for (sku, hash) in &part[decided..] {
                if catalog.get(*sku) != Some(&(hash.to_vec(), true)) {
                    changed.insert((*sku).to_owned());
                }
            }
        }
        changed
    }

    #[test]
    fn segments_cover_every_sku_once_in_order() {
        for skus in [0, 1, 255, 256, 257, 4_095, 4_096, 4_097, 11_000, 100_000] {
            let segments = segments(skus);
            let mut next = 0;
            for segment in &segments {
                assert_eq!(segment.start, next, "{skus}: {segments:?}");
                assert!(!segment.is_empty(), "{skus}: {segments:?}");
                next = segment.end;
            }
            assert_eq!(next, skus, "{skus}: {segments:?}");
            assert!(segments.len() <= MAX_SEGMENTS);
        }
    }

    /// A scan that reached its cap decides the skus up to the last item it read, and no
    /// further: a sku after it may be listed unchanged.
    #[test]
    fn a_capped_scan_decides_up_to_the_last_item_it_read() {
        let chunk = [("a", &b"1"[..]), ("c", b"2"), ("e", b"3")];
        let read = vec![
            ("a".to_owned(), Some(b"1".to_vec())),
            ("b".to_owned(), Some(b"9".to_vec())),
            ("c".to_owned(), Some(b"0".to_vec())),
        ];
        assert_eq!(decide(&chunk, &read, 3), (vec!["c"], 2));
        assert_eq!(decide(&chunk, &read, 4), (vec!["c", "e"], 3));
    }

    fn catalog_and_chunk() -> impl Strategy<Value = (Catalog, Vec<(String, Vec<u8>)>)> {
        // Skus from a small space, so chunks and catalogs overlap, lie together or spread.
        let sku = (0u32..3_000).prop_map(|n| format!("S{n:05}"));
        let item = (0u8..3, any::<bool>());
        (
            prop::collection::btree_map(sku.clone(), item, 0..2_000),
            prop::collection::btree_map(sku, 0u8..3, 0..1_200),
            0u32..3_000,
        )
            .prop_map(|(catalog, chunk, run_start)| {
                let catalog: Catalog = catalog
                    .into_iter()
                    .map(|(sku, (hash, listed))| (sku, (vec![hash], listed)))
                    .collect();
                // Half the chunk's skus in one run, as a sorted object gives them.
                let run = (run_start..run_start + 600).map(|n| (format!("S{n:05}"), 1u8));
                let chunk: BTreeMap<String, u8> = chunk.into_iter().chain(run).collect();
                let chunk = chunk.into_iter().map(|(sku, h)| (sku, vec![h])).collect();
                (catalog, chunk)
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        /// Whatever the catalog holds and however the chunk's skus lie in it, scans and probes
        /// together find exactly the changed skus.
        #[test]
        fn scans_and_probes_find_exactly_the_changed_skus((catalog, chunk) in catalog_and_chunk()) {
            prop_assert_eq!(changed_by_scans(&chunk, &catalog), changed_by_definition(&chunk, &catalog));
        }
    }
}
