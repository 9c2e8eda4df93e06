//! What-if over 10,000,000 stored flows (aim: under 2 s). A cluster of 20
//! namespaces × 50 workloads, 20,000 distinct connections observed in the
//! last hour (a third of the rows replies, a tenth to external addresses),
//! then a change that isolates one namespace's ingress. Prints the time to
//! read the distinct connections (one GROUP BY over `flows`), to judge them
//! twice, and the whole what-if, as `POST /api/v1/whatif` runs it.
//! Run: `cargo bench -p flowgate-collector --bench whatif`

use std::time::{Duration, Instant};

use flowgate_policy::{ChangeSet, ClusterObjects};
use flowgate_query::{
    Direction, DirectionVerdict, FlowRow, FlowStore, KernelFate, Protocol, QueryEngine,
    QueryLimits, StoreConfig, Tier, Verdict,
};

const TOTAL: usize = 10_000_000;
const CHUNK: usize = 50_000;
const NAMESPACES: u64 = 20;
const APPS: u64 = 50;
const CONNECTIONS: usize = 20_000;
const PORTS: [u16; 5] = [80, 443, 8080, 5432, 53];

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// A pod end: `(namespace, app)`; `None`: the world.
type End = Option<(u64, u64)>;

struct Conn {
    src: (u64, u64),
    dst: End,
    ext: u64,
    port: u16,
}

fn pod_ip((n, a): (u64, u64)) -> String {
    format!("10.{n}.{a}.1")
}

fn cluster() -> ClusterObjects {
    let mut yaml = String::new();
    for n in 0..NAMESPACES {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
             metadata: {{name: allow-same-namespace, namespace: ns-{n}}}\n\
             spec: {{podSelector: {{}}, ingress: [{{from: [{{podSelector: {{}}}}]}}]}}\n---\n"
        ));
        for a in 0..APPS {
            yaml.push_str(&format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: app-{a}-0, namespace: ns-{n}, labels: {{app: app-{a}}}}}\n\
                 spec: {{containers: [{{name: c}}]}}\nstatus: {{phase: Running, podIPs: [{{ip: {}}}]}}\n---\n",
                pod_ip((n, a))
            ));
        }
    }
    let mut o = ClusterObjects::default();
    o.parse_yaml("bench-cluster", &yaml).unwrap();
    o
}

fn row(c: &Conn, reply: bool, t: i64, rng: &mut Rng) -> FlowRow {
    let labels = |(_, a): (u64, u64)| Some(format!("{{\"app\":\"app-{a}\"}}"));
    let src = (
        pod_ip(c.src),
        Some(format!("ns-{}", c.src.0)),
        Some(format!("app-{}-0", c.src.1)),
        Some(format!("app-{}", c.src.1)),
        labels(c.src),
    );
    let dst = match c.dst {
        Some(d) => (
            pod_ip(d),
            Some(format!("ns-{}", d.0)),
            Some(format!("app-{}-0", d.1)),
            Some(format!("app-{}", d.1)),
            labels(d),
        ),
        None => (format!("203.0.113.{}", c.ext), None, None, None, None),
    };
    let client_port = 30_000 + rng.below(30_000) as u16;
    let (a, b, a_port, b_port) = if reply {
        (dst, src, c.port, client_port)
    } else {
        (src, dst, client_port, c.port)
    };
    FlowRow {
        time: t,
        last_seen: t + 1_000_000_000,
        node: format!("node-{}", rng.below(20)),
        interface: format!("veth{:x}", rng.below(1000)),
        direction: Direction::Egress,
        ip_version: 4,
        src_ip: a.0,
        dst_ip: b.0,
        src_port: a_port,
        dst_port: b_port,
        protocol: Protocol::Tcp,
        packets: 1 + rng.below(100),
        bytes: 60 + rng.below(100_000),
        tcp_flags: 0x18,
        is_reply: reply,
        src_workload_kind: a.1.as_ref().map(|_| "Deployment".into()),
        src_namespace: a.1,
        src_pod: a.2,
        src_workload: a.3,
        src_labels: a.4,
        dst_workload_kind: b.1.as_ref().map(|_| "Deployment".into()),
        dst_namespace: b.1,
        dst_pod: b.2,
        dst_workload: b.3,
        dst_labels: b.4,
        verdict: Verdict::Allowed,
        egress_verdict: DirectionVerdict::Allowed,
        ingress_verdict: DirectionVerdict::Allowed,
        egress_tier: Some(Tier::Default),
        ingress_tier: Some(Tier::NetworkPolicy),
        decided_by: vec![],
        src_dns_name: None,
        dst_dns_name: None,
        outcome: None,
        failure: None,
        allowed_by: vec![],
        allowed_rules: vec![],
        denied_by: vec![],
        policy_generation: 1,
        kernel_fate: KernelFate::Forwarded,
        drop_reason: None,
        enforcement_mismatch: false,
    }
}

/// ns-0 admits only app-1 of its own namespace, on 8080.
const CHANGE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-same-namespace, namespace: ns-0}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {app: app-1}}}]
    ports: [{port: 8080}]
"#;

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = FlowStore::open(StoreConfig {
        flush_rows: 3_000_000,
        flush_bytes: u64::MAX,
        ..StoreConfig::new(dir.path())
    })
    .unwrap();
    let now = flowgate_collector::now_ns();
    let hour = 3_600_000_000_000i64;
    let mut rng = Rng(0x5eed_cafe);
    let conns: Vec<Conn> = (0..CONNECTIONS)
        .map(|_| {
            let src = (rng.below(NAMESPACES), rng.below(APPS));
            // Most traffic stays in its namespace, as in real clusters.
            let ns = if rng.below(4) == 0 {
                rng.below(NAMESPACES)
            } else {
                src.0
            };
            Conn {
                src,
                dst: (rng.below(10) != 0).then(|| (ns, rng.below(APPS))),
                ext: rng.below(250),
                port: PORTS[rng.below(5) as usize],
            }
        })
        .collect();
    println!(
        "flowgate what-if benchmark: {TOTAL} flows over {CONNECTIONS} connections, {} pods, 2 cores",
        NAMESPACES * APPS
    );
    let started = Instant::now();
    for i in 0..TOTAL / CHUNK {
        let rows: Vec<FlowRow> = (0..CHUNK)
            .map(|_| {
                let c = &conns[rng.below(CONNECTIONS as u64) as usize];
                let t =
                    now - hour + 60_000_000_000 + rng.below((hour - 120_000_000_000) as u64) as i64;
                let reply = rng.below(3) == 0;
                row(c, reply, t, &mut rng)
            })
            .collect();
        store.append(&rows).unwrap();
        if (i + 1) % 40 == 0 {
            eprintln!("  stored {} flows", (i + 1) * CHUNK);
        }
    }
    let s = store.stats();
    println!(
        "stored in {:.1?}: {} rows in memory, {} in {} Parquet files",
        started.elapsed(),
        s.memory_rows,
        s.disk_rows,
        s.files
    );

    let engine = QueryEngine::new(
        store.clone(),
        QueryLimits {
            timeout: Duration::from_secs(120),
            max_rows: 1_000_000,
            ..QueryLimits::default()
        },
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let current = cluster();
    let mut change = ChangeSet::default();
    change.add_yaml("change", CHANGE).unwrap();
    let since = now - hour;

    let mut read = Vec::new();
    let mut judge = Vec::new();
    let mut whole = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let t = Instant::now();
        let observed = rt
            .block_on(flowgate_collector::whatif::observed(&engine, since, now))
            .unwrap();
        read.push(t.elapsed());
        let t = Instant::now();
        let w = flowgate_policy::what_if(&current, &change, &observed).unwrap();
        judge.push(t.elapsed());
        let t = Instant::now();
        let report = rt
            .block_on(flowgate_collector::whatif::run(
                &engine, &current, &change, since, now,
            ))
            .unwrap();
        whole.push(t.elapsed());
        assert_eq!(report.connections_judged, w.connections_judged);
        last = Some(report);
    }
    let report = last.unwrap();
    let show = |name: &str, mut v: Vec<Duration>| {
        let first = v.remove(0);
        v.sort();
        println!(
            "{name}: first {first:.2?}, best {:.2?}, median {:.2?}",
            v[0],
            v[v.len() / 2]
        );
        v[v.len() / 2]
    };
    show("read distinct connections (GROUP BY over flows)", read);
    show("judge before and after", judge);
    let median = show(&format!("what-if over {TOTAL} flows"), whole);
    println!(
        "judged {} distinct connections: {} newly denied, {} newly allowed",
        report.connections_judged,
        report.newly_denied.len(),
        report.newly_allowed.len()
    );
    println!(
        "aim: under 2 s over 10,000,000 flows: {} (median {median:.2?})",
        if median < Duration::from_secs(2) {
            "met"
        } else {
            "NOT met"
        }
    );
}
