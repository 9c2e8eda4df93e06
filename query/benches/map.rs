//! The map's data query at the scale: 10,000,000 stored flows
//! (observations at both ends, replies) of 10,000 distinct connections
//! between 1,000 pods in 40 namespaces, all in the last hour (pruning
//! cannot help). Prints the time of `GET /api/v1/map`'s query at the
//! namespace level and with one namespace expanded (aim: under 1 s).
//! Run: `cargo bench -p flowgate-query --bench map`

use std::time::{Duration, Instant};

use flowgate_query::filter;
use flowgate_query::map::MapLevel;
use flowgate_query::{
    Direction, DirectionVerdict, FlowRow, FlowStore, KernelFate, Protocol, QueryEngine,
    QueryLimits, StoreConfig, Tier, Verdict,
};

const TOTAL: usize = 10_000_000;
const CONNECTIONS: usize = 10_000;
const CHUNK: usize = 50_000;
const NAMESPACES: u64 = 40;
const PODS_PER_NAMESPACE: u64 = 25;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A pod: (namespace, workload, pod index) → its identity columns.
struct Pod {
    ip: String,
    namespace: String,
    workload: String,
    pod: String,
}

fn pod(n: u64) -> Pod {
    let (ns, i) = (n / PODS_PER_NAMESPACE, n % PODS_PER_NAMESPACE);
    Pod {
        ip: format!("10.60.{ns}.{}", 10 + i),
        namespace: format!("team-{ns:02}"),
        workload: format!("app-{}", i / 5),
        pod: format!("app-{}-{i}", i / 5),
    }
}

/// One connection: client pod, server pod (None: outside), client port,
/// denied.
struct Connection {
    client: u64,
    server: Option<u64>,
    port: u16,
    denied: bool,
}

fn connections(rng: &mut Rng) -> Vec<Connection> {
    (0..CONNECTIONS)
        .map(|i| {
            let client = rng.below(NAMESPACES * PODS_PER_NAMESPACE);
            let same_ns = rng.below(10) < 7;
            let server = match rng.below(10) {
                0 => None,
                _ if same_ns => Some(
                    client / PODS_PER_NAMESPACE * PODS_PER_NAMESPACE
                        + rng.below(PODS_PER_NAMESPACE),
                ),
                _ => Some(rng.below(NAMESPACES * PODS_PER_NAMESPACE)),
            };
            let denied = server
                .is_some_and(|s| s / PODS_PER_NAMESPACE != client / PODS_PER_NAMESPACE)
                && rng.below(3) > 0;
            Connection {
                client,
                server,
                port: 20_000 + (i % 40_000) as u16,
                denied,
            }
        })
        .collect()
}

fn observation(rng: &mut Rng, c: &Connection, time: i64) -> FlowRow {
    let client = pod(c.client);
    let server = c.server.map(pod);
    let reply = !c.denied && rng.below(3) == 0;
    let direction = if c.server.is_none() || rng.below(2) == 0 {
        Direction::Egress
    } else {
        Direction::Ingress
    };
    let dropped = c.denied && (direction == Direction::Ingress) != reply;
    let server_ip = server
        .as_ref()
        .map_or_else(|| format!("203.0.113.{}", c.client % 200), |s| s.ip.clone());
    let ends = [
        (client.ip.clone(), c.port, Some(&client)),
        (server_ip, 8080, server.as_ref()),
    ];
    let (src, dst) = if reply {
        (&ends[1], &ends[0])
    } else {
        (&ends[0], &ends[1])
    };
    let id = |p: Option<&Pod>, f: fn(&Pod) -> &String| p.map(|p| f(p).clone());
    FlowRow {
        time,
        last_seen: time + 1_000_000_000,
        node: format!("node-{}", c.client % 8),
        interface: format!("veth{:x}", c.client),
        direction,
        ip_version: 4,
        src_ip: src.0.clone(),
        dst_ip: dst.0.clone(),
        src_port: src.1,
        dst_port: dst.1,
        protocol: Protocol::Tcp,
        packets: 1 + rng.below(50),
        bytes: 60 + rng.below(50_000),
        tcp_flags: 0x18,
        is_reply: reply,
        src_namespace: id(src.2, |p| &p.namespace),
        src_pod: id(src.2, |p| &p.pod),
        src_workload: id(src.2, |p| &p.workload),
        src_workload_kind: src.2.map(|_| "Deployment".into()),
        src_labels: src.2.map(|_| "{}".into()),
        src_dns_name: None,
        dst_namespace: id(dst.2, |p| &p.namespace),
        dst_pod: id(dst.2, |p| &p.pod),
        dst_workload: id(dst.2, |p| &p.workload),
        dst_workload_kind: dst.2.map(|_| "Deployment".into()),
        dst_labels: dst.2.map(|_| "{}".into()),
        dst_dns_name: None,
        verdict: Verdict::from(!c.denied),
        egress_verdict: DirectionVerdict::Allowed,
        ingress_verdict: if c.denied {
            DirectionVerdict::Denied
        } else {
            DirectionVerdict::Allowed
        },
        egress_tier: Some(Tier::Default),
        ingress_tier: Some(Tier::NetworkPolicy),
        allowed_by: vec![],
        allowed_rules: vec![],
        denied_by: if c.denied {
            vec!["team/default-deny".into()]
        } else {
            vec![]
        },
        decided_by: vec![],
        policy_generation: 1,
        kernel_fate: if dropped {
            KernelFate::Dropped
        } else {
            KernelFate::Forwarded
        },
        drop_reason: dropped.then(|| "NETFILTER_DROP".into()),
        outcome: None,
        failure: None,
        enforcement_mismatch: false,
    }
}

fn timed(
    rt: &tokio::runtime::Runtime,
    engine: &QueryEngine,
    level: &MapLevel,
    since: i64,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::new();
    let mut edges = 0;
    for _ in 0..4 {
        let window = filter::col("time").gt_eq(filter::timestamp(since));
        let t = Instant::now();
        let r = rt.block_on(engine.map(level, Some(window))).unwrap();
        times.push(t.elapsed());
        edges = r.num_rows();
    }
    (times, edges)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        flush_rows: 3_000_000,
        flush_bytes: u64::MAX,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let hour = 3_600_000_000_000i64;
    let mut rng = Rng(0x6d61_7073);
    let conns = connections(&mut rng);
    println!("flowgate map benchmark: {TOTAL} flows of {CONNECTIONS} connections, 2 cores");
    for i in 0..TOTAL / CHUNK {
        let rows: Vec<FlowRow> = (0..CHUNK)
            .map(|_| {
                let c = &conns[rng.below(CONNECTIONS as u64) as usize];
                let t =
                    now - hour + 60_000_000_000 + rng.below((hour - 120_000_000_000) as u64) as i64;
                observation(&mut rng, c, t)
            })
            .collect();
        store.append(&rows).unwrap();
        if (i + 1) % 40 == 0 {
            eprintln!("  stored {} flows", (i + 1) * CHUNK);
        }
    }
    store.wait_idle();
    let engine = QueryEngine::new(
        store.clone(),
        QueryLimits {
            timeout: Duration::from_secs(300),
            max_rows: 100_000,
            ..QueryLimits::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let since = now - hour;
    for (name, level) in [
        ("namespace level", MapLevel::Namespace),
        (
            "team-07 expanded",
            MapLevel::Workload {
                namespace: "team-07".into(),
            },
        ),
    ] {
        let (mut times, edges) = timed(&rt, &engine, &level, since);
        let first = times.remove(0);
        times.sort();
        println!(
            "map query, {name} ({edges} edges from {TOTAL} flows): first {first:.2?}, best {:.2?}, median {:.2?} (aim: under 1 s)",
            times[0],
            times[times.len() / 2]
        );
    }
    let r = rt
        .block_on(engine.sql(
            "SELECT count(*) AS connection_rows, count(DISTINCT src_port) AS connections FROM connections",
        ))
        .unwrap();
    println!("check: {}", r.to_json()["rows"]);
}
