//! Integration tests: one binary, run against the local stack started by `make up`.

mod config;
mod harness;
mod ingest;
mod operations;
mod security;
