//! Packet to queryable: how long after a pod sends a packet its flow can be
//! read with SQL. Real parts end to end, in the capture test's setup: two
//! network-namespace pods on a bridge, the probe's eBPF programs on the
//! veths with the default export window (1 s), the real collector (gRPC
//! ingest, write-ahead log, store) and its HTTP SQL API.
//!
//! Pod a sends one UDP packet every 50 ms from a new source port; a poller
//! asks the collector every 10 ms which of those ports it can see. Prints
//! p50/p99/max against the aims (p50 < 2 s, p99 < 5 s).
//!
//! Run as root: `cargo bench -p flowgate-probe --bench latency`

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use support::Pods;

const SAMPLES: u16 = 200;
const FIRST_PORT: u16 = 41_000;
const DST_PORT: u16 = 7_301;
const EVERY: Duration = Duration::from_millis(50);
const POLL: Duration = Duration::from_millis(10);
const GIVE_UP: Duration = Duration::from_secs(30);

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Sends one packet per source port from pod a; returns when each left.
fn send_all(pods: &Pods) -> std::thread::JoinHandle<BTreeMap<u16, Instant>> {
    let dst = SocketAddr::new(pods.v4(2), DST_PORT);
    pods.run_in('a', move || {
        let mut sent = BTreeMap::new();
        for i in 0..SAMPLES {
            let port = FIRST_PORT + i;
            let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind a source port");
            s.send_to(b"flowgate latency probe", dst).expect("send");
            sent.insert(port, Instant::now());
            std::thread::sleep(EVERY);
        }
        sent
    })
}

/// Source ports of the probe packets the collector's SQL can see.
async fn visible(http: &str) -> Vec<u16> {
    let sql = format!(
        "SELECT DISTINCT src_port FROM flows WHERE dst_port = {DST_PORT} AND src_port >= {FIRST_PORT}"
    );
    let answer = flowgate_client::query(http, &sql)
        .await
        .expect("SQL over HTTP");
    answer["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["src_port"].as_u64())
        .map(|p| p as u16)
        .collect()
}

/// `flowgate probe`'s own defaults (export window, batch size, granularity),
/// on the test pods' veths.
fn probe_defaults(collector: &str, interfaces: Vec<String>) -> flowgate_probe::Config {
    #[derive(clap::Parser)]
    struct Flags {
        #[command(flatten)]
        probe: flowgate_probe::Config,
    }
    let mut config = <Flags as clap::Parser>::parse_from(["probe", "--collector", collector]).probe;
    config.interfaces = interfaces;
    config.metrics_listen = "127.0.0.1:0".parse().expect("addr");
    config.node_name = Some("bench-node".into());
    config
}

fn main() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED latency benchmark: needs root (netns, eBPF)");
        return;
    }
    let pods = Pods::create(91);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = tempfile::tempdir().expect("tempdir");
    let cluster =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../collector/tests/fixtures/cluster");
    let mut config = flowgate_collector::Config::new(
        flowgate_collector::ClusterSource::Files(vec![cluster]),
        data.path().to_path_buf(),
    );
    config.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    config.http_listen = "127.0.0.1:0".parse().expect("addr");
    let collector = rt
        .block_on(flowgate_collector::run(config))
        .expect("collector");
    let http = format!("http://{}", collector.http_addr());
    let config = probe_defaults(
        &format!("http://{}", collector.grpc_addr()),
        vec![pods.veth('a'), pods.veth('b')],
    );
    let window = config.export_interval;
    let probe = support::start(&rt, config);

    let sender = send_all(&pods);
    let mut seen: BTreeMap<u16, Instant> = BTreeMap::new();
    let start = Instant::now();
    while seen.len() < SAMPLES as usize && start.elapsed() < GIVE_UP + EVERY * SAMPLES.into() {
        for port in rt.block_on(visible(&http)) {
            seen.entry(port).or_insert_with(Instant::now);
        }
        std::thread::sleep(POLL);
    }
    let sent = sender.join().expect("sender");
    probe.stop(&rt);
    rt.block_on(collector.shutdown()).expect("shutdown");

    let mut latencies: Vec<Duration> = sent
        .iter()
        .filter_map(|(port, at)| seen.get(port).map(|s| s.saturating_duration_since(*at)))
        .collect();
    assert_eq!(
        latencies.len(),
        sent.len(),
        "{} of {} packets never became queryable",
        sent.len() - latencies.len(),
        sent.len()
    );
    latencies.sort();
    let (p50, p99) = (percentile(&latencies, 0.5), percentile(&latencies, 0.99));
    println!(
        "packet to queryable ({} packets, export window {window:?}, SQL polled every {POLL:?}): p50 {p50:.2?}, p99 {p99:.2?}, max {:.2?}",
        latencies.len(),
        latencies[latencies.len() - 1]
    );
    println!(
        "aims: p50 < 2 s {}, p99 < 5 s {}",
        if p50 < Duration::from_secs(2) {
            "met"
        } else {
            "NOT met"
        },
        if p99 < Duration::from_secs(5) {
            "met"
        } else {
            "NOT met"
        }
    );
}
