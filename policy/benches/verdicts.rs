//! Verdicts per second over a generated cluster: 10,000 pods in 100
//! namespaces with 1,000 policies, the same plus 100 cluster-scoped
//! policies in both tiers (AdminNetworkPolicy, BaselineAdminNetworkPolicy,
//! ClusterNetworkPolicy Admin and Baseline; the aim is above 2,000,000
//! uncached verdicts/s), and a 10,000-policy variant to show that
//! unrelated policies cost nothing. One thread; prints figures.
//!
//! Run: `cargo bench -p flowgate-policy --bench verdicts`

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use flowgate_policy::{Cluster, ClusterObjects, Endpoint, Protocol, VerdictCache};

const NAMESPACES: usize = 100;
const PODS_PER_NS: usize = 100;
const APPS_PER_NS: usize = 10;

/// Deterministic xorshift, so every run measures the same workload.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A cluster in YAML, as a user would write it: per namespace a
/// default-deny, then allow rules mixing pod, namespace and ipBlock peers,
/// numeric, named and ranged ports, and matchExpressions.
fn cluster_yaml(policies_per_ns: usize, unrelated_per_ns: usize) -> String {
    let mut y = String::new();
    for n in 0..NAMESPACES {
        let team = n % 7;
        writeln!(y, "---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: ns-{n}, labels: {{team: t{team}, env: {}}}}}", if n % 3 == 0 { "prod" } else { "dev" }).unwrap();
        for p in 0..PODS_PER_NS {
            let app = p % APPS_PER_NS;
            let ip = Ipv4Addr::new(10, (n / 256) as u8 + 1, (n % 256) as u8, p as u8 + 1);
            writeln!(y, "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: app-{app}-{p}, namespace: ns-{n}, labels: {{app: app-{app}, tier: {}, version: v{}}}}}\nspec: {{containers: [{{name: c, image: x, ports: [{{name: http, containerPort: {}}}, {{name: metrics, containerPort: 9090}}]}}]}}\nstatus: {{phase: Running, podIP: {ip}}}",
                if app < 3 { "front" } else { "back" }, p % 3, 8000 + app).unwrap();
        }
        for k in 0..policies_per_ns {
            let name = format!("pol-{k}");
            let body = match k % 10 {
                0 => "  podSelector: {}\n  policyTypes: [Ingress]".to_string(),
                1 => format!("  podSelector: {{matchLabels: {{app: app-{}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{tier: front}}}}}}], ports: [{{port: http}}]}}]", k % APPS_PER_NS),
                2 => format!("  podSelector: {{matchLabels: {{app: app-{}}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchLabels: {{team: t{}}}}}, podSelector: {{matchExpressions: [{{key: version, operator: In, values: [v0, v1]}}]}}}}], ports: [{{port: 8000, endPort: 8009}}]}}]", (k / 10) % APPS_PER_NS, team),
                3 => "  podSelector: {matchExpressions: [{key: tier, operator: In, values: [back]}]}\n  ingress: [{from: [{namespaceSelector: {matchLabels: {env: prod}}}], ports: [{port: metrics}]}]".to_string(),
                4 => format!("  podSelector: {{matchLabels: {{app: app-{}}}}}\n  policyTypes: [Egress]\n  egress: [{{to: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{tier: back}}}}}}]}}, {{to: [{{ipBlock: {{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}}}}], ports: [{{port: 443}}]}}]", k % APPS_PER_NS),
                5 => "  podSelector: {matchLabels: {tier: front}}\n  ingress: [{from: [{ipBlock: {cidr: 192.168.0.0/16}}]}, {from: [{podSelector: {}}]}]".to_string(),
                6 => format!("  podSelector: {{matchExpressions: [{{key: version, operator: NotIn, values: [v2]}}]}}\n  ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: team, operator: In, values: [t{}, t{}]}}]}}}}], ports: [{{port: 8080}}, {{protocol: UDP, port: 53}}]}}]", team, (team + 1) % 7),
                7 => format!("  podSelector: {{matchLabels: {{app: app-{}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{app: app-{}}}}}}}]}}]", k % APPS_PER_NS, (k + 1) % APPS_PER_NS),
                8 => "  podSelector: {matchExpressions: [{key: tier, operator: Exists}]}\n  policyTypes: [Egress]\n  egress: [{to: [{namespaceSelector: {matchLabels: {env: prod}}}]}, {ports: [{protocol: UDP, port: 53}]}]".to_string(),
                _ => format!("  podSelector: {{matchLabels: {{app: app-{}, version: v0}}}}\n  ingress: [{{from: [{{namespaceSelector: {{matchExpressions: [{{key: env, operator: DoesNotExist}}]}}}}]}}]", k % APPS_PER_NS),
            };
            writeln!(y, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: ns-{n}}}\nspec:\n{body}").unwrap();
        }
        // Policies for workloads that have no pods (yet): they must cost nothing.
        for k in 0..unrelated_per_ns {
            writeln!(y, "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: unrelated-{k}, namespace: ns-{n}}}\nspec:\n  podSelector: {{matchLabels: {{app: unused-{k}}}}}\n  ingress: [{{from: [{{podSelector: {{matchLabels: {{tier: front}}}}}}]}}]").unwrap();
        }
    }
    y
}

/// 100 cluster-scoped policies: 60 Admin (v1alpha1 AdminNetworkPolicy and
/// v1alpha2 ClusterNetworkPolicy alternating), 39 Baseline
/// ClusterNetworkPolicies and the BaselineAdminNetworkPolicy. Subjects are
/// chosen by team, so every pod is the subject of ~14 of them, and most
/// rules do not match: a verdict walks them all (the costly case).
fn tier_policies_yaml() -> String {
    let mut y = String::new();
    for k in 0..60 {
        let team = k % 7;
        let app = k % APPS_PER_NS;
        let priority = (k * 16) % 1000;
        if k % 2 == 0 {
            writeln!(y, "---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: anp-{k}}}\nspec:\n  priority: {priority}\n  subject: {{namespaces: {{matchLabels: {{team: t{team}}}}}}}\n  ingress:\n  - {{name: deny-dev-db, action: Deny, from: [{{namespaces: {{matchLabels: {{env: dev}}}}}}], ports: [{{portNumber: {{port: 5432}}}}]}}\n  - {{name: pass-app, action: Pass, from: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: app-{app}}}}}}}}}], ports: [{{portRange: {{start: 8000, end: 8001}}}}]}}\n  egress:\n  - {{name: allow-docs, action: Allow, to: [{{networks: [198.51.100.0/24]}}], ports: [{{portNumber: {{port: 443}}}}]}}\n  - {{name: deny-infra, action: Deny, to: [{{nodes: {{matchLabels: {{role: infra}}}}}}]}}").unwrap();
        } else {
            writeln!(y, "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: cnp-admin-{k}}}\nspec:\n  tier: Admin\n  priority: {priority}\n  subject: {{pods: {{namespaceSelector: {{matchLabels: {{team: t{team}}}}}, podSelector: {{matchExpressions: [{{key: app, operator: NotIn, values: [app-{app}]}}]}}}}}}\n  ingress:\n  - {{name: deny-metrics, action: Deny, from: [{{namespaces: {{matchLabels: {{env: staging}}}}}}], protocols: [{{tcp: {{destinationPort: {{number: 9090}}}}}}]}}\n  egress:\n  - {{name: pass-dns, action: Pass, to: [{{networks: [10.255.0.0/16]}}], protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}]}}").unwrap();
        }
    }
    for k in 0..39 {
        let team = k % 7;
        writeln!(y, "---\napiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata: {{name: cnp-baseline-{k}}}\nspec:\n  tier: Baseline\n  priority: {k}\n  subject: {{pods: {{namespaceSelector: {{matchLabels: {{team: t{team}}}}}, podSelector: {{matchLabels: {{tier: back}}}}}}}}\n  ingress:\n  - {{name: deny-staging, action: Deny, from: [{{namespaces: {{matchLabels: {{env: staging}}}}}}], protocols: [{{tcp: {{destinationPort: {{range: {{start: 9000, end: 9100}}}}}}}}]}}\n  egress:\n  - {{name: accept-http, action: Accept, to: [{{pods: {{namespaceSelector: {{matchLabels: {{env: staging}}}}, podSelector: {{}}}}}}], protocols: [{{destinationNamedPort: http}}]}}").unwrap();
    }
    y.push_str("---\napiVersion: policy.networking.k8s.io/v1alpha1\nkind: BaselineAdminNetworkPolicy\nmetadata: {name: default}\nspec:\n  subject: {namespaces: {}}\n  ingress: [{name: deny-world-team, action: Deny, from: [{namespaces: {matchLabels: {team: none}}}]}]\n");
    y
}

struct Query {
    src: Endpoint,
    dst: Endpoint,
    port: u16,
    protocol: Protocol,
}

fn queries(cluster: &Cluster, n: usize, rng: &mut Rng) -> Vec<Query> {
    let pods: Vec<_> = cluster.pods().map(|(id, _)| id).collect();
    let ports = [80, 443, 8000, 8003, 8080, 9090, 53, 5432];
    (0..n)
        .map(|i| {
            let pod_ep = |rng: &mut Rng| cluster.pod_endpoint(pods[rng.below(pods.len())], None);
            let (src, dst) = match i % 10 {
                // one in ten talks to or from the world
                0 => (
                    pod_ep(rng),
                    cluster.endpoint_for_ip(IpAddr::V4(Ipv4Addr::new(
                        203,
                        0,
                        113,
                        rng.below(250) as u8,
                    ))),
                ),
                1 => (
                    cluster.endpoint_for_ip(IpAddr::V4(Ipv4Addr::new(
                        192,
                        168,
                        1,
                        rng.below(250) as u8,
                    ))),
                    pod_ep(rng),
                ),
                _ => (pod_ep(rng), pod_ep(rng)),
            };
            let port = ports[rng.below(ports.len())];
            let protocol = if port == 53 {
                Protocol::Udp
            } else {
                Protocol::Tcp
            };
            Query {
                src,
                dst,
                port,
                protocol,
            }
        })
        .collect()
}

/// CPU time this thread has run: on a machine shared with other work, the
/// rate on one core is work over this, not over the wall clock (which also
/// counts the time the thread waited for a core).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn per_sec(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn bench(policies_per_ns: usize, unrelated_per_ns: usize, tiers: bool) {
    let t = Instant::now();
    let mut yaml = cluster_yaml(policies_per_ns, unrelated_per_ns);
    if tiers {
        yaml.push_str(&tier_policies_yaml());
    }
    let mut objects = ClusterObjects::default();
    objects
        .parse_yaml("generated", &yaml)
        .expect("generated YAML parses");
    let parsed = t.elapsed();
    let t = Instant::now();
    let cluster = Cluster::build(&objects, 1).expect("generated cluster is valid");
    let built = t.elapsed();
    println!(
        "cluster: {} pods, {} namespaces, {} policies, {} cluster policies (parse {:.2?}, compile {:.2?})",
        cluster.pod_count(),
        cluster.namespaces().count(),
        cluster.policies().count(),
        cluster.cluster_policies().count(),
        parsed,
        built
    );

    let mut rng = Rng(0x5eed_f10f_9a7e);
    let qs = queries(&cluster, 2_000_000, &mut rng);
    let allowed = qs
        .iter()
        .filter(|q| cluster.verdict(&q.src, &q.dst, q.port, q.protocol).allowed)
        .count();
    println!(
        "  workload: {} queries, {:.1}% allowed",
        qs.len(),
        100.0 * allowed as f64 / qs.len() as f64
    );

    // Uncached: every verdict computed from the index. Best of three, by
    // the thread's CPU time (the aim is per core); wall time beside it.
    let (mut best_cpu, mut best_wall) = (f64::MAX, f64::MAX);
    for _ in 0..3 {
        let (t, c) = (Instant::now(), thread_cpu());
        for q in &qs {
            black_box(cluster.verdict(black_box(&q.src), black_box(&q.dst), q.port, q.protocol));
        }
        best_cpu = best_cpu.min((thread_cpu() - c).as_secs_f64());
        best_wall = best_wall.min(t.elapsed().as_secs_f64());
    }
    let rate = qs.len() as f64 / best_cpu;
    println!(
        "  uncached: {:>12.0} verdicts/s on one core ({:.0} ns/verdict of CPU time; by wall clock {:.0}/s){}",
        rate,
        best_cpu * 1e9 / qs.len() as f64,
        qs.len() as f64 / best_wall,
        if tiers {
            if rate >= 2_000_000.0 {
                " — above the 2,000,000/s aim"
            } else {
                " — BELOW the 2,000,000/s aim"
            }
        } else {
            ""
        }
    );

    // Cached: the collector's steady state, a working set of connections
    // seen over and over (50,000 distinct keys).
    let mut cache = VerdictCache::new(1 << 20);
    let hot = &qs[..50_000];
    for q in hot {
        cache.verdict(&cluster, &q.src, &q.dst, q.port, q.protocol);
    }
    let rounds = 40;
    let t = Instant::now();
    for _ in 0..rounds {
        for q in hot {
            black_box(
                cache
                    .verdict(
                        &cluster,
                        black_box(&q.src),
                        black_box(&q.dst),
                        q.port,
                        q.protocol,
                    )
                    .allowed,
            );
        }
    }
    let d = t.elapsed();
    let s = cache.stats();
    println!(
        "  cached:   {:>12.0} verdicts/s ({:.1} ns/verdict; hits {}, misses {})",
        per_sec(hot.len() * rounds, d),
        d.as_secs_f64() * 1e9 / (hot.len() * rounds) as f64,
        s.hits,
        s.misses
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument picks the cases
    // whose name contains it (networkpolicy, tiers, scaling), e.g. to
    // profile one of them alone.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wanted = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    println!("flowgate-policy verdict benchmark (one thread)");
    if wanted("networkpolicy") {
        println!("networkpolicy: NetworkPolicies only");
        bench(10, 0, false);
    }
    if wanted("tiers") {
        println!(
            "tiers: with 100 cluster policies in both tiers (60 Admin, 40 Baseline), same queries"
        );
        bench(10, 0, true);
    }
    if wanted("scaling") {
        println!("scaling: plus 9,000 policies selecting no running pod, same queries");
        bench(10, 90, false);
    }
}
