//! Integration tests: one binary, run against the local stack started by `make up`.

mod config;
mod faults;
mod harness;
mod histories;
mod ingest;
mod observability;
mod operations;
mod security;
mod snapshots;
mod tls;
mod versions;
