//! The HTTP API's authentication: bearer tokens from a file (reloaded when it
//! changes), and Kubernetes TokenReview + SubjectAccessReview answered by a
//! real HTTP server on 127.0.0.1:0 from recorded review responses
//! (`fixtures/reviews/*.yaml`), which fails on any call it does not expect.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowgate_collector::auth::AuthMode;
use flowgate_collector::{ClusterSource, Collector, Config};
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn fixture(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path)
}

async fn start(data: &Path, auth: AuthMode, kube: Option<kube::Config>) -> Result<Collector> {
    let mut config = Config::new(
        ClusterSource::Files(vec![fixture("cluster")]),
        data.to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse()?;
    config.http_listen = "127.0.0.1:0".parse()?;
    config.api_auth = auth;
    config.kube = kube;
    Ok(flowgate_collector::run(config).await?)
}

struct Answer {
    status: u16,
    www_authenticate: bool,
    body: String,
}

/// GET over plain HTTP/1.0 with an optional bearer token.
async fn get(collector: &Collector, path: &str, token: Option<&str>) -> Result<Answer> {
    let mut tcp = tokio::net::TcpStream::connect(collector.http_addr()).await?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    tcp.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .await?;
    let mut text = String::new();
    tcp.read_to_string(&mut text).await?;
    let (head, body) = text.split_once("\r\n\r\n").context("no header end")?;
    Ok(Answer {
        status: head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("no status")?,
        www_authenticate: head
            .to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        body: body.to_owned(),
    })
}

fn error_of(answer: &Answer) -> String {
    serde_json::from_str::<Value>(&answer.body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| answer.body.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_file_guards_the_api_and_is_reloaded() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "# readers\nfirst-token\n")?;
    let data = tempfile::tempdir()?;
    let collector = start(data.path(), AuthMode::TokenFile(tokens.clone()), None).await?;

    let none = get(&collector, "/api/v1/policies", None).await?;
    assert_eq!(none.status, 401);
    assert!(none.www_authenticate);
    assert!(
        error_of(&none).contains("Authorization: Bearer TOKEN")
            && error_of(&none).contains("--api-token-file"),
        "the message says what to send: {}",
        none.body
    );
    let wrong = get(&collector, "/api/v1/policies", Some("guess")).await?;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    let good = get(&collector, "/api/v1/policies", Some("first-token")).await?;
    assert_eq!(good.status, 200, "{}", good.body);

    // Open: liveness, readiness, the dashboard page (it asks for the token).
    assert_eq!(get(&collector, "/healthz", None).await?.status, 200);
    assert_ne!(get(&collector, "/readyz", None).await?.status, 401);
    assert_eq!(get(&collector, "/", None).await?.status, 200);
    // Metrics are guarded unless --public-metrics.
    assert_eq!(get(&collector, "/metrics", None).await?.status, 401);
    assert_eq!(
        get(&collector, "/metrics", Some("first-token"))
            .await?
            .status,
        200
    );

    // The file changes: the new token works, the removed one no longer does.
    std::fs::write(&tokens, "second-token-longer\n")?;
    assert_eq!(
        get(&collector, "/api/v1/policies", Some("second-token-longer"))
            .await?
            .status,
        200
    );
    assert_eq!(
        get(&collector, "/api/v1/policies", Some("first-token"))
            .await?
            .status,
        401
    );
    collector.shutdown().await?;
    Ok(())
}

#[derive(Debug, Deserialize)]
struct Recorded {
    tokenreviews: BTreeMap<String, Value>,
    subjectaccessreviews: BTreeMap<String, Value>,
}

#[derive(Default)]
struct Calls {
    made: Vec<String>,
    unexpected: Vec<String>,
}

type Shared = Arc<(Recorded, Mutex<Calls>)>;

async fn review(State(shared): State<Shared>, uri: Uri, body: axum::body::Bytes) -> Response {
    let (recorded, calls) = &*shared;
    let mut calls = calls.lock().unwrap_or_else(|p| p.into_inner());
    let asked: Value = serde_json::from_slice(&body).unwrap_or_default();
    let answer = match uri.path() {
        "/apis/authentication.k8s.io/v1/tokenreviews" => {
            let token = asked["spec"]["token"].as_str().unwrap_or_default();
            calls.made.push(format!("tokenreview {token}"));
            recorded.tokenreviews.get(token)
        }
        "/apis/authorization.k8s.io/v1/subjectaccessreviews" => {
            let attrs = &asked["spec"]["resourceAttributes"];
            let user = asked["spec"]["user"].as_str().unwrap_or_default();
            calls.made.push(format!("subjectaccessreview {user}"));
            if attrs["group"] != "flowgate.io"
                || attrs["resource"] != "flows"
                || attrs["verb"] != "get"
            {
                calls.unexpected.push(format!("access review for {attrs}"));
                None
            } else {
                recorded.subjectaccessreviews.get(user)
            }
        }
        _ => None,
    };
    match answer {
        Some(a) => (StatusCode::CREATED, axum::Json(a.clone())).into_response(),
        None => {
            calls
                .unexpected
                .push(format!("unexpected call {uri} {asked}"));
            (StatusCode::INTERNAL_SERVER_ERROR, "unexpected").into_response()
        }
    }
}

async fn review_server(fixture_name: &str) -> Result<(String, Shared)> {
    let path = fixture("reviews").join(fixture_name);
    let recorded: Recorded = serde_norway::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| path.display().to_string())?;
    let shared: Shared = Arc::new((recorded, Mutex::default()));
    let app = axum::Router::new()
        .fallback(review)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, shared))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_rbac_decides_who_reads_flows() -> Result<()> {
    let (url, shared) = review_server("rbac.yaml").await?;
    let data = tempfile::tempdir()?;
    let kube = kube::Config::new(url.parse()?);
    let collector = start(data.path(), AuthMode::Kubernetes, Some(kube)).await?;

    let none = get(&collector, "/api/v1/policies", None).await?;
    assert_eq!(none.status, 401);
    assert!(
        error_of(&none).contains("Kubernetes token"),
        "{}",
        none.body
    );

    let alice = get(&collector, "/api/v1/policies", Some("alice-token")).await?;
    assert_eq!(alice.status, 200, "{}", alice.body);
    // Answers are reused: a second request costs no review.
    assert_eq!(
        get(&collector, "/api/v1/policies", Some("alice-token"))
            .await?
            .status,
        200
    );

    let bob = get(&collector, "/api/v1/policies", Some("bob-token")).await?;
    assert_eq!(bob.status, 403, "{}", bob.body);
    assert!(
        error_of(&bob).contains("bob@example.com") && error_of(&bob).contains("flowgate.io"),
        "the refusal names the user and the RBAC rule needed: {}",
        bob.body
    );

    let expired = get(&collector, "/api/v1/policies", Some("expired-token")).await?;
    assert_eq!(expired.status, 401);
    assert!(
        error_of(&expired).contains("token has expired"),
        "{}",
        expired.body
    );

    let calls = std::mem::take(&mut *shared.1.lock().unwrap_or_else(|p| p.into_inner()));
    assert!(calls.unexpected.is_empty(), "{:?}", calls.unexpected);
    assert_eq!(
        calls.made,
        vec![
            "tokenreview alice-token",
            "subjectaccessreview system:serviceaccount:observability:alice",
            "tokenreview bob-token",
            "subjectaccessreview bob@example.com",
            "tokenreview expired-token",
        ]
    );
    collector.shutdown().await?;
    Ok(())
}
