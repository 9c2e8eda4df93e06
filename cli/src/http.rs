//! The client side of the collector's HTTP API for commands that ask a
//! running collector (`explain --collector-http`, `blame`, `whatif`).

use anyhow::Context;
use serde_json::Value;

/// Where the client commands find the collector's API when
/// `--collector-http` is not given: the address `flowgate demo` serves it on.
pub(crate) const DEFAULT_COLLECTOR_HTTP: &str = "http://127.0.0.1:8080";

/// `GET {base}{path}?{query}`: the JSON answer, or an error carrying the
/// collector's message.
pub(crate) fn get(base: &str, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = format!("{}{path}?{}", base.trim_end_matches('/'), pairs.join("&"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(flowgate_client::http_json(http::Method::GET, &url, None))?;
    Ok(answer)
}

/// `POST {base}{path}` with a JSON body: the JSON answer, or an error
/// carrying the collector's message.
pub(crate) fn post(base: &str, path: &str, body: Value) -> anyhow::Result<Value> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(flowgate_client::http_json(
        http::Method::POST,
        &url,
        Some(body),
    ))?;
    Ok(answer)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters and `/`
/// stay as they are, so `prod/web` reads well in logs).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(super::encode("prod/web"), "prod/web");
        assert_eq!(
            super::encode("2026-12-03T10:00:00+01:00"),
            "2026-12-03T10:00:00%2B01:00"
        );
        assert_eq!(super::encode("a b&c"), "a%20b%26c");
    }
}
