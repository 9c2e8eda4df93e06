//! Fixture rows shared by the query tests and the benchmark.
#![allow(dead_code, reason = "each user takes what it needs")]

use flowgate_query::FlowRow;

/// Six flows over three hours (see fixtures/flows.json).
pub fn fixture_rows() -> Vec<FlowRow> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/flows.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

pub const HOUR_NS: i64 = 3_600_000_000_000;
