//! The client side of the collector's HTTP API for commands that ask a
//! running collector (`explain --collector-http`, `blame`, `whatif`).

use anyhow::Context;
use serde_json::Value;

/// Where the client commands find the collector's API when
/// `--collector-http` is not given: the address `flowgate demo` serves it on.
pub(crate) const DEFAULT_COLLECTOR_HTTP: &str = "http://127.0.0.1:8080";

/// The bearer token of a command that asks a collector started with
/// `--api-token-file` or `--api-auth kubernetes`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Token {
    /// Bearer token for a collector started with --api-token-file or
    /// --api-auth kubernetes.
    #[arg(long, env = "FLOWGATE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file (its first line).
    #[arg(long, env = "FLOWGATE_API_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
}

impl Token {
    /// The token given, read from its file if need be; `None` without one.
    pub(crate) fn resolve(&self) -> anyhow::Result<Option<String>> {
        Ok(match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        })
    }
}

/// `GET {base}{path}?{query}` (with the bearer token, if any): the JSON
/// answer, or an error carrying the collector's message.
pub(crate) fn get(
    base: &str,
    path: &str,
    query: &[(&str, String)],
    token: &Token,
) -> anyhow::Result<Value> {
    let token = token.resolve()?;
    let pairs: Vec<String> = query
        .iter()
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    let url = format!("{}{path}?{}", base.trim_end_matches('/'), pairs.join("&"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(flowgate_client::http_json_as(
        http::Method::GET,
        &url,
        None,
        token.as_deref(),
    ))?;
    Ok(answer)
}

/// `POST {base}{path}` with a JSON body (and the bearer token, if any): the JSON answer, or an error
/// carrying the collector's message.
pub(crate) fn post(base: &str, path: &str, body: Value, token: &Token) -> anyhow::Result<Value> {
    let token = token.resolve()?;
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = runtime.block_on(flowgate_client::http_json_as(
        http::Method::POST,
        &url,
        Some(body),
        token.as_deref(),
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
