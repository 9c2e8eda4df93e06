//! 10,000,000 flows in the store, then the dashboard's heaviest question:
//! top talkers by namespace pair and verdict over the last hour. All rows
//! fall inside that hour (the worst case: pruning cannot help). Prints
//! append throughput, query latency, and bytes per flow in memory and on
//! disk. Run: `cargo bench -p flowgate-query --bench groupby`

use std::time::{Duration, Instant};

use flowgate_query::{
    Direction, DirectionVerdict, FlowRow, FlowStore, KernelFate, Outcome, Protocol, QueryEngine,
    QueryLimits, StoreConfig, Tier, Verdict,
};

const TOTAL: usize = 10_000_000;
const CHUNK: usize = 50_000;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn chunk(rng: &mut Rng, start_ns: i64, span_ns: i64) -> Vec<FlowRow> {
    (0..CHUNK)
        .map(|_| {
            let (sn, dn) = (rng.below(100), rng.below(100));
            let (sp, dp) = (rng.below(100), rng.below(100));
            let external = rng.below(10) == 0;
            let denied = rng.below(5) == 0;
            let t = start_ns + rng.below(span_ns as u64) as i64;
            let ns = |n: u64| Some(format!("ns-{n}"));
            FlowRow {
                time: t,
                last_seen: t + 1_000_000_000,
                node: format!("node-{}", rng.below(20)),
                interface: format!("veth{:x}", rng.below(10_000)),
                direction: if rng.below(2) == 0 {
                    Direction::Ingress
                } else {
                    Direction::Egress
                },
                ip_version: 4,
                src_ip: format!("10.{}.{}.{}", sn, sp, rng.below(250)),
                dst_ip: if external {
                    format!("203.0.113.{}", rng.below(250))
                } else {
                    format!("10.{dn}.{dp}.1")
                },
                src_port: 30000 + rng.below(30000) as u16,
                dst_port: [80, 443, 8080, 5432, 53][rng.below(5) as usize],
                protocol: Protocol::Tcp,
                packets: 1 + rng.below(100),
                bytes: 60 + rng.below(100_000),
                tcp_flags: 0x18,
                is_reply: false,
                src_namespace: ns(sn),
                src_pod: Some(format!("app-{sp}-{}", rng.below(10))),
                src_workload: Some(format!("app-{sp}")),
                src_workload_kind: Some("Deployment".into()),
                src_labels: Some(format!("{{\"app\":\"app-{sp}\"}}")),
                dst_namespace: if external { None } else { ns(dn) },
                dst_pod: if external {
                    None
                } else {
                    Some(format!("app-{dp}-0"))
                },
                dst_workload: if external {
                    None
                } else {
                    Some(format!("app-{dp}"))
                },
                dst_workload_kind: if external {
                    None
                } else {
                    Some("Deployment".into())
                },
                dst_labels: if external {
                    None
                } else {
                    Some(format!("{{\"app\":\"app-{dp}\"}}"))
                },
                verdict: Verdict::from(!denied),
                egress_verdict: DirectionVerdict::Allowed,
                ingress_verdict: if denied {
                    DirectionVerdict::Denied
                } else {
                    DirectionVerdict::Allowed
                },
                egress_tier: Some(Tier::Default),
                ingress_tier: Some(Tier::NetworkPolicy),
                decided_by: vec![],
                src_dns_name: None,
                dst_dns_name: if external {
                    Some("api.example.com".into())
                } else {
                    None
                },
                outcome: Some(Outcome::Established),
                failure: None,
                allowed_by: if denied {
                    vec![]
                } else {
                    vec![format!("ns-{dn}/allow-{dp}")]
                },
                allowed_rules: if denied {
                    vec![]
                } else {
                    vec![format!("ns-{dn}/allow-{dp}/ingress/0")]
                },
                denied_by: if denied {
                    vec![format!("ns-{dn}/default-deny")]
                } else {
                    vec![]
                },
                policy_generation: 7,
                kernel_fate: if denied {
                    KernelFate::Dropped
                } else {
                    KernelFate::Forwarded
                },
                drop_reason: if denied {
                    Some("NETFILTER_DROP".into())
                } else {
                    None
                },
                enforcement_mismatch: rng.below(50) == 0,
            }
        })
        .collect()
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        flush_rows: 3_000_000,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    let mut rng = Rng(0xf10f_9a7e);
    println!("flowgate-query benchmark: {TOTAL} flows, 2 cores");

    let (mut gen_time, mut append_time) = (Duration::ZERO, Duration::ZERO);
    for i in 0..TOTAL / CHUNK {
        let t = Instant::now();
        let rows = chunk(
            &mut rng,
            now - hour + 60_000_000_000,
            hour - 120_000_000_000,
        );
        gen_time += t.elapsed();
        let t = Instant::now();
        store.append(&rows).unwrap();
        append_time += t.elapsed();
        if (i + 1) % 40 == 0 {
            eprintln!("  stored {} flows", (i + 1) * CHUNK);
        }
    }
    let s = store.stats();
    println!(
        "append: {:.0} flows/s (write-ahead sync per {CHUNK}-row batch, Parquet flush every 3M rows; row generation excluded: {:.1?})",
        TOTAL as f64 / append_time.as_secs_f64(),
        gen_time
    );
    println!(
        "stored: {} in memory ({:.0} bytes/flow), {} on disk in {} files ({:.1} bytes/flow)",
        s.memory_rows,
        s.memory_bytes as f64 / s.memory_rows.max(1) as f64,
        s.disk_rows,
        s.files,
        s.disk_bytes as f64 / s.disk_rows.max(1) as f64
    );

    let engine = QueryEngine::new(
        store.clone(),
        QueryLimits {
            timeout: Duration::from_secs(120),
            max_rows: 1000,
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sql = "SELECT src_namespace, dst_namespace, verdict, count(*) AS flows, sum(bytes) AS bytes \
               FROM flows WHERE time > now() - INTERVAL '1 hour' \
               GROUP BY src_namespace, dst_namespace, verdict ORDER BY bytes DESC LIMIT 20";
    let mut times = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        let r = rt.block_on(engine.sql(sql)).unwrap();
        times.push(t.elapsed());
        assert_eq!(r.num_rows(), 20);
    }
    let first = times.remove(0);
    times.sort();
    println!(
        "top talkers over the last hour ({TOTAL} flows scanned): first {first:.2?}, best {:.2?}, median {:.2?}",
        times[0],
        times[times.len() / 2]
    );
    let r = rt
        .block_on(
            engine.sql("SELECT count(*) AS c FROM flows WHERE time > now() - INTERVAL '1 hour'"),
        )
        .unwrap();
    println!("check: {}", r.to_json()["rows"]);
}
