//! Scenario tests. The rendered CSV is checked against the structured records by a small
//! re-parse written here from the contract, independently of the drafting code.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::{Decimal, RoundingStrategy};

use super::*;
use crate::model::{Availability, DELISTED, Item, ItemVersion, JobSummary};

const SEEDS: u64 = 500;

/// One record as an RFC 4180 splitter reads it, and the object offset after its line end.
struct Split {
    fields: Vec<Vec<u8>>,
    end: usize,
}

/// Header and data records of an object: BOM dropped, blank lines skipped, quotes undone.
fn split(csv: &[u8]) -> (usize, Vec<Split>) {
    let mut i = if csv.starts_with(b"\xEF\xBB\xBF") {
        3
    } else {
        0
    };
    let mut records = Vec::new();
    let mut header_end = 0;
    while i < csv.len() {
        if csv[i] == b'\n' {
            i += 1;
            continue;
        }
        if csv[i..].starts_with(b"\r\n") {
            i += 2;
            continue;
        }
        let mut fields = Vec::new();
        let mut field = Vec::new();
        let mut quoted = false;
        let mut at_field_start = true;
        loop {
            let Some(&byte) = csv.get(i) else {
                fields.push(std::mem::take(&mut field));
                break;
            };
            if quoted {
                if csv[i..].starts_with(b"\"\"") {
                    field.push(b'"');
                    i += 2;
                } else {
                    quoted = byte != b'"';
                    if quoted {
                        field.push(byte);
                    }
                    i += 1;
                }
                continue;
            }
            if byte == b'"' && at_field_start {
                quoted = true;
                at_field_start = false;
                i += 1;
                continue;
            }
            at_field_start = false;
            let line_end = match (byte, csv.get(i + 1)) {
                (b'\n', _) => 1,
                (b'\r', Some(b'\n')) => 2,
                _ => 0,
            };
            if line_end > 0 {
                fields.push(std::mem::take(&mut field));
                i += line_end;
                break;
            }
            if byte == b',' {
                fields.push(std::mem::take(&mut field));
                at_field_start = true;
            } else {
                field.push(byte);
            }
            i += 1;
        }
        if header_end == 0 {
            header_end = i;
        }
        records.push(Split { fields, end: i });
    }
    (header_end, records)
}

fn text(field: &[u8]) -> String {
    String::from_utf8(field.iter().copied().filter(|&b| b != 0).collect())
        .expect("utf-8 field")
        .trim()
        .to_owned()
}

fn optional(field: Option<&Vec<u8>>) -> Option<String> {
    field.map(|f| text(f)).filter(|t| !t.is_empty())
}

fn availability(value: &str) -> Option<Availability> {
    if value.is_empty() {
        return None;
    }
    let lower = value.to_lowercase();
    let spelling = lower
        .strip_prefix("https://schema.org/")
        .or_else(|| lower.strip_prefix("http://schema.org/"))
        .unwrap_or(&lower);
    let key: String = spelling
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '_' && *c != '-')
        .collect();
    Some(match key.as_str() {
        "instock"
        | "available"
        | "availablenow"
        | "yes"
        | "true"
        | "limitedstock"
        | "lowstock"
        | "limitedavailability"
        | "instoreonly"
        | "onlineonly" => Availability::InStock,
        "outofstock"
        | "soldout"
        | "unavailable"
        | "notavailable"
        | "currentlyunavailable"
        | "temporarilyoutofstock"
        | "no"
        | "false" => Availability::OutOfStock,
        "preorder" | "presale" | "backorder" | "backordered" => Availability::Preorder,
        "discontinued" | "nolongeravailable" => Availability::Discontinued,
        _ => Availability::Unknown,
    })
}

fn grams(amount: &str, unit: &str) -> Decimal {
    let per_unit = match unit.to_ascii_lowercase().as_str() {
        "g" | "grams" => Decimal::ONE,
        "kg" | "kilograms" => Decimal::ONE_THOUSAND,
        "oz" | "ounces" => "28.349523125".parse().expect("decimal"),
        "lb" | "lbs" => "453.59237".parse().expect("decimal"),
        other => panic!("unit {other}"),
    };
    let amount: Decimal = amount.parse().expect("weight amount");
    (amount * per_unit)
        .round_dp_with_strategy(6, RoundingStrategy::MidpointAwayFromZero)
        .normalize()
}

/// Reads a valid record the way the contract describes, given the header's lower-cased names.
fn read_item(names: &[String], written: &[String], fields: &[Vec<u8>]) -> Item {
    let field = |name: &str| names.iter().position(|n| n == name).map(|i| &fields[i]);
    let price = optional(field("price")).map(|written| {
        let amount: String = written
            .trim_start_matches(['$', '€', '£'])
            .chars()
            .filter(|&c| c != ',')
            .collect();
        Decimal::from_str_exact(&amount).expect("price")
    });
    let weight_grams = optional(field("weight")).map(|amount| {
        let unit = optional(field("weight_unit").or(field("weight_units"))).expect("unit");
        grams(&amount, &unit)
    });
    let image_urls = optional(field("image_urls").or(field("images")))
        .map(|urls| {
            urls.split('|')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let known = [
        "sku",
        "name",
        "product_url",
        "url",
        "brand",
        "category",
        "description",
        "price",
        "currency",
        "weight",
        "weight_unit",
        "weight_units",
        "availability",
        "image_urls",
        "images",
    ];
    let attributes = names
        .iter()
        .zip(written)
        .zip(fields)
        .filter(|((name, _), _)| !known.contains(&name.as_str()))
        .filter_map(|((_, written), value)| Some((written.clone(), optional(Some(value))?)))
        .collect();
    Item {
        sku: text(field("sku").expect("sku")),
        name: text(field("name").expect("name")),
        brand: optional(field("brand")),
        category: optional(field("category")),
        description: optional(field("description")),
        price,
        currency: optional(field("currency"))
            .map_or_else(|| "USD".to_owned(), |c| c.to_ascii_uppercase()),
        weight_grams,
        availability: optional(field("availability")).and_then(|a| availability(&a)),
        product_url: text(field("product_url").or(field("url")).expect("url")),
        image_urls,
        attributes,
    }
}

fn mentioned(field: Option<&Vec<u8>>) -> Option<String> {
    let without_nul: Vec<u8> = field?.iter().copied().filter(|&b| b != 0).collect();
    let sku = String::from_utf8(without_nul).ok()?.trim().to_owned();
    (!sku.is_empty()).then_some(sku)
}

fn check_object(object: &ScenarioObject) {
    let (_, records) = split(&object.csv);
    let header = &records[0].fields;
    let written: Vec<String> = header.iter().map(|f| text(f)).collect();
    let names: Vec<String> = written.iter().map(|n| n.to_ascii_lowercase()).collect();
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate header names");
    assert!(names.contains(&"sku".to_owned()));
    assert!(names.contains(&"product_url".to_owned()) || names.contains(&"url".to_owned()));
    if object.bad_header {
        assert!(!names.contains(&"name".to_owned()));
        assert!(object.records.is_empty());
        return;
    }
    let data = &records[1..];
    assert_eq!(data.len(), object.records.len(), "record count");
    let sku_index = names.iter().position(|n| n == "sku");
    for (row, (split, record)) in data.iter().zip(&object.records).enumerate() {
        match record {
            Record::Valid(item) => {
                assert_eq!(split.fields.len(), header.len(), "row {}", row + 1);
                assert!(
                    split.fields.iter().all(|f| !f.contains(&0)),
                    "NUL in a valid record"
                );
                assert_eq!(
                    &read_item(&names, &written, &split.fields),
                    item,
                    "row {}",
                    row + 1
                );
            }
            Record::Invalid(invalid) => {
                let field_count =
                    invalid.failures == [crate::model::Failure::new("record", "field_count")];
                assert_eq!(
                    field_count,
                    split.fields.len() != header.len(),
                    "row {}",
                    row + 1
                );
                assert!(!invalid.failures.is_empty());
                let sku_field = sku_index.and_then(|i| split.fields.get(i));
                assert_eq!(
                    invalid.mentioned_sku,
                    mentioned(sku_field),
                    "row {}",
                    row + 1
                );
            }
        }
    }
}

/// Chunks as the planner cuts them: at the first record end at least `chunk_bytes` after the
/// chunk's start. Returns each chunk's row range.
fn chunk_rows(csv: &[u8], chunk_bytes: u64) -> Vec<RangeInclusive<u64>> {
    let (header_end, records) = split(csv);
    let mut chunks = Vec::new();
    let mut chunk_start = header_end;
    let mut first_row = 1;
    for (index, record) in records[1..].iter().enumerate() {
        let row = index as u64 + 1;
        if (record.end - chunk_start) as u64 >= chunk_bytes || index + 2 == records.len() {
            chunks.push(first_row..=row);
            chunk_start = record.end;
            first_row = row + 1;
        }
    }
    chunks
}

fn run(scenario: &Scenario) -> (Model, Vec<OpResult>) {
    let mut model = scenario.model(&scenario.placeholder_versions());
    let results = scenario
        .steps
        .iter()
        .map(|step| {
            let op = step.op(|| {
                let Action::CancelAfterChunks { object, chunks, .. } = step.action else {
                    unreachable!("only cancels ask");
                };
                let csv = &scenario.objects[object.0].csv;
                let all = chunk_rows(csv, step.execution.chunk_bytes);
                assert!(
                    all.len() > chunks as usize,
                    "{scenario}: cancel after the last chunk"
                );
                all.into_iter().take(chunks as usize).collect()
            });
            model.apply(op)
        })
        .collect();
    (model, results)
}

fn check_accounting(scenario: &Scenario, model: &Model) {
    for job in model.jobs() {
        assert_eq!(
            job.rows_total,
            job.rows_valid + job.rows_invalid,
            "{scenario}"
        );
        assert_eq!(job.invalid_rows.len() as u64, job.rows_invalid);
        let counts = [job.items, job.items_delisted, job.items_relisted];
        assert_eq!(
            counts.iter().all(Option::is_none),
            job.mode.dry_run,
            "{scenario}"
        );
        assert!(job.delist_refused.is_none() || job.items_delisted == Some(0));
        if job.mode.partial || job.status != JobStatus::Completed {
            assert_eq!(job.items_delisted.unwrap_or(0), 0, "{scenario}");
        }
    }
    let mut seen = BTreeSet::new();
    let mut delisted_observations = 0;
    for observation in model.observations() {
        let key = (&observation.version, observation.row_number);
        if observation.availability == DELISTED {
            delisted_observations += 1;
            assert_eq!(observation.row_number, 0);
            assert!(!observation.in_stock);
        } else {
            assert!(seen.insert(key), "{scenario}: observed twice {key:?}");
            assert!(observation.row_number > 0);
        }
    }
    let delisted_by_jobs: u64 = model.jobs().iter().filter_map(|j| j.items_delisted).sum();
    assert_eq!(delisted_observations, delisted_by_jobs, "{scenario}");
    let observed: BTreeMap<(ItemVersion, &str), &crate::model::Observation> = model
        .observations()
        .map(|o| {
            let version = ItemVersion {
                object: o.version.clone(),
                row_number: o.row_number,
            };
            ((version, o.sku.as_str()), o)
        })
        .collect();
    for (sku, stored) in model.items() {
        assert_eq!(
            stored.listed,
            stored.delisted_by.is_none(),
            "{scenario}: {sku}"
        );
        assert!(stored.listed || stored.relisted_by.is_none());
        assert_eq!(
            stored.version.row_number == 0,
            !stored.listed,
            "{scenario}: {sku}"
        );
        assert!(stored.first_job <= stored.last_job);
        let observation = observed
            .get(&(stored.version.clone(), sku.as_str()))
            .unwrap_or_else(|| panic!("{scenario}: {sku}'s version is not observed"));
        assert_eq!(observation.price, stored.item.price);
        assert_eq!(observation.availability == DELISTED, !stored.listed);
    }
}

#[test]
fn same_seed_same_scenario() {
    for seed in [0, 1, 42, u64::MAX] {
        let scenario = Scenario::generate(seed);
        assert_eq!(scenario, Scenario::generate(seed));
        assert_eq!(scenario.to_string(), Scenario::generate(seed).to_string());
    }
    assert_ne!(Scenario::generate(1).objects, Scenario::generate(2).objects);
}

#[test]
fn summary_names_the_seed_objects_and_steps_on_one_line() {
    let summary = Scenario::generate(7).to_string();
    assert!(
        summary.starts_with("seed 0x0000000000000007: objects [o0 snapshot-"),
        "{summary}"
    );
    assert!(summary.contains("steps ["));
    assert!(!summary.contains('\n'));
}

#[test]
fn rendered_csv_reads_back_as_the_records() {
    for seed in 0..SEEDS {
        let scenario = Scenario::generate(seed);
        assert!((2..=5).contains(&scenario.objects.len()));
        assert!((3..=8).contains(&scenario.steps.len()));
        for object in &scenario.objects {
            if !object.bad_header {
                assert!((5..=60).contains(&object.records.len()), "{scenario}");
            }
            check_object(object);
        }
    }
}

#[test]
fn model_accounting_holds_for_every_scenario() {
    for seed in 0..SEEDS {
        let scenario = Scenario::generate(seed);
        let (model, _) = run(&scenario);
        check_accounting(&scenario, &model);
    }
}

#[test]
fn steps_name_jobs_that_exist() {
    for seed in 0..SEEDS {
        let scenario = Scenario::generate(seed);
        let mut model = scenario.model(&scenario.placeholder_versions());
        for step in &scenario.steps {
            if let Action::Retry(job) | Action::Repair(job) = step.action {
                assert!(job.0 < model.jobs().len(), "{scenario}");
            }
            model.apply(step.op(Vec::new));
        }
    }
}

/// Every feature the generator promises turns up somewhere in the seeds the tests run.
#[test]
fn scenarios_cover_the_contract() {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for seed in 0..SEEDS {
        let scenario = Scenario::generate(seed);
        let (model, results) = run(&scenario);
        for object in &scenario.objects {
            let csv = &object.csv;
            let has = |needle: &[u8]| csv.windows(needle.len()).any(|w| w == needle);
            let features: [(&str, bool); 9] = [
                ("bom", csv.starts_with(b"\xEF\xBB\xBF")),
                ("crlf", has(b"\r\n")),
                ("blank line", has(b"\n\n") || has(b"\n\r\n")),
                ("doubled quote", has(b"\"\"")),
                ("quoted newline", has(b"\nLimited") || has(b"\r\nLine two")),
                ("price symbol and thousands", has(b"$") && has(b",000")),
                ("no final line end", !csv.ends_with(b"\n")),
                ("bad header", object.bad_header),
                ("nul", has(b"\0")),
            ];
            seen.extend(features.iter().filter(|(_, on)| *on).map(|(name, _)| *name));
            let mut skus = BTreeMap::new();
            for record in &object.records {
                if let Some(sku) = record.mentioned_sku() {
                    *skus.entry(sku).or_insert(0) += 1;
                }
                match record {
                    Record::Valid(item) => {
                        if item.weight_grams.is_some_and(|g| g.scale() == 6) {
                            seen.insert("rounded weight");
                        }
                    }
                    Record::Invalid(invalid) => {
                        for failure in &invalid.failures {
                            seen.insert(match failure.code.as_str() {
                                "field_count" => "field_count",
                                "encoding_invalid" => "encoding_invalid",
                                "url_private_host" => "private host",
                                _ => "other failure",
                            });
                        }
                        if invalid.mentioned_sku.is_none() {
                            seen.insert("mentions nothing");
                        }
                    }
                }
            }
            if skus.values().any(|&n| n > 1) {
                seen.insert("sku mentioned twice");
            }
        }
        for step in &scenario.steps {
            seen.insert(match step.action {
                Action::Ingest { mode, .. } if mode.dry_run => "dry run",
                Action::Ingest { mode, .. } if mode.partial => "partial",
                Action::Ingest { .. } => "ingest",
                Action::CancelAfterChunks { .. } => "cancel",
                Action::Retry(_) => "retry",
                Action::Repair(_) => "repair",
            });
        }
        for result in results {
            seen.insert(match result {
                OpResult::Started(_) => "started",
                OpResult::AlreadyExists(_) => "already exists",
                OpResult::Refused { .. } => "refused",
            });
        }
        let jobs: &[JobSummary] = model.jobs();
        for job in jobs {
            if job.delist_refused.is_some() {
                seen.insert("guard refused");
            }
            if job.mode.allow_mass_delist && job.items_delisted.is_some_and(|n| n > 10) {
                seen.insert("mass delist allowed");
            }
            if job.items_relisted.is_some_and(|n| n > 0) {
                seen.insert("relisted");
            }
            if job.items_delisted.is_some_and(|n| n > 0) {
                seen.insert("delisted");
            }
        }
        if scenario.upload_order.windows(2).any(|w| w[0] > w[1]) {
            seen.insert("late upload");
        }
    }
    let expected = [
        "bom",
        "crlf",
        "blank line",
        "doubled quote",
        "quoted newline",
        "price symbol and thousands",
        "no final line end",
        "bad header",
        "nul",
        "rounded weight",
        "field_count",
        "encoding_invalid",
        "private host",
        "other failure",
        "mentions nothing",
        "sku mentioned twice",
        "dry run",
        "partial",
        "ingest",
        "cancel",
        "retry",
        "repair",
        "started",
        "already exists",
        "refused",
        "guard refused",
        "mass delist allowed",
        "relisted",
        "delisted",
        "late upload",
    ];
    let missing: Vec<&str> = expected.into_iter().filter(|f| !seen.contains(f)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}

#[test]
fn splitter_reads_quotes_blank_lines_and_a_bom() {
    let (header_end, records) =
        split(b"\xEF\xBB\xBFsku,name\r\n\r\n\"a,\"\"b\"\"\",\"x\r\ny\"\n\nc,d");
    assert_eq!(header_end, 13);
    let fields: Vec<&Vec<Vec<u8>>> = records.iter().map(|r| &r.fields).collect();
    assert_eq!(fields[0], &vec![b"sku".to_vec(), b"name".to_vec()]);
    assert_eq!(fields[1], &vec![b"a,\"b\"".to_vec(), b"x\r\ny".to_vec()]);
    assert_eq!(fields[2], &vec![b"c".to_vec(), b"d".to_vec()]);
}

#[test]
fn test_planner_cuts_at_record_ends_once_full() {
    let csv = b"h\na\nbb\nccc\nd\n";
    assert_eq!(chunk_rows(csv, 1), [1..=1, 2..=2, 3..=3, 4..=4]);
    assert_eq!(chunk_rows(csv, 5), [1..=2, 3..=4]);
    assert_eq!(chunk_rows(csv, 100), [1..=4]);
}
