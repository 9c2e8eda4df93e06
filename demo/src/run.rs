//! `flowgate demo` end to end: the topology, the nftables "CNI", echo
//! servers, the real collector and probe as child processes of the same
//! `flowgate` binary, and a traffic generator, all undone by [`Demo`]'s drop.
//!
//! ```text
//!  host netns:  collector (gRPC+mTLS on 169.254.77.1:4245, HTTP/dashboard on --http-listen)
//!                  ▲ fg-uplink (veth, link-local /30)
//!  fg-node:     probe (eBPF on fg-v*, fg-ext; metrics on 169.254.77.2:9465), nft table
//!                  │ fg-v0 … fg-vN, fg-ext
//!  fg-pod-*, fg-ext: servers and clients
//! ```
//! The probe runs inside the node namespace (entered between fork and exec,
//! so it keeps the host's mounts: tracefs, bpffs); the collector stays in
//! the host's so the dashboard is reachable on 127.0.0.1. The probe proves
//! its node with a client certificate and the API wants the token the demo
//! writes to `--api-token-file` ([`crate::trust`]).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use flowgate_proto::DEFAULT_GRPC_PORT;

use crate::DemoError;
use crate::changes::{Schedule, write_cluster};
use crate::nft::{self, Enforcement};
use crate::scenario::Placed;
use crate::topology::{self, NODE_NS, Topology, UPLINK_HOST_IP, UPLINK_NODE_IP};
use crate::traffic::{Servers, attempt_all};

/// The probe's metrics port inside the node namespace.
pub const PROBE_METRICS_PORT: u16 = 9465;
/// How long the collector and the probe get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to run the demo.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// The `flowgate` binary to start `collector` and `probe` from.
    pub exe: PathBuf,
    pub http_listen: SocketAddr,
    pub enforcement: Enforcement,
    /// Time between two rounds of the scenario's traffic.
    pub interval: Duration,
    /// The collector's store; a fresh temporary directory when `None`.
    pub data_dir: Option<PathBuf>,
    /// Where the API token is written (removed on exit).
    pub token_file: PathBuf,
}

/// Counters of the traffic generator.
#[derive(Debug, Default)]
pub struct TrafficStats {
    pub rounds: AtomicU64,
    pub attempts: AtomicU64,
    pub got_through: AtomicU64,
}

/// A running demo. Dropping it stops everything and removes what it created.
pub struct Demo {
    placed: Arc<Placed>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<TrafficStats>,
    generator: Option<JoinHandle<()>>,
    probe: Option<Child>,
    collector: Option<Child>,
    servers: Option<Servers>,
    topology: Option<Topology>,
    workdir: PathBuf,
    http_addr: SocketAddr,
    enforcement: Enforcement,
    /// The scenario's `changes`, timed from the start of traffic.
    schedule: Schedule,
    started: Instant,
    token: String,
    token_file: PathBuf,
}

impl std::fmt::Debug for Demo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Demo")
            .field("http_addr", &self.http_addr)
            .finish_non_exhaustive()
    }
}

impl Demo {
    /// Builds everything and waits until the collector and probe are ready.
    pub fn start(placed: Placed, config: &DemoConfig) -> Result<Demo, DemoError> {
        topology::preflight()?;
        let removed = topology::remove_leftovers()?;
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of an earlier run");
        }
        remove_stale_workdirs();
        let workdir = std::env::temp_dir().join(format!("{WORKDIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(workdir.join("cluster"))
            .map_err(DemoError::io(format!("creating {}", workdir.display())))?;
        let mut demo = Demo {
            placed: Arc::new(placed),
            stop: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(TrafficStats::default()),
            generator: None,
            probe: None,
            collector: None,
            servers: None,
            topology: None,
            schedule: Schedule::new(workdir.join("cluster")),
            workdir,
            http_addr: config.http_listen,
            enforcement: config.enforcement,
            started: Instant::now(),
            token: crate::trust::new_token()?,
            token_file: config.token_file.clone(),
        };
        let placed = demo.placed.clone();

        let mut topo = Topology::build(&placed)?;
        topo.add_uplink()?;
        topo.load_nft(&ruleset(&placed, &placed.cluster, config.enforcement))?;
        demo.topology = Some(topo);
        demo.servers = Some(Servers::start(&placed)?);

        write_cluster(&demo.workdir.join("cluster"), &placed.cluster_yaml)?;
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(|| demo.workdir.join("store"));
        let grpc = SocketAddr::from((UPLINK_HOST_IP, DEFAULT_GRPC_PORT));
        let certs = crate::trust::make_certs(
            &config.exe,
            &demo.workdir.join("certs"),
            &UPLINK_HOST_IP.to_string(),
            crate::scenario::NODE_NAME,
        )?;
        crate::trust::write_token(&demo.token_file, &demo.token)?;
        let mut collector = Command::new(&config.exe);
        collector
            .arg("collector")
            .arg("--cluster")
            .arg(demo.workdir.join("cluster"));
        collector
            .arg("--grpc-listen")
            .arg(grpc.to_string())
            .arg("--http-listen")
            .arg(config.http_listen.to_string());
        collector.arg("--data-dir").arg(&data_dir);
        collector
            .arg("--tls-cert")
            .arg(&certs.collector_cert)
            .arg("--tls-key")
            .arg(&certs.collector_key)
            .arg("--client-ca")
            .arg(&certs.ca)
            .arg("--api-token-file")
            .arg(&demo.token_file);
        die_with_parent(&mut collector);
        demo.collector = Some(collector.spawn().map_err(DemoError::io(format!(
            "starting {} collector",
            config.exe.display()
        )))?);
        wait_http(
            &mut demo.collector,
            "collector",
            config.http_listen,
            "/readyz",
        )?;

        let netns = open_netns(NODE_NS)?;
        let metrics = SocketAddr::from((UPLINK_NODE_IP, PROBE_METRICS_PORT));
        let mut probe = Command::new(&config.exe);
        probe
            .arg("probe")
            .arg("--collector")
            .arg(format!("https://{grpc}"))
            .arg("--tls-ca")
            .arg(&certs.ca)
            .arg("--tls-cert")
            .arg(&certs.probe_cert)
            .arg("--tls-key")
            .arg(&certs.probe_key);
        probe.arg("--interfaces").arg(format!(
            "{}*,{}",
            topology::POD_LINK_PREFIX,
            topology::EXTERNAL_LINK
        ));
        probe
            .arg("--export-interval")
            .arg("1s")
            .arg("--metrics-listen")
            .arg(metrics.to_string());
        probe.arg("--node-name").arg(crate::scenario::NODE_NAME);
        let fd = netns.as_raw_fd();
        // SAFETY: between fork and exec only setns (async-signal-safe) runs,
        // on an fd that stays open in the parent until spawn returns.
        unsafe {
            probe.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        demo.probe = Some(probe.spawn().map_err(DemoError::io(format!(
            "starting {} probe in {NODE_NS}",
            config.exe.display()
        )))?);
        drop(netns);
        wait_http(&mut demo.probe, "probe", metrics, "/healthz")?;

        let (stop, stats, placed, interval) = (
            demo.stop.clone(),
            demo.stats.clone(),
            demo.placed.clone(),
            config.interval,
        );
        demo.generator = Some(
            std::thread::Builder::new()
                .name("traffic".into())
                .spawn(move || generate(&placed, &stop, &stats, interval))
                .map_err(DemoError::io("spawning the traffic generator"))?,
        );
        demo.started = Instant::now();
        Ok(demo)
    }

    /// Applies the scenario's changes that are due: the collector sees the
    /// new cluster file, and nftables enforces the new policies. Returns
    /// what changed.
    pub fn apply_due_changes(&mut self) -> Result<Vec<String>, DemoError> {
        let placed = self.placed.clone();
        let due = self.schedule.apply_due(&placed, self.started.elapsed())?;
        for stage in &due {
            if let Some(topo) = &self.topology {
                topo.load_nft(&ruleset(&placed, &stage.cluster, self.enforcement))?;
            }
        }
        Ok(due.iter().map(|s| s.description.clone()).collect())
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The file holding the API token.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    pub fn placed(&self) -> &Placed {
        &self.placed
    }

    /// Whether the collector and probe still run (`Err` names the one that stopped).
    pub fn check_children(&mut self) -> Result<(), DemoError> {
        for (name, child) in [
            ("collector", &mut self.collector),
            ("probe", &mut self.probe),
        ] {
            if let Some(c) = child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(DemoError::Prerequisite(format!(
                    "the {name} exited ({status}); see its log above"
                )));
            }
        }
        Ok(())
    }

    /// Stops traffic first, then the probe (it flushes its last window to
    /// the collector), then the collector, then removes the topology.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(g) = self.generator.take() {
            let _ = g.join();
        }
        terminate(self.probe.take(), "probe");
        terminate(self.collector.take(), "collector");
        self.servers.take();
        self.topology.take();
        // Only our own token: another demo may have replaced it since.
        if std::fs::read_to_string(&self.token_file).is_ok_and(|t| t.trim() == self.token) {
            let _ = std::fs::remove_file(&self.token_file);
        }
        // `stop` then `drop` both get here; the second finds nothing to do.
        if self.workdir.exists()
            && let Err(e) = std::fs::remove_dir_all(&self.workdir)
        {
            tracing::warn!(dir = %self.workdir.display(), error = %e, "could not remove the demo's work directory");
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The nftables ruleset enforcing `cluster` (the scenario's, or one of its
/// stages') on the demo's pod links.
fn ruleset(
    placed: &Placed,
    cluster: &flowgate_policy::Cluster,
    enforcement: Enforcement,
) -> String {
    let link_of = |id| {
        placed
            .pods
            .iter()
            .position(|p| cluster.find_pod(&p.spec.namespace, &p.spec.name) == Some(id))
    };
    nft::compile(cluster, enforcement, &link_of)
}

/// Work directories are `$TMPDIR/flowgate-demo-<pid>`.
const WORKDIR_PREFIX: &str = "flowgate-demo-";

/// Removes the work directories of demos that were killed (their pid is gone).
fn remove_stale_workdirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(WORKDIR_PREFIX))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => {
                    tracing::info!(dir = %entry.path().display(), "removed the work directory of an earlier run")
                }
                Err(e) => {
                    tracing::warn!(dir = %entry.path().display(), error = %e, "could not remove an earlier run's work directory")
                }
            }
        }
    }
}

/// If the demo is killed outright (SIGKILL), its children get SIGTERM rather
/// than live on holding the demo's addresses; the next run then removes the
/// namespaces they were using.
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only prctl (async-signal-safe) runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn open_netns(name: &str) -> Result<OwnedFd, DemoError> {
    let path = format!("/run/netns/{name}");
    std::fs::File::open(&path)
        .map(OwnedFd::from)
        .map_err(DemoError::io(format!("opening {path}")))
}

/// SIGTERM, then SIGKILL if it has not stopped within 10 s.
fn terminate(child: Option<Child>, name: &str) {
    let Some(mut child) = child else { return };
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill has no memory-safety preconditions; pid is our child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(name, "did not stop within 10s after SIGTERM: killing it");
    let _ = child.kill();
    let _ = child.wait();
}

/// Polls `GET path` until it answers 200, the child exits, or time runs out.
fn wait_http(
    child: &mut Option<Child>,
    name: &str,
    addr: SocketAddr,
    path: &str,
) -> Result<(), DemoError> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(c) = child
            && let Ok(Some(status)) = c.try_wait()
        {
            return Err(DemoError::Prerequisite(format!(
                "the {name} exited ({status}) before it was ready; see its log above"
            )));
        }
        if http_get(addr, path).is_ok_and(|(status, _)| status == 200) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(DemoError::Prerequisite(format!(
                "the {name} did not answer GET http://{addr}{path} within {READY_TIMEOUT:?}"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A minimal HTTP/1.1 request (no client library needed for two probes).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_request_as(addr, method, path, body, None)
}

/// [`http_request`] with `Authorization: Bearer token`.
pub fn http_request_as(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        conn,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, rest) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Ok((status, body))
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_request(addr, "GET", path, None)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn generate(placed: &Placed, stop: &AtomicBool, stats: &TrafficStats, interval: Duration) {
    let timeout = Duration::from_secs(1).min(interval.max(Duration::from_millis(200)));
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match attempt_all(placed, &placed.flows, timeout) {
            Ok(results) => {
                stats
                    .attempts
                    .fetch_add(results.len() as u64, Ordering::Relaxed);
                stats.got_through.fetch_add(
                    results.iter().filter(|r| **r).count() as u64,
                    Ordering::Relaxed,
                );
                stats.rounds.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "a round of traffic failed"),
        }
        while !stop.load(Ordering::Relaxed) && started.elapsed() < interval {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// Makes SIGINT (Ctrl-C) and SIGTERM set a flag ([`stop_requested`]) instead
/// of killing the process, so the demo can clean up. A plain handler, not an
/// async runtime's: it must work however the process was started (a shell
/// starting it in the background hands it SIGINT ignored).
pub fn install_stop_signals() -> Result<(), DemoError> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        let handler = on_stop_signal as extern "C" fn(libc::c_int);
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        let previous = unsafe { libc::signal(signal, handler as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            return Err(DemoError::Io {
                op: format!("installing a handler for signal {signal}"),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM arrived since [`install_stop_signals`].
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

/// Parses `60s`, `5m`, `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let mut total = Duration::ZERO;
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?} (expected e.g. 60s, 5m, 1h30m)"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ms" => {
                total += Duration::from_millis(n);
                rest = &rest[unit_len..];
                continue;
            }
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            _ => return Err(format!("invalid duration {text:?} (units: ms, s, m, h)")),
        };
        total += Duration::from_secs(secs);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// The scenario built into the binary (`examples/default-scenario.yaml`).
pub const DEFAULT_SCENARIO: &str = include_str!("../../examples/default-scenario.yaml");

/// Reads the scenario file, or the built-in default.
pub fn load_scenario(path: Option<&Path>) -> Result<Placed, DemoError> {
    match path {
        Some(p) => crate::scenario::Scenario::from_file(p)?.place(),
        None => crate::scenario::Scenario::from_yaml("default scenario", DEFAULT_SCENARIO)?.place(),
    }
}
