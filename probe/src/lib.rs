//! The node probe (`flowgate probe`, one per node as a DaemonSet).
//!
//! Data flow: [`attach`] puts the TC programs of `flowgate-ebpf` on the pod
//! interfaces (following them as pods come and go) and the drop tracepoint
//! on the kernel; ring-buffer events and, in flow mode, the kernel flow
//! table are folded by [`aggregate`] into one flow record per 5-tuple,
//! interface and direction per export window; [`export`] batches the
//! records, holds them in a bounded buffer and streams them to the
//! collector over gRPC, releasing them only when acknowledged. [`metrics`]
//! counts everything, losses included. Start it with [`run`].

pub mod aggregate;
pub mod attach;
pub mod config;
pub mod dns;
pub mod export;
pub mod metrics;
mod outcome;
pub mod preflight;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aya::Btf;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{BtfTracePoint, SchedClassifier};
use flowgate_ebpf::abi::{self, DnsEvent, Event, FlowKey, FlowStats, counter};
use flowgate_ebpf::{Granularity, names};
use flowgate_proto::v1::{Flow, LossReport};
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

pub use config::Config;

/// Every variant with a cause keeps it as its `source` and names only what
/// failed, so a report that walks the chain prints each cause once.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Load(#[from] flowgate_ebpf::LoadError),
    #[error("program {program} is not in the eBPF object or is not a {kind} program")]
    MissingProgram {
        program: &'static str,
        kind: &'static str,
    },
    #[error("the kernel rejected program {program}")]
    Program {
        program: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("reading kernel BTF")]
    Btf(#[from] aya::BtfError),
    #[error("eBPF map {map}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("listening for metrics on {addr}")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("serving metrics")]
    MetricsServe(#[source] std::io::Error),
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    #[error("watching the ring buffer")]
    RingBuf(#[source] std::io::Error),
    #[error("watching link notifications")]
    LinkWatch(#[source] std::io::Error),
    #[error(transparent)]
    Tls(#[from] config::TlsFileError),
    #[error("the {0} task ended before the probe was stopped")]
    Ended(&'static str),
    #[error("the {component} task failed")]
    Task {
        component: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// How often the ring buffer is drained: the kernel never wakes us (see
/// FG_SUBMIT in flowgate.bpf.c), and 8 MiB of records take far longer than
/// this to pile up.
const RING_POLL: Duration = Duration::from_millis(5);
/// How often the interface list is rescanned besides netlink notifications.
const RESCAN: Duration = Duration::from_secs(5);
/// How long the last window may wait for the collector's acknowledgement.
const LAST_ACK_WAIT: Duration = Duration::from_secs(3);

/// What a run reports when it ends (also visible in metrics while it runs).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub flows_exported: u64,
    pub ringbuf_lost: u64,
    pub buffer_overflow_records: u64,
    pub unacknowledged_records: usize,
}

/// CLOCK_REALTIME − CLOCK_MONOTONIC, to turn kernel times into Unix times.
fn mono_to_unix_ns() -> i128 {
    let now = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes into the local timespec.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC)
}

fn mono_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: as above.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Locks shared state even if a task panicked while holding it: the panic
/// is reported through that task's handle, and the counters and maps
/// behind these locks stay usable for the last window.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn take<T>(bpf: &mut aya::Ebpf, map: &'static str) -> Result<T, ProbeError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let m = bpf.take_map(map).ok_or(ProbeError::Map {
        map,
        source: aya::maps::MapError::InvalidName { name: map.into() },
    })?;
    T::try_from(m).map_err(|source| ProbeError::Map { map, source })
}

fn classifier<'a>(
    bpf: &'a mut aya::Ebpf,
    program: &'static str,
) -> Result<&'a mut SchedClassifier, ProbeError> {
    bpf.program_mut(program)
        .and_then(|p| p.try_into().ok())
        .ok_or(ProbeError::MissingProgram {
            program,
            kind: "TC classifier",
        })
}

/// The shared shutdown signal: set once, seen by every component.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

impl Stop {
    fn new() -> (watch::Sender<bool>, Stop) {
        let (tx, rx) = watch::channel(false);
        (tx, Stop(rx))
    }

    /// Completes once the probe stops (or its sender is gone).
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stopped| *stopped).await;
    }
}

/// The programs loaded and attached, and the maps the probe reads.
struct Kernel {
    events: RingBuf<MapData>,
    flow_table: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    counters: PerCpuArray<MapData, u64>,
    attacher: Arc<Mutex<attach::Attacher>>,
    ifnames: attach::IfNames,
}

impl Kernel {
    /// Loads the object, attaches the drop tracepoint and the TC programs to
    /// the interfaces present now.
    fn load(config: &Config, metrics: &metrics::Metrics) -> Result<Kernel, ProbeError> {
        let mut bpf = flowgate_ebpf::load(config.granularity.into())?;
        for program in [names::TC_INGRESS, names::TC_EGRESS] {
            classifier(&mut bpf, program)?
                .load()
                .map_err(|source| ProbeError::Program { program, source })?;
        }
        let btf = Btf::from_sys_fs()?;
        let program = names::KFREE_SKB;
        let tp: &mut BtfTracePoint = bpf
            .program_mut(program)
            .and_then(|p| p.try_into().ok())
            .ok_or(ProbeError::MissingProgram {
                program,
                kind: "BTF tracepoint",
            })?;
        tp.load("kfree_skb", &btf)
            .map_err(|source| ProbeError::Program { program, source })?;
        tp.attach()
            .map_err(|source| ProbeError::Program { program, source })?;

        let events = take(&mut bpf, names::EVENTS)?;
        let flow_table = take(&mut bpf, names::FLOWS)?;
        let counters = take(&mut bpf, names::COUNTERS)?;
        let mut attacher = attach::Attacher::new(bpf, config.interfaces.clone());
        let (added, _) = attacher.sync();
        metrics.interfaces.set(added.len() as i64);
        let ifnames = attacher.names();
        Ok(Kernel {
            events,
            flow_table,
            counters,
            attacher: Arc::new(Mutex::new(attacher)),
            ifnames,
        })
    }
}

/// Runs the probe until `shutdown` completes; then exports the last
/// window, gives the collector a moment to acknowledge it, and detaches.
/// `on_ready` receives the bound metrics address once programs are attached.
///
/// Each component is a task (ring-buffer drain, interface watch, metrics,
/// delivery to the collector); the window export runs here. They share one
/// stop signal; if a component fails, the probe stops and returns its error.
pub async fn run(
    config: Config,
    metrics: Arc<metrics::Metrics>,
    on_ready: impl FnOnce(SocketAddr) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Summary, ProbeError> {
    preflight::check()?;
    let reasons = preflight::drop_reason_names();
    let granularity: Granularity = config.granularity.into();
    let tls = config.client_tls()?;
    let kernel = Kernel::load(&config, &metrics)?;
    let listener = metrics::bind(config.metrics_listen)
        .await
        .map_err(|source| ProbeError::MetricsListen {
            addr: config.metrics_listen,
            source,
        })?;
    let metrics_addr = listener
        .local_addr()
        .map_err(|source| ProbeError::MetricsListen {
            addr: config.metrics_listen,
            source,
        })?;
    let node = config.node();
    let agg = Arc::new(Mutex::new(
        aggregate::Aggregator::new(node.clone())
            .with_reasons(reasons.iter().map(|(c, n)| (*c, n.as_str())))
            .holding_undecided(),
    ));
    let buffer = Arc::new(Mutex::new(export::Buffer::new(config.buffer_records)));
    let losses = Arc::new(LossTotals::default());

    let (stop_tx, stop) = Stop::new();
    let mut components = Components::default();
    // SAFETY: the RingBuf owns its map fd and lives inside the AsyncFd.
    let ring =
        unsafe { AsyncFd::register(kernel.events) }.map_err(|e| ProbeError::RingBuf(e.into()))?;
    components.spawn(
        "ring-buffer drain",
        drain_ring(ring, agg.clone(), stop.clone()),
    );
    // SAFETY: the OwnedFd owns the socket and lives inside the AsyncFd.
    let links = unsafe { AsyncFd::register(attach::link_notifications()?) }
        .map_err(|e| ProbeError::LinkWatch(e.into()))?;
    components.spawn(
        "interface watch",
        watch_interfaces(
            links,
            kernel.attacher.clone(),
            metrics.clone(),
            stop.clone(),
        ),
    );
    let serve = metrics::serve(listener, metrics.clone(), stop.clone().wait());
    components.spawn("metrics", async move {
        serve.await.map_err(ProbeError::MetricsServe)
    });
    let more = Arc::new(Notify::new());
    let exporter = export::Exporter {
        collector: config.collector.clone(),
        tls,
        probe_id: format!(
            "{node}/{}-{}",
            std::process::id(),
            mono_to_unix_ns() / 1_000_000_000
        ),
        node,
        buffer: buffer.clone(),
        more: more.clone(),
        losses: losses.report(buffer.clone()),
        metrics: metrics.clone(),
    };
    let delivered = stop.clone().wait();
    components.spawn("delivery", async move {
        exporter.run(delivered).await;
        Ok(())
    });

    on_ready(metrics_addr);
    tracing::info!(granularity = ?granularity, interval = ?config.export_interval, metrics = %metrics_addr, "probe running");

    let windows = Windows {
        agg,
        flow_table: kernel.flow_table,
        counters: kernel.counters,
        granularity,
        interval: config.export_interval,
        idle_ns: config.flow_idle_timeout.as_nanos() as u64,
        max_batch: config.max_batch_flows,
        ifnames: kernel.ifnames,
        attacher: kernel.attacher.clone(),
        reasons,
        metrics,
        buffer: buffer.clone(),
        more,
        losses: losses.clone(),
        kernel_seen: (0, 0),
    };
    // A component that ends first ends the run with its error.
    let mut result = tokio::select! {
        flows = windows.run(shutdown) => Ok(flows),
        Some(Err(e)) = components.next(true) => Err(e),
    };
    let _ = stop_tx.send(true);
    while let Some(ended) = components.next(false).await {
        if let (Err(e), Ok(_)) = (ended, &result) {
            result = Err(e);
        }
    }
    lock(&kernel.attacher).detach_all();
    let flows_exported = result?;
    let b = lock(&buffer);
    Ok(Summary {
        flows_exported,
        ringbuf_lost: losses.ringbuf.load(Ordering::Relaxed),
        buffer_overflow_records: b.overflow_records,
        unacknowledged_records: b.records(),
    })
}

/// The component tasks, by name.
#[derive(Default)]
struct Components {
    set: JoinSet<Result<(), ProbeError>>,
    names: Vec<(tokio::task::Id, &'static str)>,
}

impl Components {
    fn spawn(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), ProbeError>> + Send + 'static,
    ) {
        let handle = self.set.spawn(task);
        self.names.push((handle.id(), name));
    }

    fn name(&self, id: tokio::task::Id) -> &'static str {
        self.names
            .iter()
            .find(|(i, _)| *i == id)
            .map_or("unnamed", |(_, n)| n)
    }

    /// The result of the next component to end; ending while the probe is
    /// `running` is itself an error.
    async fn next(&mut self, running: bool) -> Option<Result<(), ProbeError>> {
        Some(match self.set.join_next_with_id().await? {
            Ok((id, Ok(()))) if running => Err(ProbeError::Ended(self.name(id))),
            Ok((_, ended)) => ended,
            Err(source) => Err(ProbeError::Task {
                component: self.name(source.id()),
                source,
            }),
        })
    }
}

/// Loss totals read from the kernel and the aggregator, for metrics and the
/// loss report sent with every batch.
#[derive(Default)]
struct LossTotals {
    ringbuf: AtomicU64,
    evictions: AtomicU64,
    /// The kernel's FG_CTR_TRUNCATED and FG_CTR_FLOW_UPDATE_FAIL, as last read.
    truncated: AtomicU64,
    update_failures: AtomicU64,
}

impl LossTotals {
    fn report(self: &Arc<Self>, buffer: Arc<Mutex<export::Buffer>>) -> export::Losses {
        let totals = self.clone();
        Arc::new(move || LossReport {
            ringbuf_lost_events: totals.ringbuf.load(Ordering::Relaxed),
            buffer_overflow_records: lock(&buffer).overflow_records,
            flow_table_evictions: totals.evictions.load(Ordering::Relaxed),
            kernel_truncated_packets: totals.truncated.load(Ordering::Relaxed),
            kernel_flow_update_failures: totals.update_failures.load(Ordering::Relaxed),
        })
    }
}

/// Ring buffer → aggregator, every `RING_POLL`, until the probe stops.
async fn drain_ring(
    mut ring: AsyncFd<RingBuf<MapData>>,
    agg: Arc<Mutex<aggregate::Aggregator>>,
    stop: Stop,
) -> Result<(), ProbeError> {
    let stopped = stop.wait();
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            ready = tokio::time::timeout(RING_POLL, ring.readable_mut()) => {
                if let Ok(ready) = ready {
                    ready.map_err(ProbeError::RingBuf)?.clear_ready();
                }
            }
        }
        let events = ring.get_mut();
        let mut agg = lock(&agg);
        while let Some(item) = events.next() {
            match Event::from_bytes(&item) {
                Some(e) if e.kind == abi::EVENT_DNS => match DnsEvent::payload_of(&item) {
                    Some(payload) => agg.dns_response(&e, payload),
                    None => agg.dns_malformed += 1,
                },
                Some(e) => agg.event(&e),
                None => {}
            }
        }
    }
}

/// Attaches to interfaces as they appear (netlink notifications, and a
/// rescan every `RESCAN`) until the probe stops.
async fn watch_interfaces(
    links: AsyncFd<std::os::fd::OwnedFd>,
    attacher: Arc<Mutex<attach::Attacher>>,
    metrics: Arc<metrics::Metrics>,
    stop: Stop,
) -> Result<(), ProbeError> {
    let stopped = stop.wait();
    tokio::pin!(stopped);
    let mut rescan = tokio::time::interval(RESCAN);
    loop {
        tokio::select! {
            _ = &mut stopped => return Ok(()),
            ready = links.readable() => {
                let mut ready = ready.map_err(ProbeError::LinkWatch)?;
                attach::drain(links.get_ref());
                ready.clear_ready();
            }
            _ = rescan.tick() => {}
        }
        let mut a = lock(&attacher);
        a.sync();
        metrics.interfaces.set(a.attached().count() as i64);
    }
}

/// The window export: every interval, the kernel table and the ring
/// buffer's events become flow records in the delivery buffer.
struct Windows {
    agg: Arc<Mutex<aggregate::Aggregator>>,
    flow_table: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    counters: PerCpuArray<MapData, u64>,
    granularity: Granularity,
    interval: Duration,
    idle_ns: u64,
    max_batch: usize,
    ifnames: attach::IfNames,
    attacher: Arc<Mutex<attach::Attacher>>,
    reasons: rustc_hash::FxHashMap<u32, String>,
    metrics: Arc<metrics::Metrics>,
    buffer: Arc<Mutex<export::Buffer>>,
    more: Arc<Notify>,
    losses: Arc<LossTotals>,
    /// Kernel counters already turned into metrics: (truncated, update failures).
    kernel_seen: (u64, u64),
}

impl Windows {
    /// Exports a window every interval until `shutdown`; then the last one
    /// (held records included), and waits a moment for its acknowledgement.
    /// Returns the number of flow records exported.
    async fn run(mut self, shutdown: impl Future<Output = ()>) -> u64 {
        let mut exported = 0;
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        tokio::pin!(shutdown);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                _ = &mut shutdown => true,
            };
            if last {
                lock(&self.agg).release_held();
            }
            exported += self.export() as u64;
            if last {
                break;
            }
        }
        let deadline = tokio::time::Instant::now() + LAST_ACK_WAIT;
        while lock(&self.buffer).records() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        exported
    }

    /// One window into the buffer; returns its record count.
    fn export(&mut self) -> usize {
        let flows = self.flows();
        self.count_kernel_losses();
        let evicted = lock(&self.agg).table_evictions;
        let prev = self.losses.evictions.swap(evicted, Ordering::Relaxed);
        if evicted > prev {
            self.metrics.flow_table_evictions.inc_by(evicted - prev);
            tracing::warn!(
                entries = evicted - prev,
                "kernel flow table full: entries evicted before export (counted)"
            );
        }
        let n = flows.len();
        let mut buffer = lock(&self.buffer);
        let overflow = buffer.push(flows, self.max_batch);
        if overflow > 0 {
            self.metrics.buffer_overflow_records.inc_by(overflow);
            tracing::warn!(
                records = overflow,
                "buffer full while the collector is away: oldest records dropped (counted)"
            );
        }
        self.metrics.buffer_records.set(buffer.records() as i64);
        self.more.notify_one();
        n
    }

    /// Ring-buffer losses, truncated packets and failed inserts, from the
    /// kernel's per-CPU counters into metrics.
    fn count_kernel_losses(&mut self) {
        let total = |index: u32| -> u64 {
            self.counters
                .get(&index, 0)
                .map(|v| v.iter().sum())
                .unwrap_or(0)
        };
        let lost = total(counter::RINGBUF_LOST);
        let prev = self.losses.ringbuf.swap(lost, Ordering::Relaxed);
        if lost > prev {
            self.metrics.ringbuf_lost.inc_by(lost - prev);
            tracing::warn!(
                lost = lost - prev,
                "ring buffer full: events lost (counted)"
            );
        }
        let (truncated, update_failures) =
            (total(counter::TRUNCATED), total(counter::FLOW_UPDATE_FAIL));
        self.losses.truncated.store(truncated, Ordering::Relaxed);
        self.losses
            .update_failures
            .store(update_failures, Ordering::Relaxed);
        for (total, seen, metric, what) in [
            (
                truncated,
                &mut self.kernel_seen.0,
                &self.metrics.kernel_truncated_packets,
                "truncated packets (counted)",
            ),
            (
                update_failures,
                &mut self.kernel_seen.1,
                &self.metrics.kernel_flow_update_failures,
                "kernel flow-table inserts failed: packets not counted (counted)",
            ),
        ] {
            if total > *seen {
                metric.inc_by(total - *seen);
                tracing::warn!(count = total - *seen, "{what}");
                *seen = total;
            }
        }
    }

    /// The window's flow records: the kernel table (flow mode) and the
    /// events, folded by the aggregator, with names and metrics.
    fn flows(&mut self) -> Vec<Flow> {
        let mut agg = lock(&self.agg);
        if self.granularity == Granularity::Flow {
            read_table(&mut self.flow_table, self.idle_ns, &mut agg);
        }
        let observed: Vec<u32> = lock(&self.attacher).attached().map(|(_, i)| i).collect();
        // Lock order: the attacher is never awaited while the names are held
        // (the interface watcher takes the names inside the attacher).
        let names = self.ifnames.read().unwrap_or_else(PoisonError::into_inner);
        let mut flows = agg.flush(
            mono_to_unix_ns(),
            &|i| names.get(&i).cloned().unwrap_or_default(),
            &|i| observed.contains(&i),
        );
        drop(names);
        self.sync_aggregator_metrics(&agg);
        for f in &mut flows {
            self.name_drop_and_count(f);
        }
        flows
    }

    /// The aggregator's counts are cumulative (the ring-buffer drain adds
    /// to them between windows): bring the metrics up to them.
    fn sync_aggregator_metrics(&self, agg: &aggregate::Aggregator) {
        let m = &self.metrics;
        let sync = |c: &prometheus_client::metrics::counter::Counter, total: u64| {
            c.inc_by(total.saturating_sub(c.get()));
        };
        let (dns_full, dns_held) = agg.dns_names();
        sync(&m.unrelated_drops, agg.unrelated_drops);
        sync(&m.endpoint_drops, agg.endpoint_drops);
        sync(&m.other_protocol_packets, agg.other_protocol_packets);
        sync(&m.dns_responses, agg.dns_responses);
        sync(&m.dns_malformed, agg.dns_malformed);
        sync(&m.dns_names_full, dns_full);
        m.dns_names.set(dns_held as i64);
    }

    /// Names a record's drop reason and counts it in the metrics.
    fn name_drop_and_count(&self, f: &mut Flow) {
        let m = &self.metrics;
        if f.drop_reason_code != 0 {
            f.drop_reason = self
                .reasons
                .get(&f.drop_reason_code)
                .cloned()
                .unwrap_or_else(|| format!("REASON_{}", f.drop_reason_code));
            m.kernel_drops
                .get_or_create(&metrics::ReasonLabel {
                    reason: f.drop_reason.clone(),
                })
                .inc_by(f.dropped_packets);
        }
        let label = metrics::InterfaceLabel {
            interface: f.interface.clone(),
        };
        m.packets.get_or_create(&label).inc_by(f.packets);
        m.flows.get_or_create(&label).inc();
    }
}

/// Folds the kernel flow table's per-CPU entries into the aggregator and
/// removes the entries idle for longer than the idle timeout.
fn read_table(
    table: &mut PerCpuHashMap<MapData, FlowKey, FlowStats>,
    idle_ns: u64,
    agg: &mut aggregate::Aggregator,
) {
    let now = mono_now_ns();
    let mut idle = Vec::new();
    let entries: Vec<(FlowKey, FlowStats)> = table
        .iter()
        .filter_map(Result::ok)
        .map(|(k, per_cpu)| {
            let mut total = FlowStats::default();
            for s in per_cpu.iter().filter(|s| s.packets > 0) {
                if total.packets == 0 || s.first_seen_ns < total.first_seen_ns {
                    total.first_seen_ns = s.first_seen_ns;
                }
                total.packets += s.packets;
                total.bytes += s.bytes;
                total.last_seen_ns = total.last_seen_ns.max(s.last_seen_ns);
                total.tcp_flags |= s.tcp_flags;
            }
            (k, total)
        })
        .collect();
    for (k, total) in entries {
        agg.table_entry(k, total, now, idle_ns, &mut idle);
    }
    agg.table_read_done();
    for k in idle {
        // Gone already (LRU eviction) is fine: the entry is what we wanted gone.
        let _ = table.remove(&k);
    }
}
