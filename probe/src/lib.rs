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
use std::sync::{Arc, Mutex};

use aya::Btf;
use aya::maps::{MapData, PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::{BtfTracePoint, SchedClassifier};
use flowgate_ebpf::abi::{self, DnsEvent, Event, FlowKey, FlowStats, counter};
use flowgate_ebpf::{Granularity, names};
use flowgate_proto::v1::{Flow, LossReport};
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Preflight(#[from] preflight::PreflightError),
    #[error(transparent)]
    Load(#[from] flowgate_ebpf::LoadError),
    #[error("the kernel rejected program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("reading kernel BTF: {0}")]
    Btf(#[from] aya::BtfError),
    #[error("eBPF map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("listening for metrics on {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Attach(#[from] attach::AttachError),
    #[error("watching the ring buffer: {0}")]
    RingBuf(std::io::Error),
    #[error(transparent)]
    Tls(#[from] config::TlsFileError),
}

/// How often the ring buffer is drained when the kernel does not wake us.
const RING_POLL: std::time::Duration = std::time::Duration::from_millis(5);

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

/// Runs the probe until `shutdown` completes; then exports the last
/// window, gives the collector a moment to acknowledge it, and detaches.
/// `on_ready` receives the bound metrics address once programs are attached.
pub async fn run(
    config: Config,
    metrics: Arc<metrics::Metrics>,
    on_ready: impl FnOnce(SocketAddr) + Send,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<Summary, ProbeError> {
    preflight::check()?;
    let reasons = preflight::drop_reason_names();
    let granularity: Granularity = config.granularity.into();
    let mut bpf = flowgate_ebpf::load(granularity)?;
    for program in [names::TC_INGRESS, names::TC_EGRESS] {
        let p: &mut SchedClassifier = bpf
            .program_mut(program)
            .expect("in object")
            .try_into()
            .expect("type");
        p.load()
            .map_err(|source| ProbeError::Program { program, source })?;
    }
    let btf = Btf::from_sys_fs()?;
    let tp: &mut BtfTracePoint = bpf
        .program_mut(names::KFREE_SKB)
        .expect("in object")
        .try_into()
        .expect("type");
    tp.load("kfree_skb", &btf)
        .map_err(|source| ProbeError::Program {
            program: names::KFREE_SKB,
            source,
        })?;
    tp.attach().map_err(|source| ProbeError::Program {
        program: names::KFREE_SKB,
        source,
    })?;

    let events: RingBuf<MapData> = take(&mut bpf, names::EVENTS)?;
    let mut flow_table: PerCpuHashMap<MapData, FlowKey, FlowStats> = take(&mut bpf, names::FLOWS)?;
    let counters: PerCpuArray<MapData, u64> = take(&mut bpf, names::COUNTERS)?;

    let attacher = Arc::new(Mutex::new(attach::Attacher::new(
        bpf,
        config.interfaces.clone(),
    )));
    let (added, _) = attacher.lock().unwrap().sync();
    metrics.interfaces.set(added.len() as i64);
    let ifnames = attacher.lock().unwrap().names();

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
    let metrics_task = tokio::spawn(metrics::serve(listener, metrics.clone()));

    let node = config.node();
    let agg = Arc::new(Mutex::new(
        aggregate::Aggregator::new(node.clone())
            .with_reasons(reasons.iter().map(|(c, n)| (*c, n.as_str())))
            .holding_undecided(),
    ));

    // Ring buffer → aggregator.
    // SAFETY: the RingBuf owns its map fd and lives inside the AsyncFd.
    let mut rb = unsafe { AsyncFd::register(events) }.map_err(|e| ProbeError::RingBuf(e.into()))?;
    let agg_rb = agg.clone();
    let reader = tokio::spawn(async move {
        loop {
            // The kernel wakes us only when much data waits (see
            // FG_WAKEUP_BYTES); otherwise drain every few milliseconds.
            if let Ok(Ok(mut ready)) = tokio::time::timeout(RING_POLL, rb.readable_mut()).await {
                ready.clear_ready();
            }
            let ring = rb.get_mut();
            let mut agg = agg_rb.lock().unwrap();
            while let Some(item) = ring.next() {
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
    });

    // Interfaces appearing and vanishing.
    // SAFETY: the OwnedFd owns the socket and lives inside the AsyncFd.
    let nl = unsafe { AsyncFd::register(attach::link_notifications()?) }
        .map_err(|e| ProbeError::RingBuf(e.into()))?;
    let attacher_w = attacher.clone();
    let metrics_w = metrics.clone();
    let watcher = tokio::spawn(async move {
        let mut rescan = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tokio::select! {
                r = nl.readable() => {
                    let Ok(mut g) = r else { return };
                    attach::drain(nl.get_ref());
                    g.clear_ready();
                }
                _ = rescan.tick() => {}
            }
            let mut a = attacher_w.lock().unwrap();
            a.sync();
            metrics_w.interfaces.set(a.attached().count() as i64);
        }
    });

    // Export.
    let buffer = Arc::new(Mutex::new(export::Buffer::new(config.buffer_records)));
    let more = Arc::new(Notify::new());
    let stop_export = Arc::new(Notify::new());
    let probe_id = format!(
        "{node}/{}-{}",
        std::process::id(),
        mono_to_unix_ns() / 1_000_000_000
    );
    let lost_total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let evictions = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (lost_l, buffer_l, evictions_l) = (lost_total.clone(), buffer.clone(), evictions.clone());
    let losses: export::Losses = Arc::new(move || LossReport {
        ringbuf_lost_events: lost_l.load(std::sync::atomic::Ordering::Relaxed),
        buffer_overflow_records: buffer_l.lock().unwrap().overflow_records,
        flow_table_evictions: evictions_l.load(std::sync::atomic::Ordering::Relaxed),
    });
    let exporter = tokio::spawn(
        export::Exporter {
            collector: config.collector.clone(),
            tls: config.client_tls()?,
            probe_id,
            node,
            buffer: buffer.clone(),
            more: more.clone(),
            losses,
            metrics: metrics.clone(),
        }
        .run(stop_export.clone()),
    );

    on_ready(metrics_addr);
    tracing::info!(granularity = ?granularity, interval = ?config.export_interval, metrics = %metrics_addr, "probe running");

    let mut summary = Summary::default();
    // Kernel counters already turned into metrics: (truncated, update failures).
    let mut kernel_seen = (0u64, 0u64);
    let mut tick = tokio::time::interval(config.export_interval);
    tick.tick().await;
    tokio::pin!(shutdown);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = &mut shutdown => true,
        };
        if last {
            agg.lock().unwrap().release_held();
        }
        let flows = export_window(
            &agg,
            &mut flow_table,
            granularity,
            &config,
            &ifnames,
            &attacher,
            &reasons,
            &metrics,
        );
        // Ring-buffer losses, from the kernel's counters.
        let lost: u64 = counters
            .get(&counter::RINGBUF_LOST, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0);
        let prev = lost_total.swap(lost, std::sync::atomic::Ordering::Relaxed);
        if lost > prev {
            metrics.ringbuf_lost.inc_by(lost - prev);
            tracing::warn!(
                lost = lost - prev,
                "ring buffer full: events lost (counted)"
            );
        }
        for (index, seen, metric, what) in [
            (
                counter::TRUNCATED,
                &mut kernel_seen.0,
                &metrics.kernel_truncated_packets,
                "truncated packets (counted)",
            ),
            (
                counter::FLOW_UPDATE_FAIL,
                &mut kernel_seen.1,
                &metrics.kernel_flow_update_failures,
                "kernel flow-table inserts failed: packets not counted (counted)",
            ),
        ] {
            let total: u64 = counters.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0);
            if total > *seen {
                metric.inc_by(total - *seen);
                tracing::warn!(count = total - *seen, "{what}");
                *seen = total;
            }
        }
        let evicted = agg.lock().unwrap().table_evictions;
        let prev = evictions.swap(evicted, std::sync::atomic::Ordering::Relaxed);
        if evicted > prev {
            metrics.flow_table_evictions.inc_by(evicted - prev);
            tracing::warn!(
                entries = evicted - prev,
                "kernel flow table full: entries evicted before export (counted)"
            );
        }
        summary.flows_exported += flows.len() as u64;
        let overflow = buffer.lock().unwrap().push(flows, config.max_batch_flows);
        if overflow > 0 {
            metrics.buffer_overflow_records.inc_by(overflow);
            tracing::warn!(
                records = overflow,
                "buffer full while the collector is away: oldest records dropped (counted)"
            );
        }
        metrics
            .buffer_records
            .set(buffer.lock().unwrap().records() as i64);
        more.notify_one();
        if last {
            break;
        }
    }
    // Give the collector a moment to acknowledge the last window.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while buffer.lock().unwrap().records() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop_export.notify_one();
    let _ = exporter.await;
    reader.abort();
    watcher.abort();
    metrics_task.abort();
    attacher.lock().unwrap().detach_all();
    summary.ringbuf_lost = lost_total.load(std::sync::atomic::Ordering::Relaxed);
    let b = buffer.lock().unwrap();
    summary.buffer_overflow_records = b.overflow_records;
    summary.unacknowledged_records = b.records();
    Ok(summary)
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the pieces of one loop"
)]
fn export_window(
    agg: &Mutex<aggregate::Aggregator>,
    table: &mut PerCpuHashMap<MapData, FlowKey, FlowStats>,
    granularity: Granularity,
    config: &Config,
    ifnames: &attach::IfNames,
    attacher: &Mutex<attach::Attacher>,
    reasons: &rustc_hash::FxHashMap<u32, String>,
    metrics: &metrics::Metrics,
) -> Vec<Flow> {
    let mut agg = agg.lock().unwrap();
    if granularity == Granularity::Flow {
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
            agg.table_entry(
                k,
                total,
                now,
                config.flow_idle_timeout.as_nanos() as u64,
                &mut idle,
            );
        }
        agg.table_read_done();
        for k in idle {
            let _ = table.remove(&k);
        }
    }
    let observed: Vec<u32> = attacher
        .lock()
        .unwrap()
        .attached()
        .map(|(_, i)| i)
        .collect();
    // Lock order: the attacher is never awaited while the names are held
    // (the interface watcher takes the names inside the attacher).
    let names = ifnames.read().unwrap();
    let mut flows = agg.flush(
        mono_to_unix_ns(),
        &|i| names.get(&i).cloned().unwrap_or_default(),
        &|i| observed.contains(&i),
    );
    // The aggregator's counts are cumulative (the ring-buffer reader adds
    // to them between windows): bring the metrics up to them.
    let sync = |c: &prometheus_client::metrics::counter::Counter, total: u64| {
        c.inc_by(total.saturating_sub(c.get()));
    };
    let (dns_full, dns_held) = agg.dns_names();
    sync(&metrics.unrelated_drops, agg.unrelated_drops);
    sync(&metrics.endpoint_drops, agg.endpoint_drops);
    sync(&metrics.other_protocol_packets, agg.other_protocol_packets);
    sync(&metrics.dns_responses, agg.dns_responses);
    sync(&metrics.dns_malformed, agg.dns_malformed);
    sync(&metrics.dns_names_full, dns_full);
    metrics.dns_names.set(dns_held as i64);
    for f in &mut flows {
        if f.drop_reason_code != 0 {
            f.drop_reason = reasons
                .get(&f.drop_reason_code)
                .cloned()
                .unwrap_or_else(|| format!("REASON_{}", f.drop_reason_code));
            metrics
                .kernel_drops
                .get_or_create(&metrics::ReasonLabel {
                    reason: f.drop_reason.clone(),
                })
                .inc_by(f.dropped_packets);
        }
        let label = metrics::InterfaceLabel {
            interface: f.interface.clone(),
        };
        metrics.packets.get_or_create(&label).inc_by(f.packets);
        metrics.flows.get_or_create(&label).inc();
    }
    flows
}
