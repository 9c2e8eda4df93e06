//! Ingest through the real gRPC path, in flows per second of the collector's
//! CPU: this process runs the collector (gRPC decode, checks, identity,
//! verdict, write-ahead log, memory, Parquet) and re-runs itself as the
//! client, another process, whose CPU is not counted. The collector's CPU
//! is its `getrusage` user + system time from the first batch sent to the
//! last batch flushed to Parquet.
//!
//! Run alone: `cargo bench -p flowgate-collector --bench ingest`;
//! `scripts/bench.sh` runs it with chDB inserting the same rows (read from
//! the collector's own Parquet files) and prints the ratio. Environment:
//! - `FLOWGATE_BENCH_INGEST_FLOWS`: flows to send (default 2,000,000);
//! - `FLOWGATE_BENCH_DIR`: the collector's data directory, kept for the
//!   peer (default a temporary directory);
//! - `FLOWGATE_BENCH_OUT`: a JSON file for the figures.

use std::io::{BufRead, BufReader, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flowgate_client as client;
use flowgate_collector::{ClusterSource, Config};
use flowgate_proto::v1::{self, Flow, FlowBatch};
use serde_json::json;

const ROLE: &str = "FLOWGATE_BENCH_ROLE";
const URL: &str = "FLOWGATE_BENCH_URL";
const DEFAULT_FLOWS: usize = 2_000_000;
const FLOWS_PER_BATCH: usize = 5_000;
/// Two probes stream at once, as two nodes would.
const STREAMS: usize = 2;
const NAMESPACES: usize = 20;
const WORKLOADS: usize = 5;
const REPLICAS: usize = 4;
const PORTS: [u16; WORKLOADS] = [8080, 5432, 6379, 443, 9090];

fn flows_wanted() -> usize {
    std::env::var("FLOWGATE_BENCH_INGEST_FLOWS")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .expect("FLOWGATE_BENCH_INGEST_FLOWS is a number")
        })
        .unwrap_or(DEFAULT_FLOWS)
}

fn pod_ip(ns: usize, w: usize, r: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, ns as u8, (w * REPLICAS + r) as u8, 10)
}

/// 20 namespaces × 5 workloads × 4 pods; every namespace isolates its
/// pods' ingress and admits its own namespace and the `front` namespaces
/// on the workload's port, so about half the cross-namespace traffic is
/// denied.
fn cluster_yaml() -> String {
    let mut y = String::new();
    for ns in 0..NAMESPACES {
        let team = if ns % 2 == 0 { "front" } else { "back" };
        y += &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{ns:02}, labels: {{team: {team}}}}}\n---\n"
        );
        y += &format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: default-deny, namespace: ns-{ns:02}}}\nspec: {{podSelector: {{}}, policyTypes: [Ingress]}}\n---\n"
        );
        for (w, port) in PORTS.iter().enumerate() {
            y += &format!(
                "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: allow-w{w}, namespace: ns-{ns:02}}}\nspec:\n  podSelector: {{matchLabels: {{app: w{w}}}}}\n  ingress:\n    - from: [{{podSelector: {{}}}}, {{namespaceSelector: {{matchLabels: {{team: front}}}}}}]\n      ports: [{{protocol: TCP, port: {port}}}]\n---\n"
            );
            for r in 0..REPLICAS {
                let ip = pod_ip(ns, w, r);
                y += &format!(
                    "apiVersion: v1\nkind: Pod\nmetadata:\n  name: w{w}-{ns:02}-7d4b9-{r}\n  namespace: ns-{ns:02}\n  labels: {{app: w{w}, pod-template-hash: 7d4b9}}\n  ownerReferences: [{{apiVersion: apps/v1, kind: ReplicaSet, name: w{w}-7d4b9, uid: rs-{ns}-{w}, controller: true}}]\nspec: {{nodeName: node-{:02}, containers: [{{name: c, image: app, ports: [{{containerPort: {port}}}]}}]}}\nstatus: {{phase: Running, podIP: {ip}, podIPs: [{{ip: {ip}}}]}}\n---\n",
                    (ns * WORKLOADS + w + r) % 10
                );
            }
        }
    }
    y
}

/// xorshift64: the same flows on every run.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One probe's observation of a connection: 85% to another pod, the rest
/// to one of 20,000 external addresses; many client ports, times spread.
fn flow(rng: &mut Rng, node: &str, now: u64, i: usize) -> Flow {
    let (sn, sw, sr) = (
        rng.below(NAMESPACES as u64) as usize,
        rng.below(WORKLOADS as u64) as usize,
        rng.below(REPLICAS as u64) as usize,
    );
    let src = pod_ip(sn, sw, sr);
    let (dst, dst_port, protocol) = if rng.below(100) < 85 {
        let (dn, dw, dr) = (
            rng.below(NAMESPACES as u64) as usize,
            rng.below(WORKLOADS as u64) as usize,
            rng.below(REPLICAS as u64) as usize,
        );
        (pod_ip(dn, dw, dr), PORTS[dw], v1::Protocol::Tcp)
    } else {
        let x = 0x0100_0000 + rng.below(20_000) as u32 * 7919;
        let udp = rng.below(4) == 0;
        (
            Ipv4Addr::from(x),
            if udp { 53 } else { 443 },
            if udp {
                v1::Protocol::Udp
            } else {
                v1::Protocol::Tcp
            },
        )
    };
    let first = now - 600_000_000_000 + i as u64 * 100_000 + rng.below(1_000_000_000);
    let scale = rng.below(14);
    let packets = 1 + rng.below(1 << scale);
    let egress = rng.below(2) == 0;
    Flow {
        node: node.to_owned(),
        first_seen_ns: first,
        last_seen_ns: first + rng.below(10_000_000_000),
        interface: format!("cali{:06x}{:05x}", u32::from(src) & 0xff_ffff, sw * 97 + sr),
        ifindex: 10 + (u32::from(src) & 0xfff),
        direction: if egress {
            v1::Direction::Egress
        } else {
            v1::Direction::Ingress
        } as i32,
        ip_version: v1::IpVersion::V4 as i32,
        src_ip: src.octets().to_vec(),
        dst_ip: dst.octets().to_vec(),
        protocol: protocol as i32,
        src_port: 32_768 + rng.below(28_000) as u32,
        dst_port: u32::from(dst_port),
        packets,
        bytes: packets * (60 + rng.below(1_400)),
        tcp_flags: 0x1b,
        kernel_fate: v1::KernelFate::Forwarded as i32,
        outcome: v1::Outcome::Established as i32,
        ..Default::default()
    }
}

/// The client process: makes every batch, says `ready`, waits for `go`,
/// streams, says `done`.
fn client_main() {
    let url = std::env::var(URL).expect("FLOWGATE_BENCH_URL");
    let total = flows_wanted();
    let now = flowgate_collector::now_ns() as u64;
    let per_stream = total / STREAMS;
    let streams: Vec<Vec<FlowBatch>> = (0..STREAMS)
        .map(|s| {
            let mut rng = Rng(0x5eed_0000 + s as u64);
            let node = format!("node-{s:02}");
            let flows: Vec<Flow> = (0..per_stream)
                .map(|i| flow(&mut rng, &node, now, i * STREAMS + s))
                .collect();
            client::replay::batches(&format!("bench-{s}"), &node, flows, FLOWS_PER_BATCH)
        })
        .collect();
    let mut out = std::io::stdout();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .expect("stdout");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("stdin");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let stored: u64 = runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for batches in streams {
            let url = url.clone();
            tasks.spawn(async move { client::send_batches(&url, batches).await.expect("send") });
        }
        let mut stored = 0;
        while let Some(acks) = tasks.join_next().await {
            stored += acks
                .expect("task")
                .iter()
                .map(|a| u64::from(a.flows_stored))
                .sum::<u64>();
        }
        stored
    });
    writeln!(out, "done {stored}")
        .and_then(|()| out.flush())
        .expect("stdout");
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole rusage into the pointer it is given.
    let usage = unsafe {
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()), 0);
        usage.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn data_dir() -> (Option<tempfile::TempDir>, PathBuf) {
    match std::env::var_os("FLOWGATE_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.exists() {
                std::fs::remove_dir_all(&d).expect("clearing FLOWGATE_BENCH_DIR");
            }
            std::fs::create_dir_all(&d).expect("creating FLOWGATE_BENCH_DIR");
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().expect("tempdir");
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    }
}

fn start_client(url: &str) -> (std::process::Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .env(ROLE, "client")
        .env(URL, url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the client process");
    let lines = BufReader::new(child.stdout.take().expect("client stdout"));
    (child, lines)
}

fn read_line(lines: &mut impl BufRead) -> String {
    let mut line = String::new();
    lines.read_line(&mut line).expect("client output");
    line.trim().to_owned()
}

fn collector_main() {
    let (_tmp, dir) = data_dir();
    let cluster = dir.join("cluster");
    std::fs::create_dir_all(&cluster).expect("cluster dir");
    std::fs::write(cluster.join("cluster.yaml"), cluster_yaml()).expect("cluster yaml");
    let store = dir.join("store");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let mut config = Config::new(ClusterSource::Files(vec![cluster]), store.clone());
    config.grpc_listen = "127.0.0.1:0".parse().expect("addr");
    config.http_listen = "127.0.0.1:0".parse().expect("addr");
    let collector = runtime
        .block_on(flowgate_collector::run(config))
        .expect("collector");
    let (mut child, mut lines) = start_client(&format!("http://{}", collector.grpc_addr()));
    assert_eq!(read_line(&mut lines), "ready", "the client process failed");

    let (cpu0, wall0) = (cpu_time(), Instant::now());
    let mut stdin = child.stdin.take().expect("client stdin");
    writeln!(stdin, "go").expect("client stdin");
    let done = read_line(&mut lines);
    let wall_ingest = wall0.elapsed();
    runtime
        .block_on(collector.shutdown())
        .expect("shutdown flushes the store");
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    child.wait().expect("client exit");
    let stored: u64 = done
        .strip_prefix("done ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the client process failed: {done:?}"));
    report(&store, stored, cpu, wall, wall_ingest);
}

fn report(store: &Path, stored: u64, cpu: Duration, wall: Duration, wall_ingest: Duration) {
    let per_cpu = stored as f64 / cpu.as_secs_f64();
    println!(
        "ingest: {stored} flows over {STREAMS} gRPC streams from another process in {wall_ingest:.2?} (acknowledged), {wall:.2?} until flushed to Parquet"
    );
    println!(
        "ingest: {per_cpu:.0} flows per collector CPU-second ({cpu:.2?} of collector CPU); {:.0} flows/s of wall time",
        stored as f64 / wall.as_secs_f64()
    );
    if let Some(out) = std::env::var_os("FLOWGATE_BENCH_OUT") {
        let figures = json!({
            "flows": stored,
            "collector_cpu_s": cpu.as_secs_f64(),
            "wall_s": wall.as_secs_f64(),
            "flows_per_cpu_s": per_cpu,
            "flows_dir": store.join("flows"),
        });
        std::fs::write(&out, serde_json::to_vec_pretty(&figures).expect("json"))
            .expect("writing FLOWGATE_BENCH_OUT");
    }
}

fn main() {
    if std::env::var(ROLE).as_deref() == Ok("client") {
        client_main();
    } else {
        collector_main();
    }
}
