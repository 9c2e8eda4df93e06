//! Floods a pod veth with small UDP packets and measures what the probe
//! counts, what it loses, and what its eBPF programs cost per packet
//! (the kernel's own run-time statistics, kernel.bpf_stats_enabled).
//!
//! Run as root: `cargo bench -p flowgate-probe --bench flood`
//! Flow mode runs at the highest rate this machine offers; packet mode at
//! rising rates, to find where ring-buffer losses begin.

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flowgate_probe::config::GranularityArg;
use flowgate_proto::v1::Direction;
use support::{Pods, Receiver};

const PORT: u16 = 9000;
const BATCH: usize = 64;
const PAYLOAD: usize = 18; // 60-byte frames on the wire
const RUN: Duration = Duration::from_secs(2);

/// Sends for `RUN` at `rate` packets/s (None: as fast as possible) with
/// sendmmsg. Returns (packets sent, seconds).
fn send(pods: &Pods, dst: IpAddr, src_port: u16, rate: Option<u64>) -> (u64, f64) {
    pods.run_in('a', move || {
        let s = UdpSocket::bind(("0.0.0.0", src_port)).unwrap();
        s.connect(SocketAddr::new(dst, PORT)).unwrap();
        let payload = [0x5au8; PAYLOAD];
        let mut iov: Vec<libc::iovec> = (0..BATCH)
            .map(|_| libc::iovec {
                iov_base: payload.as_ptr() as *mut _,
                iov_len: PAYLOAD,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: an all-zero msghdr is valid; we set the iovec.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < RUN {
            if let Some(r) = rate {
                let due = Duration::from_secs_f64(sent as f64 / r as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            // SAFETY: msgs points at BATCH valid headers whose iovecs point at `payload`.
            let n = unsafe { libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n > 0 {
                sent += n as u64;
            }
        }
        (sent, start.elapsed().as_secs_f64())
    })
    .join()
    .unwrap()
}

/// Drains the destination socket so the receiver does not drop.
fn receive(pods: &Pods, at: IpAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    pods.run_in('b', move || {
        let s = UdpSocket::bind(SocketAddr::new(at, PORT)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let big: libc::c_int = 64 << 20;
        // SAFETY: setsockopt with a valid int option.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&big as *const libc::c_int).cast(),
                4,
            );
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while !stop.load(Ordering::Relaxed) {
            if s.recv(&mut buf).is_ok() {
                got += 1;
            }
        }
        got
    })
}

/// Total run time and run count of our TC programs (bpf_stats).
fn bpf_stats() -> (u64, u64) {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter(|p| matches!(p.name(), b"fg_tc_ingress" | b"fg_tc_egress"))
        .fold((0, 0), |(t, c), p| {
            (t + p.run_time().as_nanos() as u64, c + p.run_count())
        })
}

/// `union bpf_attr`, the members used here: `BPF_PROG_LOAD` (the first
/// fields) and `BPF_PROG_TEST_RUN` (`test`). Unused fields stay zero.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    _rest: [u64; 8],
}

#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    _rest: [u64; 6],
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const FLOOR_NAME: &[u8] = b"fg_stats_floor";

/// What the kernel's BPF statistics report per run for a classifier that
/// does nothing (`r0 = -1; exit`): the cost of the statistics themselves
/// (two clock reads around every run; tens of ns in a VM), which every
/// ns/packet figure below includes. Measured with BPF_PROG_TEST_RUN on one
/// of the flood's frames while kernel.bpf_stats_enabled is on.
fn stats_floor() -> std::io::Result<f64> {
    // mov64 r0, -1 (TC_ACT_UNSPEC); exit
    let insns: [u64; 2] = [
        u64::from_le_bytes([0xb7, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]),
        u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
    ];
    let license = b"GPL\0";
    let mut name = [0u8; 16];
    name[..FLOOR_NAME.len()].copy_from_slice(FLOOR_NAME);
    let mut load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: load is a valid bpf_attr prefix; insns and license outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut load as *mut ProgLoadAttr,
            size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut frame = [0u8; 60];
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let mut out = [0u8; 128];
    let mut run = TestRunAttr {
        prog_fd: fd.as_raw_fd() as u32,
        data_size_in: frame.len() as u32,
        data_size_out: out.len() as u32,
        data_in: frame.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 2_000_000,
        ..Default::default()
    };
    // SAFETY: run is a valid bpf_attr prefix; the buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut run as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let (time, count) = aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .find(|p| p.name() == FLOOR_NAME)
        .map(|p| (p.run_time().as_nanos() as f64, p.run_count() as f64))
        .ok_or_else(|| std::io::Error::other("the floor program is not listed"))?;
    drop(fd);
    Ok(time / count.max(1.0))
}

fn main() {
    if !support::is_root() {
        eprintln!("!! flood benchmark NOT RUN: it needs root (eBPF, network namespaces)");
        std::process::exit(1);
    }
    let stats_path = "/proc/sys/kernel/bpf_stats_enabled";
    let stats_before = std::fs::read_to_string(stats_path).unwrap_or_else(|_| "0".into());
    std::fs::write(stats_path, "1").expect("enable kernel.bpf_stats_enabled");

    let pods = Pods::create(240);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);
    let (dst, veth) = (pods.v4(2), pods.veth('a'));
    // Measured first, before the floods warm or load anything.
    let floor = match stats_floor() {
        Ok(ns) => {
            println!(
                "kernel BPF statistics floor (an empty classifier, same statistics): {ns:.1} ns per run; \
                 every ns/packet below includes it"
            );
            Some(ns)
        }
        Err(e) => {
            eprintln!("!! the statistics floor was not measured: {e}");
            None
        }
    };
    println!(
        "flowgate probe flood benchmark: UDP {PAYLOAD}-byte payloads, {BATCH} per sendmmsg, {}s per run, 2 cores",
        RUN.as_secs()
    );
    println!(
        "{:<7} {:>12} {:>14} {:>14} {:>10} {:>12} {:>12}",
        "mode", "target pps", "offered pps", "counted pps", "lost", "ns/packet", "less floor"
    );

    let mut src_port = 20000;
    // Packet mode: (offered pps of the highest rate without loss, of the first with loss).
    let mut onset: (Option<f64>, Option<f64>) = (None, None);
    for (mode, rates) in [
        (GranularityArg::Flow, vec![None]),
        (
            GranularityArg::Packet,
            vec![Some(250_000), Some(500_000), Some(1_000_000), None],
        ),
    ] {
        let probe = support::start(
            &rt,
            support::config(
                format!("http://{addr}"),
                vec![veth.clone()],
                mode,
                Duration::from_millis(500),
            ),
        );
        let metrics = probe.metrics.clone();

        for rate in rates {
            src_port += 1;
            let stop = Arc::new(AtomicBool::new(false));
            let rx = receive(&pods, dst, stop.clone());
            std::thread::sleep(Duration::from_millis(100));
            let (lost0, (t0, c0)) = (metrics.ringbuf_lost.get(), bpf_stats());
            let (sent, secs) = send(&pods, dst, src_port, rate);
            let (t1, c1) = bpf_stats();
            // Let the probe export the last windows.
            std::thread::sleep(Duration::from_millis(1500));
            stop.store(true, Ordering::Relaxed);
            rx.join().unwrap();
            let counted: u64 = receiver
                .flows
                .lock()
                .unwrap()
                .iter()
                .filter(|f| {
                    f.src_port == u32::from(src_port)
                        && f.direction == Direction::Egress as i32
                        && f.interface == veth
                })
                .map(|f| f.packets)
                .sum();
            let lost = metrics.ringbuf_lost.get() - lost0;
            let ns = if c1 > c0 {
                (t1 - t0) as f64 / (c1 - c0) as f64
            } else {
                f64::NAN
            };
            println!(
                "{:<7} {:>12} {:>14.0} {:>14.0} {:>10} {:>12.1} {:>12.1}",
                format!("{mode:?}").to_lowercase(),
                rate.map_or("max".to_string(), |r| r.to_string()),
                sent as f64 / secs,
                counted as f64 / secs,
                lost,
                ns,
                floor.map_or(f64::NAN, |f| ns - f)
            );
            if mode == GranularityArg::Flow && counted != sent {
                println!("  !! flow mode counted {counted} of {sent} packets sent");
            }
            if mode == GranularityArg::Packet {
                let offered = sent as f64 / secs;
                if lost == 0 && counted == sent {
                    onset.0 = Some(onset.0.map_or(offered, |o: f64| o.max(offered)));
                } else if onset.1.is_none_or(|o| offered < o) {
                    onset.1 = Some(offered);
                }
            }
        }
        probe.stop(&rt);
    }
    match onset {
        (ok, Some(first)) => println!(
            "packet mode loss onset: first loss at {first:.0} pps offered (none up to {})",
            ok.map_or("any rate tried".into(), |o| format!("{o:.0} pps"))
        ),
        (Some(ok), None) => println!("packet mode loss onset: none up to {ok:.0} pps offered"),
        (None, None) => {}
    }
    std::fs::write(stats_path, stats_before.trim()).ok();
}
