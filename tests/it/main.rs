//! Integration tests, one binary: the real Kafka and Elasticsearch start once per run
//! (`tests/support`) and every test uses its own topics, indices and connector names.

// The all-types Avro schema of tests/it/avro.rs is one deep json! literal.
#![recursion_limit = "512"]

#[path = "../support/mod.rs"]
mod support;

mod avro;
mod bad_input;
mod compose;
mod crash;
mod dead_letter;
mod deletes;
mod distributed;
mod docs;
mod druid;
mod druid_rows;
mod faults;
mod fixtures;
mod live;
mod mutations;
mod operations;
mod pipeline;
mod rebuild;
mod reconcile;
mod refusals;
mod rest;
mod security;
