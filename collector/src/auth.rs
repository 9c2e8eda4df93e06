//! Who may use the HTTP API: nobody checked (the default, loopback demos),
//! bearer tokens from a file (`--api-token-file`, reloaded when it changes),
//! or the Kubernetes API (`--api-auth kubernetes`): the caller's bearer token
//! goes through a TokenReview, then a SubjectAccessReview asks whether that
//! user may `get` `flows` in the `flowgate.io` API group, so RBAC decides.
//!
//! `/healthz`, `/readyz` and the dashboard's static files are always open
//! (the page must load to ask for a token); `/api/*` needs credentials, and
//! `/metrics` too unless `--public-metrics`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use serde_json::json;

/// The RBAC coordinates a caller needs (`--api-auth kubernetes`).
pub const RBAC_GROUP: &str = "flowgate.io";
pub const RBAC_RESOURCE: &str = "flows";
pub const RBAC_VERB: &str = "get";
/// Token files larger than this are refused (a token file is a few lines).
const MAX_TOKEN_FILE_BYTES: u64 = 1024 * 1024;
/// Kubernetes review answers are reused this long, so a dashboard polling
/// every two seconds does not cost two API calls per request.
const REVIEW_TTL: Duration = Duration::from_secs(30);
/// At most this many tokens' reviews are remembered.
const REVIEW_CACHE: usize = 1024;

/// How API callers are authenticated.
#[derive(Debug, Clone, Default)]
pub enum AuthMode {
    /// Anyone who reaches the port (logged as a warning unless on loopback).
    #[default]
    Open,
    /// `Authorization: Bearer T` where T is a line of this file.
    TokenFile(PathBuf),
    /// TokenReview + SubjectAccessReview against the cluster.
    Kubernetes,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read the API token file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token file {path} has {size} bytes, the limit is {MAX_TOKEN_FILE_BYTES}")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("the API token file {path} holds no token (one per line)")]
    NoToken { path: PathBuf },
}

/// A refusal, rendered like every API error: `{"error": "..."}`.
#[derive(Debug)]
enum Refusal {
    Unauthorized(String),
    Forbidden(String),
    Unavailable(String),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Refusal::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            Refusal::Forbidden(m) => (StatusCode::FORBIDDEN, m),
            Refusal::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        };
        let mut response = (status, axum::Json(json!({ "error": message }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowgate\""),
            );
        }
        response
    }
}

/// The tokens of a token file and the file state they were read from.
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    tokens: Vec<String>,
}

/// Bearer tokens from a file, re-read whenever its modification time or
/// size changes (checked on each request: one `stat`).
pub struct TokenFile {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

impl TokenFile {
    /// Reads the file now, so a missing or empty file stops start-up.
    pub fn open(path: PathBuf) -> Result<Self, AuthError> {
        let file = TokenFile {
            path,
            loaded: Mutex::new(Loaded {
                stamp: None,
                tokens: Vec::new(),
            }),
        };
        file.refresh()?;
        Ok(file)
    }

    fn refresh(&self) -> Result<(), AuthError> {
        let read_err = |source| AuthError::Read {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(read_err)?;
        let stamp = (meta.modified().map_err(read_err)?, meta.len());
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.stamp == Some(stamp) {
            return Ok(());
        }
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(AuthError::TooLarge {
                path: self.path.clone(),
                size: meta.len(),
            });
        }
        let text = std::fs::read_to_string(&self.path).map_err(read_err)?;
        let tokens: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        if tokens.is_empty() {
            return Err(AuthError::NoToken {
                path: self.path.clone(),
            });
        }
        tracing::info!(path = %self.path.display(), tokens = tokens.len(), "API tokens loaded");
        *loaded = Loaded {
            stamp: Some(stamp),
            tokens,
        };
        Ok(())
    }

    /// Whether `token` is one of the file's. A file that became unreadable
    /// keeps its last good tokens (logged), so a botched edit does not lock
    /// everyone out.
    fn accepts(&self, token: &str) -> bool {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "keeping the previous API tokens");
        }
        let loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        // Every token compared in full, so timing does not leak a prefix.
        loaded.tokens.iter().fold(false, |found, t| {
            found | constant_time_eq(t.as_bytes(), token.as_bytes())
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What the cluster said about a token.
#[derive(Debug, Clone)]
enum Review {
    Allowed,
    Unauthenticated(String),
    Forbidden(String),
}

/// TokenReview + SubjectAccessReview through the Kubernetes API.
pub struct KubernetesReviewer {
    client: kube::Client,
    cache: Mutex<HashMap<String, (Instant, Review)>>,
}

impl KubernetesReviewer {
    pub fn new(client: kube::Client) -> Self {
        KubernetesReviewer {
            client,
            cache: Mutex::default(),
        }
    }

    async fn review(&self, token: &str) -> Result<Review, String> {
        {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, review)) = cache.get(token)
                && at.elapsed() < REVIEW_TTL
            {
                return Ok(review.clone());
            }
        }
        let review = self.ask(token).await?;
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REVIEW_CACHE {
            cache.clear();
        }
        cache.insert(token.to_owned(), (Instant::now(), review.clone()));
        Ok(review)
    }

    async fn ask(&self, token: &str) -> Result<Review, String> {
        let tokens: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let asked = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = tokens
            .create(&PostParams::default(), &asked)
            .await
            .map_err(|e| format!("the Kubernetes TokenReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status
                .error
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| "the token is not valid".into());
            return Ok(Review::Unauthenticated(format!(
                "Kubernetes did not authenticate this bearer token: {why}"
            )));
        }
        let user = status.user.unwrap_or_default();
        let name = user.username.clone().unwrap_or_default();
        let access: kube::Api<SubjectAccessReview> = kube::Api::all(self.client.clone());
        let asked = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                resource_attributes: Some(ResourceAttributes {
                    group: Some(RBAC_GROUP.into()),
                    resource: Some(RBAC_RESOURCE.into()),
                    verb: Some(RBAC_VERB.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let answer = access
            .create(&PostParams::default(), &asked)
            .await
            .map_err(|e| format!("the Kubernetes SubjectAccessReview failed: {e}"))?;
        let status = answer.status.unwrap_or_default();
        if status.allowed {
            Ok(Review::Allowed)
        } else {
            let reason = status.reason.filter(|r| !r.is_empty()).unwrap_or_default();
            Ok(Review::Forbidden(format!(
                "{name:?} may not read flows: RBAC must allow verb {RBAC_VERB:?} on resource {RBAC_RESOURCE:?} in API group {RBAC_GROUP:?}{}{reason}",
                if reason.is_empty() { "" } else { ": " }
            )))
        }
    }
}

/// The authenticator the HTTP middleware consults.
pub struct Auth {
    check: Check,
    /// Whether `/metrics` is served without credentials.
    public_metrics: bool,
}

enum Check {
    Open,
    Tokens(TokenFile),
    Kubernetes(KubernetesReviewer),
}

impl Auth {
    pub fn open() -> Self {
        Auth {
            check: Check::Open,
            public_metrics: true,
        }
    }

    pub fn tokens(file: TokenFile, public_metrics: bool) -> Self {
        Auth {
            check: Check::Tokens(file),
            public_metrics,
        }
    }

    pub fn kubernetes(reviewer: KubernetesReviewer, public_metrics: bool) -> Self {
        Auth {
            check: Check::Kubernetes(reviewer),
            public_metrics,
        }
    }

    fn guarded(&self, path: &str) -> bool {
        path.starts_with("/api/") || (path == "/metrics" && !self.public_metrics)
    }

    async fn admit(&self, token: Option<String>) -> Result<(), Refusal> {
        let Some(token) = token.as_deref() else {
            return Err(Refusal::Unauthorized(match self.check {
                Check::Kubernetes(_) => "this API needs credentials: send 'Authorization: Bearer TOKEN' with a Kubernetes token allowed to get flows.flowgate.io".into(),
                _ => "this API needs credentials: send 'Authorization: Bearer TOKEN' with a token from the collector's --api-token-file".into(),
            }));
        };
        match &self.check {
            Check::Open => Ok(()),
            Check::Tokens(file) => {
                if file.accepts(token) {
                    Ok(())
                } else {
                    Err(Refusal::Unauthorized(
                        "the bearer token is not in the collector's --api-token-file".into(),
                    ))
                }
            }
            Check::Kubernetes(reviewer) => match reviewer.review(token).await {
                Ok(Review::Allowed) => Ok(()),
                Ok(Review::Unauthenticated(m)) => Err(Refusal::Unauthorized(m)),
                Ok(Review::Forbidden(m)) => Err(Refusal::Forbidden(m)),
                Err(m) => {
                    tracing::error!(error = %m, "cannot check an API caller");
                    Err(Refusal::Unavailable(m))
                }
            },
        }
    }
}

fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// axum middleware: refuses guarded paths without valid credentials.
pub async fn require(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    if matches!(auth.check, Check::Open) || !auth.guarded(request.uri().path()) {
        return next.run(request).await;
    }
    let token = bearer(&request).map(str::to_owned);
    match auth.admit(token).await {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}
