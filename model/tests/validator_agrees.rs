//! The scenarios' records are the model's input, and the pipeline reads the rendered CSV: the
//! two must say the same thing, or the model-based test would judge the pipeline against the
//! wrong records. The production planner, parser and validator read every generated object
//! here and must find exactly the records the scenario says it wrote.

use activities::{
    chunk::{parse_chunk, parse_header},
    contract::Availability as Parsed,
    planner::{DEFAULT_MAX_RECORD_BYTES, plan_bytes},
};
use catalog_model::{
    model::{Availability, Item, Record},
    scenario::Scenario,
};

fn availability(parsed: Parsed) -> Availability {
    match parsed {
        Parsed::InStock => Availability::InStock,
        Parsed::OutOfStock => Availability::OutOfStock,
        Parsed::Preorder => Availability::Preorder,
        Parsed::Discontinued => Availability::Discontinued,
        Parsed::Unknown => Availability::Unknown,
    }
}

/// What the pipeline read, in the model's terms (failures in the validator's order).
fn read(csv: &[u8], chunk_bytes: u64) -> Option<Vec<Record>> {
    let plan = plan_bytes(csv, chunk_bytes, DEFAULT_MAX_RECORD_BYTES).expect("plannable");
    let header = parse_header(&plan.header_bytes).ok()?;
    let mut records = Vec::new();
    for chunk in &plan.chunks {
        let bytes = &csv[chunk.start as usize..chunk.end as usize];
        let parsed = parse_chunk(&header, bytes, chunk.first_row);
        let mut rows: Vec<(u64, Record)> = parsed
            .valid
            .into_iter()
            .map(|row| {
                let item = row.item;
                let record = Record::Valid(Item {
                    sku: item.sku,
                    name: item.name,
                    brand: item.brand,
                    category: item.category,
                    description: item.description,
                    price: item.price,
                    currency: item.currency,
                    weight_grams: item.weight_grams,
                    availability: item.availability.map(availability),
                    product_url: item.product_url,
                    image_urls: item.image_urls,
                    attributes: item.attributes,
                });
                (row.row_number, record)
            })
            .chain(parsed.invalid.into_iter().map(|row| {
                let failures = row
                    .errors
                    .iter()
                    .map(|e| catalog_model::model::Failure::new(&e.field, &e.code))
                    .collect();
                let record = Record::Invalid(catalog_model::model::InvalidRecord {
                    mentioned_sku: row.sku,
                    failures,
                });
                (row.row_number, record)
            }))
            .collect();
        rows.sort_by_key(|(row, _)| *row);
        records.extend(rows.into_iter().map(|(_, record)| record));
    }
    Some(records)
}

#[test]
fn the_pipeline_reads_every_generated_object_as_the_scenario_wrote_it() {
    for seed in 0..400 {
        let scenario = Scenario::generate(seed);
        for (index, object) in scenario.objects.iter().enumerate() {
            let chunk_bytes = scenario
                .steps
                .first()
                .map_or(64, |step| step.execution.chunk_bytes);
            match read(&object.csv, chunk_bytes) {
                None => assert!(
                    object.bad_header,
                    "seed {seed} object {index}: header refused"
                ),
                Some(records) => {
                    assert!(
                        !object.bad_header,
                        "seed {seed} object {index}: header accepted"
                    );
                    assert_eq!(
                        records.len(),
                        object.records.len(),
                        "seed {seed} object {index}"
                    );
                    for (row, (read, written)) in records.iter().zip(&object.records).enumerate() {
                        assert_eq!(
                            read,
                            written,
                            "seed {seed} object {index} row {}:\n{}",
                            row + 1,
                            String::from_utf8_lossy(&object.csv)
                        );
                    }
                }
            }
        }
    }
}
