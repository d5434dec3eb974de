//! Integration tests, one binary: the real Kafka and Elasticsearch start once per run
//! (`tests/support`) and every test uses its own topics, indices and connector names.

#[path = "../support/mod.rs"]
mod support;

mod bad_input;
mod compose;
mod crash;
mod docs;
mod faults;
mod fixtures;
mod live;
mod pipeline;
