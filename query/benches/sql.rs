//! The store and its SQL, measured on 10,000,000 realistic flows: bytes per
//! flow in memory (the store's own accounting and the process's RSS growth)
//! and on disk, then the four dashboard questions through flowgate's
//! DataFusion engine over the store's Parquet files.
//!
//! Run alone: `cargo bench -p flowgate-query --bench sql`. `scripts/bench.sh`
//! runs it with the peers (DuckDB reads the same Parquet files) and prints
//! the ratios. Environment:
//! - `FLOWGATE_BENCH_FLOWS`: how many flows (default 10,000,000);
//! - `FLOWGATE_BENCH_DIR`: where the store is kept (default a temporary
//!   directory, removed at the end);
//! - `FLOWGATE_BENCH_OUT`: a JSON file for the figures, the SQL and the
//!   answers, for the peers to run the same queries and compare.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowgate_query::{
    Direction, DirectionVerdict, FlowBatchBuilder, FlowRef, FlowStore, KernelFate, Outcome,
    Protocol, QueryEngine, QueryLimits, StoreConfig, TextList, Tier, Verdict,
};
use serde_json::{Value, json};

const DEFAULT_FLOWS: usize = 10_000_000;
/// Rows per append: a busy node's export batch.
const CHUNK: usize = 50_000;
const RUNS: usize = 5;
const HOUR_NS: i64 = 3_600_000_000_000;

/// The four questions of issue 10, as the dashboard asks them.
const QUERIES: [(&str, &str); 4] = [
    (
        "top_talkers",
        "SELECT src_namespace, dst_namespace, verdict, count(*) AS flows, sum(bytes) AS bytes \
         FROM flows WHERE time > now() - INTERVAL '1 hour' \
         GROUP BY src_namespace, dst_namespace, verdict ORDER BY bytes DESC LIMIT 20",
    ),
    (
        "pod_denied_newest",
        "SELECT time, src_ip, src_port, dst_namespace, dst_pod, dst_ip, dst_port, bytes \
         FROM flows WHERE src_namespace = 'ns-07' AND src_pod = 'api-07-5ca30-3' \
         AND verdict = 'denied' ORDER BY time DESC LIMIT 100",
    ),
    (
        "denials_per_destination_pod",
        "SELECT dst_namespace, dst_pod, count(*) AS denials FROM flows \
         WHERE verdict = 'denied' GROUP BY dst_namespace, dst_pod \
         ORDER BY denials DESC, dst_namespace, dst_pod LIMIT 20",
    ),
    (
        "distinct_sources",
        "SELECT count(DISTINCT src_ip) AS sources FROM flows",
    ),
];

/// xorshift64: the data is the same on every run.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Heavy-tailed: most flows are small, a few are large.
    fn skewed(&mut self, max: u64) -> u64 {
        let bits = self.below(64.min(max.ilog2() as u64 + 1));
        1 + self.below(1u64 << bits).min(max)
    }
}

struct Pod {
    namespace: String,
    name: String,
    workload: String,
    labels: String,
    ip: String,
    node: usize,
    interface: String,
    /// The port its workload serves.
    port: u16,
}

/// A cluster of 40 namespaces × 8 workloads × 5 pods on 20 nodes, 20,000
/// external addresses, and which (source namespace, destination workload)
/// pairs the policies deny.
struct Cluster {
    nodes: Vec<String>,
    pods: Vec<Pod>,
    external: Vec<String>,
    allow: Vec<[String; 1]>,
    allow_rule: Vec<[String; 1]>,
    deny: Vec<[String; 1]>,
}

const NAMESPACES: usize = 40;
const WORKLOADS: usize = 8;
const REPLICAS: usize = 5;
const PORTS: [u16; 8] = [80, 443, 8080, 5432, 6379, 9090, 50051, 3306];

impl Cluster {
    fn new(rng: &mut Rng) -> Cluster {
        let nodes = (0..20).map(|n| format!("node-{n:02}")).collect();
        let mut pods = Vec::new();
        for ns in 0..NAMESPACES {
            for w in 0..WORKLOADS {
                let kind = [
                    "api", "web", "db", "cache", "worker", "auth", "search", "queue",
                ][w];
                let workload = format!("{kind}-{ns:02}");
                // A Deployment's pods share its pod-template-hash.
                let hash = format!("{:05x}", 0x5c9f8 + ns * WORKLOADS + w);
                for r in 0..REPLICAS {
                    pods.push(Pod {
                        namespace: format!("ns-{ns:02}"),
                        name: format!("{workload}-{hash}-{r}"),
                        labels: format!(
                            "{{\"app\":\"{workload}\",\"pod-template-hash\":\"{hash}\"}}"
                        ),
                        workload: workload.clone(),
                        ip: format!("10.{}.{}.{}", ns, w * REPLICAS + r, 2 + rng.below(250)),
                        node: rng.below(20) as usize,
                        interface: format!("cali{:011x}", rng.next() & 0xfff_ffff_ffff),
                        port: PORTS[w],
                    });
                }
            }
        }
        let external = (0..20_000)
            .map(|_| {
                format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(222),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                )
            })
            .collect();
        let per_ns = |f: &dyn Fn(usize) -> String| -> Vec<[String; 1]> {
            (0..NAMESPACES).map(|ns| [f(ns)]).collect()
        };
        Cluster {
            nodes,
            pods,
            external,
            allow: per_ns(&|ns| format!("ns-{ns:02}/allow-same-app")),
            allow_rule: per_ns(&|ns| format!("ns-{ns:02}/allow-same-app/ingress/0")),
            deny: per_ns(&|ns| format!("ns-{ns:02}/default-deny")),
        }
    }
}

/// One connection's observations: leaving the source pod (egress), arriving
/// at the destination pod (ingress) and, when answered, the replies both ways.
fn connection(c: &Cluster, rng: &mut Rng, time: i64, out: &mut FlowBatchBuilder) {
    let src = &c.pods[rng.below(c.pods.len() as u64) as usize];
    let to_pod = rng.below(100) < 85;
    let dst = to_pod.then(|| &c.pods[rng.below(c.pods.len() as u64) as usize]);
    let dst_ip = match dst {
        Some(d) => d.ip.as_str(),
        None => c.external[rng.below(c.external.len() as u64) as usize].as_str(),
    };
    let dst_ns_index = dst.map(|d| d.namespace[3..].parse::<usize>().expect("ns-NN"));
    // Cross-namespace traffic into a few namespaces is denied.
    let denied = dst
        .is_some_and(|d| d.namespace != src.namespace && dst_ns_index.is_some_and(|n| n % 7 == 3));
    let udp = dst.is_none() && rng.below(4) == 0;
    let (protocol, dst_port) = match (dst, udp) {
        (Some(d), _) => (Protocol::Tcp, d.port),
        (None, true) => (Protocol::Udp, 53),
        (None, false) => (Protocol::Tcp, 443),
    };
    let src_port = 32_768 + rng.below(28_000) as u16;
    let packets = rng.skewed(20_000);
    let bytes = packets * (60 + rng.below(1_400));
    let last_seen = time + rng.below(10_000_000_000) as i64;
    let empty = TextList::EMPTY;
    let (allowed_by, allowed_rules, denied_by) = match dst_ns_index {
        Some(n) if denied => (empty, empty, TextList::Owned(&c.deny[n])),
        Some(n) => (
            TextList::Owned(&c.allow[n]),
            TextList::Owned(&c.allow_rule[n]),
            empty,
        ),
        None => (empty, empty, empty),
    };
    let base = FlowRef {
        time,
        last_seen,
        node: &c.nodes[src.node],
        interface: &src.interface,
        direction: Direction::Egress,
        ip_version: 4,
        src_ip: &src.ip,
        dst_ip,
        src_port,
        dst_port,
        protocol,
        packets,
        bytes,
        tcp_flags: if denied { 0x02 } else { 0x1b },
        is_reply: false,
        src_namespace: Some(&src.namespace),
        src_pod: Some(&src.name),
        src_workload: Some(&src.workload),
        src_workload_kind: Some("Deployment"),
        src_labels: Some(&src.labels),
        src_dns_name: None,
        dst_namespace: dst.map(|d| d.namespace.as_str()),
        dst_pod: dst.map(|d| d.name.as_str()),
        dst_workload: dst.map(|d| d.workload.as_str()),
        dst_workload_kind: dst.map(|_| "Deployment"),
        dst_labels: dst.map(|d| d.labels.as_str()),
        dst_dns_name: dst.is_none().then_some("api.example.com"),
        verdict: Verdict::from(!denied),
        egress_verdict: DirectionVerdict::Allowed,
        ingress_verdict: match (dst, denied) {
            (None, _) => DirectionVerdict::NotApplicable,
            (Some(_), true) => DirectionVerdict::Denied,
            (Some(_), false) => DirectionVerdict::Allowed,
        },
        egress_tier: Some(Tier::Default),
        ingress_tier: Some(if dst.is_some() {
            Tier::NetworkPolicy
        } else {
            Tier::NotApplicable
        }),
        allowed_by,
        allowed_rules,
        denied_by,
        decided_by: empty,
        policy_generation: 42,
        kernel_fate: KernelFate::Forwarded,
        drop_reason: None,
        outcome: Some(if denied {
            Outcome::Dropped
        } else {
            Outcome::Established
        }),
        failure: None,
        enforcement_mismatch: false,
    };
    out.push(&base);
    let Some(dst) = dst else { return };
    let arriving = FlowRef {
        node: &c.nodes[dst.node],
        interface: &dst.interface,
        direction: Direction::Ingress,
        kernel_fate: if denied {
            KernelFate::Dropped
        } else {
            KernelFate::Forwarded
        },
        drop_reason: denied.then_some("NETFILTER_DROP"),
        ..base
    };
    out.push(&arriving);
    if denied {
        return;
    }
    let reply_packets = packets.div_ceil(2);
    out.push(&reply(&arriving, Direction::Egress, reply_packets));
    out.push(&reply(&base, Direction::Ingress, reply_packets));
}

/// The answer to `at`, observed at the same interface.
fn reply<'a>(at: &FlowRef<'a>, direction: Direction, packets: u64) -> FlowRef<'a> {
    FlowRef {
        direction,
        src_ip: at.dst_ip,
        dst_ip: at.src_ip,
        src_port: at.dst_port,
        dst_port: at.src_port,
        packets,
        bytes: packets * 80,
        is_reply: true,
        src_namespace: at.dst_namespace,
        src_pod: at.dst_pod,
        src_workload: at.dst_workload,
        src_workload_kind: at.dst_workload_kind,
        src_labels: at.dst_labels,
        dst_namespace: at.src_namespace,
        dst_pod: at.src_pod,
        dst_workload: at.src_workload,
        dst_workload_kind: at.src_workload_kind,
        dst_labels: at.src_labels,
        ..*at
    }
}

/// RSS of this process (bytes), from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS in /proc/self/status")
        * 1024
}

fn env_flows() -> usize {
    std::env::var("FLOWGATE_BENCH_FLOWS")
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .expect("FLOWGATE_BENCH_FLOWS is a number")
        })
        .unwrap_or(DEFAULT_FLOWS)
}

struct Loaded {
    append: Duration,
    generate: Duration,
    rss_growth: u64,
}

/// Appends `total` flows spread over the last hour, in arrival order.
fn load(store: &FlowStore, total: usize, now: i64) -> Loaded {
    let mut rng = Rng(0xf10f_9a7e);
    let cluster = Cluster::new(&mut rng);
    let start = now - HOUR_NS + 60_000_000_000;
    let span = HOUR_NS - 120_000_000_000;
    let rss_before = rss_bytes();
    let (mut generate, mut append) = (Duration::ZERO, Duration::ZERO);
    let mut made = 0usize;
    let mut b = FlowBatchBuilder::with_capacity(CHUNK + 4);
    while made < total {
        let t = Instant::now();
        while b.len() < CHUNK && made + b.len() < total {
            let at = start + (span as i128 * (made + b.len()) as i128 / total as i128) as i64;
            let jitter = rng.below(2_000_000_000) as i64;
            connection(&cluster, &mut rng, at + jitter, &mut b);
        }
        let batch = b.finish();
        generate += t.elapsed();
        made += batch.num_rows();
        let t = Instant::now();
        store.append_batch(batch).expect("append");
        append += t.elapsed();
        if made % 2_000_000 < CHUNK {
            eprintln!("  stored {made} flows");
        }
    }
    Loaded {
        append,
        generate,
        rss_growth: rss_bytes().saturating_sub(rss_before),
    }
}

fn parquet_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for part in std::fs::read_dir(dir.join("flows")).expect("flows dir") {
        for f in std::fs::read_dir(part.expect("entry").path()).expect("partition") {
            let p = f.expect("entry").path();
            if p.extension().is_some_and(|e| e == "parquet") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs the four queries `RUNS` times each; `place` says where the rows are.
fn run_queries(engine: &QueryEngine, place: &str) -> Vec<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    QUERIES
        .iter()
        .map(|(name, sql)| {
            let mut times = Vec::new();
            let mut answer = Value::Null;
            for _ in 0..RUNS {
                let t = Instant::now();
                let r = rt.block_on(engine.sql(sql)).expect(name);
                times.push(t.elapsed().as_secs_f64() * 1e3);
                answer = r.to_json()["rows"].clone();
            }
            let first = times[0];
            times.sort_by(f64::total_cmp);
            println!(
                "sql {name} ({place}): best {:.1} ms, median {:.1} ms (first {first:.1} ms)",
                times[0],
                times[RUNS / 2]
            );
            json!({"name": name, "sql": sql, "best_ms": times[0], "median_ms": times[RUNS / 2], "rows": answer})
        })
        .collect()
}

fn main() {
    let total = env_flows();
    let (_tmp, dir) = match std::env::var_os("FLOWGATE_BENCH_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.exists() {
                std::fs::remove_dir_all(&d).expect("clearing FLOWGATE_BENCH_DIR");
            }
            (None, d)
        }
        None => {
            let t = tempfile::tempdir().expect("tempdir");
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    // Everything stays in memory until measured, then one flush.
    let store = FlowStore::open(StoreConfig {
        flush_rows: total + 1,
        flush_bytes: u64::MAX,
        ..StoreConfig::new(&dir)
    })
    .expect("open store");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as i64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("flowgate store/SQL benchmark: {total} flows, {cores} cores");
    let loaded = load(&store, total, now);
    let mem = store.stats();
    let rows = mem.memory_rows.max(1) as f64;
    println!(
        "append: {:.0} flows/s (log synced per {CHUNK}-row batch; generating rows took {:.1?} more)",
        total as f64 / loaded.append.as_secs_f64(),
        loaded.generate
    );
    let (mem_store, mem_rss) = (
        mem.memory_bytes as f64 / rows,
        loaded.rss_growth as f64 / rows,
    );
    println!(
        "memory: {mem_store:.1} bytes/flow by the store's accounting, {mem_rss:.1} bytes/flow of RSS growth ({} rows)",
        mem.memory_rows
    );
    let engine = QueryEngine::new(
        store.clone(),
        QueryLimits {
            timeout: Duration::from_secs(600),
            max_rows: 1000,
            ..QueryLimits::default()
        },
    )
    .expect("engine");
    // The dashboard's queries mostly read the newest rows: in memory.
    let memory_queries = run_queries(&engine, "in memory");
    let t = Instant::now();
    store.flush().expect("flush");
    let s = store.stats();
    let disk = s.disk_bytes as f64 / s.disk_rows.max(1) as f64;
    println!(
        "disk: {disk:.1} bytes/flow ({} rows, {} bytes in {} files; flush took {:.1?})",
        s.disk_rows,
        s.disk_bytes,
        s.files,
        t.elapsed()
    );
    let queries = run_queries(&engine, "on disk");
    // (A query over the last hour may lose its oldest rows meanwhile.)
    for (m, d) in memory_queries.iter().zip(&queries) {
        if !m["sql"].as_str().is_some_and(|q| q.contains("now()")) {
            assert_eq!(
                m["rows"], d["rows"],
                "{}: the same answer in memory and on disk",
                m["name"]
            );
        }
    }
    let figures = json!({
        "flows": total,
        "cores": cores,
        "append_flows_per_s": total as f64 / loaded.append.as_secs_f64(),
        "memory_bytes_per_flow_store": mem_store,
        "memory_bytes_per_flow_rss": mem_rss,
        "disk_bytes_per_flow": disk,
        "parquet_files": parquet_files(&dir),
        "queries": queries,
        "memory_queries": memory_queries,
    });
    if let Some(out) = std::env::var_os("FLOWGATE_BENCH_OUT") {
        std::fs::write(&out, serde_json::to_vec_pretty(&figures).expect("json"))
            .expect("writing FLOWGATE_BENCH_OUT");
    }
}
