//! `flowgate probe` settings: flags with `FLOWGATE_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use flowgate_ebpf::Granularity;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum GranularityArg {
    /// Aggregate packets into flows in the kernel (cheap; short connections
    /// are still reported through new-flow and TCP SYN/FIN/RST events).
    Flow,
    /// Send every packet to user space (exact per-packet times; costs more
    /// CPU and loses events first under load).
    Packet,
}

impl From<GranularityArg> for Granularity {
    fn from(g: GranularityArg) -> Self {
        match g {
            GranularityArg::Flow => Granularity::Flow,
            GranularityArg::Packet => Granularity::Packet,
        }
    }
}

/// Observe every packet on this node's pod interfaces with eBPF and stream
/// flow records to the collector. Needs root (or CAP_BPF, CAP_NET_ADMIN and
/// CAP_PERFMON), kernel BTF and tracefs.
#[derive(Clone, Debug, clap::Args)]
pub struct Config {
    /// The collector's gRPC address.
    #[arg(long, env = "FLOWGATE_COLLECTOR", value_name = "URL")]
    pub collector: String,
    /// Interfaces to observe: comma-separated name patterns (`*` matches any
    /// run of characters). The default covers the host side of pod veths as
    /// the common CNIs name them; add node interfaces (e.g. `eth0`) to also
    /// see node traffic.
    #[arg(
        long,
        env = "FLOWGATE_INTERFACES",
        default_value = "veth*,cali*,lxc*,cni*",
        value_delimiter = ','
    )]
    pub interfaces: Vec<String>,
    /// `flow` aggregates in the kernel (default); `packet` reports every
    /// packet (more detail, more CPU, loses events first under load).
    #[arg(long, env = "FLOWGATE_GRANULARITY", value_enum, default_value = "flow")]
    pub granularity: GranularityArg,
    /// Aggregation window: flows are exported this often. Shorter is fresher
    /// and costs more records.
    #[arg(long, env = "FLOWGATE_EXPORT_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub export_interval: Duration,
    /// Where to serve Prometheus metrics (`/metrics`) and `/healthz`.
    #[arg(long, env = "FLOWGATE_METRICS_LISTEN", default_value = "0.0.0.0:9465")]
    pub metrics_listen: SocketAddr,
    /// This node's Kubernetes name, put on every flow (from the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Most flows in one gRPC batch; larger batches are split.
    #[arg(long, env = "FLOWGATE_MAX_BATCH_FLOWS", default_value_t = 1000)]
    pub max_batch_flows: usize,
    /// Flow records held while the collector is away or has not acknowledged
    /// them. When full, the oldest batches are dropped and counted
    /// (`flowgate_probe_buffer_overflow_records_total`).
    #[arg(long, env = "FLOWGATE_BUFFER_RECORDS", default_value_t = 200_000)]
    pub buffer_records: usize,
    /// A kernel flow-table entry idle this long is removed (its counts were
    /// already exported).
    #[arg(long, env = "FLOWGATE_FLOW_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub flow_idle_timeout: Duration,
    /// CA (PEM) that signed the collector's certificate: with it the probe
    /// speaks TLS (use an `https://` collector URL). Without any `--tls-*`
    /// flag the stream is plaintext, and anyone on the path can read or forge it.
    #[arg(long, env = "FLOWGATE_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This probe's client certificate (PEM); the collector requires its
    /// DNS names to include this node's name (`--node-name`).
    #[arg(long, env = "FLOWGATE_TLS_CERT", value_name = "FILE", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "FLOWGATE_TLS_KEY", value_name = "FILE", requires_all = ["tls_ca", "tls_cert"])]
    pub tls_key: Option<PathBuf>,
}

/// A TLS file the probe could not read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the {what} {path}")]
pub struct TlsFileError {
    pub what: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl Config {
    /// The gRPC client's TLS settings, `None` for plaintext.
    pub fn client_tls(&self) -> Result<Option<tonic::transport::ClientTlsConfig>, TlsFileError> {
        let Some(ca) = &self.tls_ca else {
            return Ok(None);
        };
        let read = |what, path: &PathBuf| {
            std::fs::read(path).map_err(|source| TlsFileError {
                what,
                path: path.clone(),
                source,
            })
        };
        let mut tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(read("CA", ca)?));
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read("client certificate", cert)?,
                read("client key", key)?,
            ));
        }
        Ok(Some(tls))
    }
}

impl Config {
    pub fn node(&self) -> String {
        self.node_name.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "unknown".into())
        })
    }
}

/// Shell-style matching with `*` only, which is all interface patterns need.
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((prefix, rest)) => {
            let Some(tail) = name.strip_prefix(prefix) else {
                return false;
            };
            if rest.is_empty() {
                return true;
            }
            (0..=tail.len()).any(|i| tail.is_char_boundary(i) && matches_pattern(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::matches_pattern;

    #[test]
    fn patterns() {
        assert!(matches_pattern("veth*", "veth1a2b"));
        assert!(matches_pattern("veth*", "veth"));
        assert!(!matches_pattern("veth*", "eth0"));
        assert!(matches_pattern("eth0", "eth0"));
        assert!(!matches_pattern("eth0", "eth01"));
        assert!(matches_pattern("*-host", "fg1-host"));
        assert!(matches_pattern("c*i*", "cali123"));
        assert!(!matches_pattern("c*x", "cali"));
    }
}
