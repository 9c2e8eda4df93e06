//! Talking to a running collector: SQL over HTTP (for `flowgate query`, the
//! demo and tests) and sending batches over gRPC exactly as a probe does
//! (for `flowgate replay`).

use flowgate_proto::v1::flow_ingest_client::FlowIngestClient;
use flowgate_proto::v1::{AckStatus, BatchAck, FlowBatch};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// Responses larger than this are refused (a query result is row-limited
/// by the server; this guards against talking to the wrong server).
const MAX_RESPONSE_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bad server URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("cannot reach {url}: {message}")]
    Http { url: String, message: String },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url} answered something that is not JSON: {message}")]
    Json { url: String, message: String },
    #[error("cannot connect to the collector at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("gRPC call failed: {0}")]
    Grpc(#[from] tonic::Status),
    #[error("batch {sequence} was not stored: {status:?} {reason}")]
    NotStored {
        sequence: u64,
        status: AckStatus,
        reason: String,
    },
    #[error("cannot read the {what} {path}")]
    TlsFile {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// TLS for gRPC to a collector whose certificate `ca` signed, presenting
/// `identity` (certificate, key) when the collector asks for a client
/// certificate (`--client-ca`). All PEM.
pub fn grpc_tls(
    ca: &std::path::Path,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
    let read = |what, path: &std::path::Path| {
        std::fs::read(path).map_err(|source| ClientError::TlsFile {
            what,
            path: path.to_path_buf(),
            source,
        })
    };
    let mut tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(read("CA", ca)?));
    if let Some((cert, key)) = identity {
        tls = tls.identity(tonic::transport::Identity::from_pem(
            read("client certificate", cert)?,
            read("client key", key)?,
        ));
    }
    Ok(tls)
}

/// Sends `request` and decodes a JSON answer; an error status becomes
/// [`ClientError::Status`] carrying the server's `error` message.
pub async fn http_json(
    method: http::Method,
    url: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    http_json_as(method, url, body, None).await
}

/// [`http_json`] with `Authorization: Bearer token` when a token is given.
pub async fn http_json_as(
    method: http::Method,
    url: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Result<Value, ClientError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e: http::uri::InvalidUri| ClientError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let mut request = http::Request::builder();
    if let Some(token) = token {
        request = request.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .method(method)
        .uri(uri)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(bytes::Bytes::from(payload)))
        .map_err(|e| ClientError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    let http_err = |message: String| ClientError::Http {
        url: url.to_owned(),
        message,
    };
    let response = client
        .request(request)
        .await
        .map_err(|e| http_err(format!("{e:#}")))?;
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| http_err(e.to_string()))?
        .to_bytes();
    let value: Result<Value, _> = serde_json::from_slice(&body);
    if !status.is_success() {
        let message = match &value {
            Ok(v) => v
                .get("error")
                .and_then(Value::as_str)
                .map_or_else(|| v.to_string(), str::to_owned),
            Err(_) => String::from_utf8_lossy(&body).into_owned(),
        };
        return Err(ClientError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            message,
        });
    }
    value.map_err(|e| ClientError::Json {
        url: url.to_owned(),
        message: e.to_string(),
    })
}

/// Runs `sql` on the collector at `server` (e.g. `http://127.0.0.1:8080`).
pub async fn query(server: &str, sql: &str) -> Result<Value, ClientError> {
    query_as(server, sql, None).await
}

/// [`query`] with a bearer token (a collector started with API auth).
pub async fn query_as(server: &str, sql: &str, token: Option<&str>) -> Result<Value, ClientError> {
    let url = format!("{}/api/v1/query", server.trim_end_matches('/'));
    http_json_as(
        http::Method::POST,
        &url,
        Some(serde_json::json!({ "sql": sql })),
        token,
    )
    .await
}

/// Streams `batches` to the collector at `url` (e.g. `http://127.0.0.1:4245`)
/// over the bidirectional `Stream` call, as a probe does, and returns the
/// acks. Any ack other than STORED or DUPLICATE is an error.
pub async fn send_batches(
    url: &str,
    batches: Vec<FlowBatch>,
) -> Result<Vec<BatchAck>, ClientError> {
    send_batches_with(url, None, batches).await
}

/// [`send_batches`] over TLS when `tls` is given (an `https://` URL).
pub async fn send_batches_with(
    url: &str,
    tls: Option<tonic::transport::ClientTlsConfig>,
    batches: Vec<FlowBatch>,
) -> Result<Vec<BatchAck>, ClientError> {
    let connect_err = |e: tonic::transport::Error| {
        // The cause chain says why (refused, unknown certificate…).
        let mut message = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        ClientError::Connect {
            url: url.to_owned(),
            message,
        }
    };
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(url.to_owned()).map_err(|e| ClientError::Url {
            url: url.to_owned(),
            message: e.to_string(),
        })?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls).map_err(connect_err)?;
    }
    let channel = endpoint.connect().await.map_err(connect_err)?;
    let mut client =
        FlowIngestClient::new(channel).max_encoding_message_size(flowgate_proto::MAX_MESSAGE_BYTES);
    let count = batches.len();
    let response = client.stream(tokio_stream::iter(batches)).await?;
    let mut acks_in = response.into_inner();
    let mut acks = Vec::with_capacity(count);
    while let Some(ack) = acks_in.message().await? {
        let status = AckStatus::try_from(ack.status).unwrap_or(AckStatus::Unspecified);
        if !matches!(status, AckStatus::Stored | AckStatus::Duplicate) {
            return Err(ClientError::NotStored {
                sequence: ack.sequence,
                status,
                reason: ack.reason,
            });
        }
        acks.push(ack);
        if acks.len() == count {
            break;
        }
    }
    Ok(acks)
}
