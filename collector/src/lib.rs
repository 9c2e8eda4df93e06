//! The collector: where flows become answers.
//!
//! Data flows through it in one direction:
//! 1. [`ingest`]: probes stream `FlowBatch`es over gRPC; each batch is
//!    checked, deduplicated by (probe, sequence) and
//! 2. [`enrich`]ed: both endpoints are joined with the pod that held the
//!    address at the flow's time ([`cluster::ip_index`]) and the connection
//!    is judged by the NetworkPolicy engine under the current cluster
//!    [`cluster::Snapshot`]; the verdict is compared with the kernel's fate.
//! 3. The rows are appended to the durable `flowgate_query::FlowStore`; only
//!    then is the batch acknowledged.
//! 4. [`api`] answers SQL (DataFusion via `flowgate_query`), flow listings,
//!    explanations and metrics over HTTP.
//!
//! Cluster state comes from the Kubernetes API ([`cluster::watch`]) or YAML
//! files ([`cluster::files`]); one writer rebuilds the snapshot, readers load
//! it lock-free ([`cluster::state`]). [`run`] starts everything and reports
//! the bound addresses.

pub mod api;
pub mod auth;
pub mod blame;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod enrich;
pub mod ingest;
pub mod losses;
pub mod metrics;
pub mod suggest;
pub mod tables;
pub mod tls;
pub mod whatif;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::{ClusterSource, Config};
use flowgate_query::{FlowStore, QueryEngine, QueryLimits, StoreConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::cluster::{ClusterState, StateWriter};
use crate::metrics::Metrics;

/// How often retention (age and size) is enforced.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open the flow store in {dir}: {source}")]
    Store {
        dir: std::path::PathBuf,
        source: flowgate_query::StoreError,
    },
    #[error("cannot start the query engine: {source}")]
    Query { source: flowgate_query::QueryError },
    #[error(transparent)]
    History(#[from] cluster::history::HistoryError),
    #[error(transparent)]
    ClusterFiles(#[from] cluster::files::FilesError),
    #[error(transparent)]
    Watch(#[from] cluster::watch::WatchError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("the {server} server failed: {message}")]
    Serve {
        server: &'static str,
        message: String,
    },
}

/// A running collector. Dropping it stops nothing; call [`Collector::shutdown`].
pub struct Collector {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: watch::Sender<bool>,
    servers: JoinSet<Result<(), Error>>,
    background: JoinSet<()>,
    store: FlowStore,
}

impl Collector {
    /// The address the gRPC ingest service listens on (port 0 resolved).
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The address of the HTTP API.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Runs until a server fails (or forever).
    pub async fn wait(&mut self) -> Result<(), Error> {
        while let Some(done) = self.servers.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(Error::Serve {
                        server: "collector",
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Stops both servers gracefully and flushes the store.
    pub async fn shutdown(mut self) -> Result<(), Error> {
        let _ = self.stop.send(true);
        while let Some(done) = self.servers.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = %e, "server stopped with an error");
            }
        }
        self.background.abort_all();
        let store = self.store.clone();
        let flushed = tokio::task::spawn_blocking(move || store.flush()).await;
        if let Ok(Err(e)) = flushed {
            tracing::warn!(error = %e, "flushing the store on shutdown failed");
        }
        Ok(())
    }
}

async fn kube_client(config: &Config) -> Result<kube::Client, Error> {
    match &config.kube {
        Some(kube) => kube::Client::try_from(kube.clone())
            .map_err(|source| cluster::watch::WatchError::Client { source }.into()),
        None => Ok(cluster::watch::default_client().await?),
    }
}

async fn api_auth(config: &Config, http_addr: SocketAddr) -> Result<auth::Auth, Error> {
    Ok(match &config.api_auth {
        auth::AuthMode::Open => {
            if !http_addr.ip().is_loopback() {
                tracing::warn!(
                    "the HTTP API is open: anyone who reaches {http_addr} can read every flow (give --api-token-file or --api-auth kubernetes)"
                );
            }
            auth::Auth::open()
        }
        auth::AuthMode::TokenFile(path) => {
            auth::Auth::tokens(auth::TokenFile::open(path.clone())?, config.public_metrics)
        }
        auth::AuthMode::Kubernetes => auth::Auth::kubernetes(
            auth::KubernetesReviewer::new(kube_client(config).await?),
            config.public_metrics,
        ),
    })
}

async fn serve_http<L>(
    listener: L,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), Error>
where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
        .await
        .map_err(|e| Error::Serve {
            server: "HTTP",
            message: e.to_string(),
        })
}

fn open_history(dir: &std::path::Path) -> Result<cluster::history::SharedHistory, Error> {
    let (history, cut) = cluster::history::History::open(dir)?;
    if cut > 0 {
        tracing::warn!(
            bytes = cut,
            "cut a torn record off the end of the cluster history"
        );
    }
    tracing::info!(
        changes = history.changes().len(),
        generation = history.last_generation(),
        "cluster history opened"
    );
    Ok(Arc::new(std::sync::Mutex::new(history)))
}

/// Opens the store, loads or watches the cluster, and starts the gRPC and
/// HTTP servers. Returns once both listen.
pub async fn run(config: Config) -> Result<Collector, Error> {
    let store = FlowStore::open(StoreConfig {
        dir: config.data_dir.clone(),
        retention: config.retention,
        max_size_bytes: config.max_store_size,
        flush_rows: config.flush_rows,
        flush_bytes: config.flush_bytes,
        partition: config.partition,
        ..StoreConfig::new(&config.data_dir)
    })
    .map_err(|source| Error::Store {
        dir: config.data_dir.clone(),
        source,
    })?;
    let engine = Arc::new(
        QueryEngine::new(
            store.clone(),
            QueryLimits {
                timeout: config.query_timeout,
                max_rows: config.query_max_rows,
                memory_bytes: config.query_memory_limit,
                max_concurrent: config.max_concurrent_queries,
            },
        )
        .map_err(|source| Error::Query { source })?,
    );
    let metrics = Arc::new(Metrics::new());
    let state = ClusterState::default();
    let mut writer = StateWriter::new(state.clone(), config.tombstone_retention, metrics.clone());
    let history = open_history(&config.data_dir)?;
    writer.set_history(history.clone());
    {
        let engine = engine.clone();
        let history = history.clone();
        writer.set_hook(Box::new(move |snapshot| {
            let c = &snapshot.cluster;
            engine.set_cluster_tables(
                tables::pod_rows(c),
                tables::namespace_rows(c),
                tables::policy_rows(c),
            );
            engine.set_pod_isolation(&tables::pod_isolation_rows(c));
            let h = cluster::state::lock(&history);
            engine.set_history_tables(
                &tables::policy_history_rows(&h),
                &tables::label_history_rows(&h),
            );
        }));
    }
    let mut background = JoinSet::new();
    match &config.cluster {
        ClusterSource::Files(paths) => {
            let inputs = cluster::files::load(paths)?;
            tracing::info!(
                pods = inputs.pods.len(),
                namespaces = inputs.namespaces.len(),
                policies = inputs.policies.len(),
                "cluster loaded from files"
            );
            writer.rebuild(&inputs, now_ns());
            background.spawn(cluster::files::watch(
                paths.clone(),
                writer,
                config.cluster_poll,
                metrics.clone(),
            ));
        }
        ClusterSource::Kubernetes => {
            let client = kube_client(&config).await?;
            cluster::watch::spawn(
                client,
                writer,
                cluster::watch::WatchTiming {
                    debounce: config.rebuild_debounce,
                    crd_recheck: config.crd_recheck,
                },
                metrics.clone(),
                &mut background,
            );
        }
    }
    {
        let store = store.clone();
        background.spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_EVERY);
            loop {
                tick.tick().await;
                let store = store.clone();
                match tokio::task::spawn_blocking(move || store.enforce_retention(now_ns())).await {
                    Ok(Ok(report)) => tracing::debug!(?report, "retention enforced"),
                    Ok(Err(e)) => tracing::warn!(error = %e, "enforcing retention failed"),
                    Err(e) => tracing::warn!(error = %e, "the retention task failed"),
                }
            }
        });
    }

    let grpc = TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.grpc_listen,
            source,
        })?;
    let http = TcpListener::bind(config.http_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: config.http_listen,
            source,
        })?;
    let grpc_addr = grpc.local_addr().map_err(|source| Error::Bind {
        addr: config.grpc_listen,
        source,
    })?;
    let http_addr = http.local_addr().map_err(|source| Error::Bind {
        addr: config.http_listen,
        source,
    })?;

    let (stop, stopped) = watch::channel(false);
    let mut servers = JoinSet::new();
    let ingest = ingest::Ingest::new(
        store.clone(),
        state.clone(),
        metrics.clone(),
        config.max_batch_flows,
        config.verdict_cache_entries,
    );
    let ingest_losses = ingest.losses();
    let mut grpc_stop = stopped.clone();
    let mut grpc_server = tonic::transport::Server::builder();
    match &config.grpc_tls {
        Some(tls) => {
            grpc_server =
                grpc_server
                    .tls_config(tls.server_config()?)
                    .map_err(|e| Error::Serve {
                        server: "gRPC",
                        message: format!("TLS: {e}"),
                    })?;
        }
        None => tracing::warn!(
            "gRPC ingest is plaintext and unauthenticated: any client that reaches {grpc_addr} can send flows as any node (give --tls-cert, --tls-key and --client-ca for mutual TLS)"
        ),
    }
    servers.spawn(async move {
        grpc_server
            .add_service(ingest.into_service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(grpc),
                async move {
                    let _ = grpc_stop.wait_for(|s| *s).await;
                },
            )
            .await
            .map_err(|e| Error::Serve {
                server: "gRPC",
                message: e.to_string(),
            })
    });
    let router = api::app(api::AppState {
        engine,
        store: store.clone(),
        cluster: state,
        history,
        metrics,
        losses: ingest_losses,
        max_rows: config.query_max_rows,
    })
    .merge(flowgate_web::router())
    .layer(axum::middleware::from_fn_with_state(
        Arc::new(api_auth(&config, http_addr).await?),
        auth::require,
    ));
    match &config.http_tls {
        Some(tls) => {
            let https = tls::HttpsListener::new(http, tls)?;
            servers.spawn(serve_http(https, router, stopped));
        }
        None => {
            servers.spawn(serve_http(http, router, stopped));
        }
    }
    tracing::info!(grpc = %grpc_addr, http = %http_addr, "collector listening");
    Ok(Collector {
        grpc_addr,
        http_addr,
        stop,
        servers,
        background,
        store,
    })
}
