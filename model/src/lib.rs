//! The oracle of the catalog ETL's model-based test.
//!
//! [`model`] says what Postgres and ClickHouse must hold after a sequence of ingest operations on
//! one source's object versions; [`scenario`] generates, from a seed, the objects (as structured
//! records and as the CSV bytes the pipeline reads) and the operations to run.

pub mod model;
mod rng;
pub mod scenario;
