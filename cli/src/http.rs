//! The client side of the collector's HTTP API for commands that ask a
//! running collector (`explain`, `blame`, `whatif`, `advise`, `query`).

use anyhow::Context;
use serde_json::Value;

/// Where the client commands find the collector's API when
/// `--collector-http` is not given: the address `flowgate demo` serves it on.
pub(crate) const DEFAULT_COLLECTOR_HTTP: &str = "http://127.0.0.1:8080";

/// How a client command reaches the collector's HTTP API: its address and,
/// for a collector started with `--api-token-file` or `--api-auth
/// kubernetes`, the bearer token. Every client command flattens this one
/// struct, so the flags, their env fallbacks and their defaults agree.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct CollectorApi {
    /// The collector's HTTP API (`--server` is the older name).
    #[arg(
        long,
        alias = "server",
        value_name = "URL",
        env = "FLOWGATE_COLLECTOR_HTTP",
        default_value = DEFAULT_COLLECTOR_HTTP
    )]
    pub(crate) collector_http: String,
    /// Bearer token for a collector started with --api-token-file or
    /// --api-auth kubernetes.
    #[arg(long, env = "FLOWGATE_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Read the bearer token from this file: its first line that is not
    /// blank or a `#` comment (so the collector's --api-token-file works).
    #[arg(long, env = "FLOWGATE_API_TOKEN_FILE", conflicts_with = "token")]
    token_file: Option<std::path::PathBuf>,
}

impl CollectorApi {
    /// The token given, read from its file if need be; `None` without one.
    pub(crate) fn token(&self) -> anyhow::Result<Option<String>> {
        Ok(match (&self.token, &self.token_file) {
            (Some(t), _) => Some(t.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?
                    .lines()
                    .map(str::trim)
                    // The collector's --api-token-file allows comments.
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                    .with_context(|| format!("the token file {} holds no token", path.display()))?
                    .to_owned(),
            ),
            (None, None) => None,
        })
    }

    /// `GET {collector}{path}?{query}` with the token, if any: the JSON
    /// answer, or an error carrying the collector's message.
    pub(crate) fn get(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        let pairs: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        let url = format!("{}?{}", self.url(path), pairs.join("&"));
        self.send(http::Method::GET, &url, None)
    }

    /// `POST {collector}{path}` with a JSON body and the token, if any: the
    /// JSON answer, or an error carrying the collector's message.
    pub(crate) fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(http::Method::POST, &self.url(path), Some(body))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.collector_http.trim_end_matches('/'))
    }

    fn send(&self, method: http::Method, url: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let token = self.token()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(runtime.block_on(flowgate_client::http_json_as(
            method,
            url,
            body,
            token.as_deref(),
        ))?)
    }
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
