//! Integration tests: one binary, run against the local stack started by `make up`.

mod config;
mod faults;
mod gate;
mod harness;
mod histories;
mod ingest;
mod model_based;
mod observability;
mod operations;
mod ordering;
mod proxy;
mod recovery;
mod security;
mod snapshots;
mod tls;
mod versions;
