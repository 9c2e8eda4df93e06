//! Everything the collector needs to start, independent of how it was parsed
//! (the `flowgate collector` flags, or the demo building it in code).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowgate_query::{QueryLimits, StoreConfig};

/// Where cluster state (pods, namespaces, policies) comes from.
#[derive(Debug, Clone)]
pub enum ClusterSource {
    /// YAML/JSON files or folders, loaded once (offline use, the demo).
    Files(Vec<PathBuf>),
    /// The Kubernetes API: in-cluster config, else the kubeconfig.
    Kubernetes,
}

/// The collector's configuration. [`Config::new`] gives the defaults of the
/// `flowgate collector` flags.
#[derive(Debug, Clone)]
pub struct Config {
    pub cluster: ClusterSource,
    pub grpc_listen: SocketAddr,
    pub http_listen: SocketAddr,
    /// Flow store directory (write-ahead log and Parquet files).
    pub data_dir: PathBuf,
    /// Flows older than this are deleted.
    pub retention: Duration,
    /// Oldest flows are deleted when the store grows past this.
    pub max_store_size: Option<u64>,
    /// Batches with more flows are rejected.
    pub max_batch_flows: usize,
    /// SQL queries running longer are cancelled.
    pub query_timeout: Duration,
    /// SQL results are truncated after this many rows.
    pub query_max_rows: usize,
    /// Bytes all running SQL queries may hold together.
    pub query_memory_limit: usize,
    /// SQL queries running at once; more are refused.
    pub max_concurrent_queries: usize,
    /// Cluster changes are gathered for this long before the policy snapshot
    /// is rebuilt.
    pub rebuild_debounce: Duration,
    /// How often the API is asked again for a policy-tier CRD that is not
    /// installed.
    pub crd_recheck: Duration,
    /// How often `--cluster` files are checked for changes.
    pub cluster_poll: Duration,
    /// How long a deleted pod still names its IP for late flows.
    pub tombstone_retention: Duration,
    /// Verdicts remembered per ingest stream.
    pub verdict_cache_entries: usize,
    /// Rows buffered in memory before the store writes a Parquet file.
    pub flush_rows: usize,
    /// Bytes of rows in memory (mostly compressed Parquet images) before
    /// the store writes them to disk.
    pub flush_bytes: u64,
    /// Time span of one Parquet partition.
    pub partition: Duration,
    /// Mutual TLS on the gRPC port; `None` is plaintext (logged as a warning).
    pub grpc_tls: Option<crate::tls::GrpcTls>,
    /// HTTPS on the API port; `None` is plain HTTP.
    pub http_tls: Option<crate::tls::HttpTls>,
    /// Who may call `/api/*` (and `/metrics` unless `public_metrics`).
    pub api_auth: crate::auth::AuthMode,
    /// `/metrics` without credentials even when `api_auth` is set.
    pub public_metrics: bool,
    /// How to reach the Kubernetes API; `None`: in-cluster config, else the
    /// kubeconfig (tests point it at a recorded server).
    pub kube: Option<kube::Config>,
}

impl Config {
    /// Where `flowgate collector` keeps its store unless told otherwise.
    pub const DEFAULT_DATA_DIR: &str = "/var/lib/flowgate";

    /// The defaults, as `flowgate collector --help` shows them.
    pub fn defaults() -> &'static Config {
        static DEFAULTS: std::sync::LazyLock<Config> = std::sync::LazyLock::new(|| {
            Config::new(ClusterSource::Kubernetes, Config::DEFAULT_DATA_DIR.into())
        });
        &DEFAULTS
    }

    pub fn new(cluster: ClusterSource, data_dir: PathBuf) -> Self {
        Self {
            cluster,
            grpc_listen: SocketAddr::from(([0, 0, 0, 0], flowgate_proto::DEFAULT_GRPC_PORT)),
            http_listen: SocketAddr::from(([0, 0, 0, 0], flowgate_proto::DEFAULT_HTTP_PORT)),
            data_dir,
            retention: StoreConfig::DEFAULT_RETENTION,
            max_store_size: None,
            max_batch_flows: 10_000,
            query_timeout: QueryLimits::default().timeout,
            query_max_rows: QueryLimits::default().max_rows,
            query_memory_limit: QueryLimits::default().memory_bytes,
            max_concurrent_queries: QueryLimits::default().max_concurrent,
            rebuild_debounce: Duration::from_millis(200),
            crd_recheck: Duration::from_secs(60),
            cluster_poll: Duration::from_secs(1),
            tombstone_retention: Duration::from_secs(3600),
            verdict_cache_entries: 65_536,
            flush_rows: StoreConfig::DEFAULT_FLUSH_ROWS,
            flush_bytes: StoreConfig::DEFAULT_FLUSH_BYTES,
            partition: StoreConfig::DEFAULT_PARTITION,
            grpc_tls: None,
            http_tls: None,
            api_auth: crate::auth::AuthMode::Open,
            public_metrics: false,
            kube: None,
        }
    }
}
