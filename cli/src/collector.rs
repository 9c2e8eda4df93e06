//! `flowgate collector`: receive flows from every probe, judge them against
//! the cluster's NetworkPolicies, store them, and answer SQL over HTTP.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::builder::TypedValueParser as _;
use flowgate_collector::{ClusterSource, Config};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Load Namespaces, Pods and NetworkPolicies from these YAML/JSON files or
    /// folders instead of watching the Kubernetes API (offline use, demos).
    /// Without it, the in-cluster config or the kubeconfig is used.
    #[arg(
        long,
        value_name = "FILE_OR_DIR",
        env = "FLOWGATE_CLUSTER",
        value_delimiter = ','
    )]
    cluster: Vec<PathBuf>,
    /// How often the `--cluster` files are checked for edits (a changed
    /// file is reloaded like a watch event: new generation, history recorded).
    /// Shorter notices edits sooner at the cost of a few stat calls.
    #[arg(long, default_value = "1s", env = "FLOWGATE_CLUSTER_POLL", value_parser = humantime::parse_duration)]
    cluster_poll: std::time::Duration,
    /// gRPC address probes send flows to; port 0 picks a free port (printed).
    #[arg(long, default_value_t = defaults().grpc_listen, env = "FLOWGATE_GRPC_LISTEN")]
    grpc_listen: SocketAddr,
    /// HTTP address of the API, metrics and dashboard; port 0 picks a free port (printed).
    #[arg(long, default_value_t = defaults().http_listen, env = "FLOWGATE_HTTP_LISTEN")]
    http_listen: SocketAddr,
    /// Where flows are kept (write-ahead log and Parquet files); must survive
    /// restarts for acknowledged flows to survive them.
    #[arg(long, default_value = Config::DEFAULT_DATA_DIR, env = "FLOWGATE_DATA_DIR")]
    data_dir: PathBuf,
    /// Flows older than this are deleted; longer keeps more history on disk.
    #[arg(long, default_value_t = defaults().retention.into(), env = "FLOWGATE_RETENTION")]
    retention: humantime::Duration,
    /// Oldest flows are deleted once the store is larger (e.g. 20GiB); unset: no size limit.
    #[arg(long, env = "FLOWGATE_MAX_STORE_SIZE", value_parser = parse_size)]
    max_store_size: Option<u64>,
    /// Batches with more flows are rejected; larger allows bigger probe
    /// batches at the cost of memory per request.
    #[arg(long, default_value_t = defaults().max_batch_flows, env = "FLOWGATE_MAX_BATCH_FLOWS")]
    max_batch_flows: usize,
    /// SQL queries running longer are cancelled.
    #[arg(long, default_value_t = defaults().query_timeout.into(), env = "FLOWGATE_QUERY_TIMEOUT")]
    query_timeout: humantime::Duration,
    /// SQL results are truncated after this many rows (the answer says so).
    #[arg(long, default_value_t = defaults().query_max_rows, env = "FLOWGATE_QUERY_MAX_ROWS")]
    query_max_rows: usize,
    /// Memory all running SQL queries may hold together (e.g. 512MiB); a
    /// query that needs more (a big sort or join) fails saying so. Default:
    /// a quarter of the container's memory limit, else of the machine's.
    #[arg(long, default_value_t = bytesize::ByteSize(defaults().query_memory_limit as u64), env = "FLOWGATE_QUERY_MEMORY_LIMIT")]
    query_memory_limit: bytesize::ByteSize,
    /// SQL queries (and API listings) running at once; one more is answered
    /// 429 at once. Higher serves more users at the cost of CPU taken from ingest.
    #[arg(long, default_value_t = defaults().max_concurrent_queries, env = "FLOWGATE_MAX_CONCURRENT_QUERIES", value_parser = clap::value_parser!(u16).range(1..).map(usize::from))]
    max_concurrent_queries: usize,
    /// Cluster changes are gathered this long before the policy snapshot is
    /// rebuilt: longer costs fewer rebuilds under churn, shorter reacts faster.
    #[arg(long, default_value_t = defaults().rebuild_debounce.into(), env = "FLOWGATE_REBUILD_DEBOUNCE")]
    rebuild_debounce: humantime::Duration,
    /// How often the API is asked again for a policy-tier CRD
    /// (AdminNetworkPolicy, BaselineAdminNetworkPolicy, ClusterNetworkPolicy)
    /// that is not installed: shorter notices a new install sooner.
    #[arg(long, default_value_t = defaults().crd_recheck.into(), env = "FLOWGATE_CRD_RECHECK")]
    crd_recheck: humantime::Duration,
    /// How long a deleted pod still names its IP for late flows; longer costs memory.
    #[arg(long, default_value_t = defaults().tombstone_retention.into(), env = "FLOWGATE_TOMBSTONE_RETENTION")]
    tombstone_retention: humantime::Duration,
    /// Rows held in memory before they are written to Parquet files: more
    /// makes fewer flushes and a longer log to replay after a crash.
    #[arg(long, default_value_t = defaults().flush_rows, env = "FLOWGATE_FLUSH_ROWS")]
    flush_rows: usize,
    /// Bytes the rows in memory may take (mostly compressed Parquet images)
    /// before they are written to disk; ingest waits at three times this.
    #[arg(long, default_value_t = bytesize::ByteSize(defaults().flush_bytes), env = "FLOWGATE_FLUSH_BYTES")]
    flush_bytes: bytesize::ByteSize,
    /// The collector's certificate (PEM) for gRPC: with --tls-key and
    /// --client-ca, probes must present a client certificate signed by that
    /// CA naming their node. Without these flags gRPC is plaintext and any
    /// client can send flows as any node (a warning is logged).
    #[arg(long, env = "FLOWGATE_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "client_ca"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, env = "FLOWGATE_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "client_ca"])]
    tls_key: Option<PathBuf>,
    /// CA (PEM) whose client certificates probes must present.
    #[arg(long, env = "FLOWGATE_CLIENT_CA", value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    client_ca: Option<PathBuf>,
    /// Serve the HTTP API and dashboard over HTTPS with this certificate (PEM).
    #[arg(
        long,
        env = "FLOWGATE_HTTP_TLS_CERT",
        value_name = "FILE",
        requires = "http_tls_key"
    )]
    http_tls_cert: Option<PathBuf>,
    /// The private key of --http-tls-cert (PEM).
    #[arg(
        long,
        env = "FLOWGATE_HTTP_TLS_KEY",
        value_name = "FILE",
        requires = "http_tls_cert"
    )]
    http_tls_key: Option<PathBuf>,
    /// API callers must send `Authorization: Bearer T` with T a line of this
    /// file (re-read when it changes; `#` starts a comment). Without it or
    /// --api-auth, anyone who reaches the port reads every flow.
    #[arg(
        long,
        env = "FLOWGATE_API_TOKEN_FILE",
        value_name = "FILE",
        conflicts_with = "api_auth"
    )]
    api_token_file: Option<PathBuf>,
    /// `kubernetes`: check the caller's bearer token with a TokenReview and a
    /// SubjectAccessReview (verb get, resource flows, group flowgate.io), so
    /// RBAC decides who reads flows.
    #[arg(long, env = "FLOWGATE_API_AUTH", value_enum)]
    api_auth: Option<ApiAuthArg>,
    /// Serve /metrics without credentials even when API auth is on (for a
    /// Prometheus that sends no token).
    #[arg(long, env = "FLOWGATE_PUBLIC_METRICS")]
    public_metrics: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ApiAuthArg {
    Kubernetes,
}

/// The collector's defaults: one place, shown by `--help`.
fn defaults() -> &'static Config {
    Config::defaults()
}

fn parse_size(text: &str) -> Result<u64, String> {
    text.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{text:?}: {e}"))
}

pub(crate) fn run(args: Args) -> anyhow::Result<ExitCode> {
    let source = if args.cluster.is_empty() {
        ClusterSource::Kubernetes
    } else {
        ClusterSource::Files(args.cluster.clone())
    };
    let mut config = Config::new(source, args.data_dir);
    config.grpc_listen = args.grpc_listen;
    config.http_listen = args.http_listen;
    config.retention = args.retention.into();
    config.max_store_size = args.max_store_size;
    config.max_batch_flows = args.max_batch_flows;
    config.query_timeout = args.query_timeout.into();
    config.query_max_rows = args.query_max_rows;
    config.query_memory_limit = usize::try_from(args.query_memory_limit.as_u64())
        .context("--query-memory-limit does not fit this machine's address space")?;
    config.max_concurrent_queries = args.max_concurrent_queries;
    config.rebuild_debounce = args.rebuild_debounce.into();
    config.crd_recheck = args.crd_recheck.into();
    config.tombstone_retention = args.tombstone_retention.into();
    config.cluster_poll = args.cluster_poll;
    config.flush_rows = args.flush_rows;
    config.flush_bytes = args.flush_bytes.as_u64();
    if let (Some(cert), Some(key), Some(client_ca)) = (args.tls_cert, args.tls_key, args.client_ca)
    {
        config.grpc_tls = Some(flowgate_collector::tls::GrpcTls {
            cert,
            key,
            client_ca,
        });
    }
    config.public_metrics = args.public_metrics;
    config.api_auth = match (args.api_token_file, args.api_auth) {
        (Some(path), _) => flowgate_collector::auth::AuthMode::TokenFile(path),
        (None, Some(ApiAuthArg::Kubernetes)) => flowgate_collector::auth::AuthMode::Kubernetes,
        (None, None) => flowgate_collector::auth::AuthMode::Open,
    };
    if let (Some(cert), Some(key)) = (args.http_tls_cert, args.http_tls_key) {
        config.http_tls = Some(flowgate_collector::tls::HttpTls { cert, key });
    }
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async {
        let mut collector = flowgate_collector::run(config)
            .await
            .context("cannot start the collector")?;
        // Printed on stdout so that scripts and tests can find the ports.
        let mut out = std::io::stdout().lock();
        writeln!(out, "grpc listening on {}", collector.grpc_addr())?;
        writeln!(out, "http listening on {}", collector.http_addr())?;
        out.flush()?;
        drop(out);
        tokio::select! {
            result = collector.wait() => result.context("the collector stopped")?,
            () = crate::shutdown_signal() => {}
        }
        collector.shutdown().await.context("shutting down")?;
        Ok(ExitCode::SUCCESS)
    })
}
