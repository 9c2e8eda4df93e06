//! The probe on this machine's real kernel: "pods" are network namespaces
//! on a bridge, the probe (eBPF) observes the host side of their veths and
//! streams to a gRPC receiver in this test, and nftables in one pod drops a
//! port like a CNI would. TCP, UDP and ICMP in IPv4 and IPv6, both
//! granularities: exact 5-tuples, directions, counts, flags, and the drop
//! with reason NETFILTER_DROP. Needs root; under CI it is never skipped.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use flowgate_probe::config::GranularityArg;
use flowgate_proto::v1::{Direction, Failure, Flow, KernelFate, Outcome, Protocol};
use support::{Pods, Receiver, attached, sh};

// ---------- traffic ----------

const TCP_PORT: u16 = 7001;
const UDP_PORT: u16 = 7003;
const DROPPED_PORT: u16 = 7009;

/// One TCP connection: connect, send, half-close, read the answer, close.
/// Returns the client's source port.
fn tcp_exchange(pods: &Pods, server: IpAddr) -> u16 {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let srv = pods.run_in('b', move || {
        let l = TcpListener::bind(SocketAddr::new(server, TCP_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
        s.write_all(b"bye").unwrap();
        buf
    });
    ready_rx.recv().unwrap();
    let cli = pods.run_in('a', move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::new(server, TCP_PORT), Duration::from_secs(5))
                .unwrap();
        let port = s.local_addr().unwrap().port();
        s.write_all(b"hello flowgate").unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).unwrap();
        assert_eq!(answer, b"bye");
        port
    });
    assert_eq!(srv.join().unwrap(), b"hello flowgate");
    cli.join().unwrap()
}

/// Three datagrams, each echoed. Returns the client's source port.
fn udp_echo(pods: &Pods, server: IpAddr) -> u16 {
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let srv = pods.run_in('b', move || {
        let s = UdpSocket::bind(SocketAddr::new(server, UDP_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (n, from) = s.recv_from(&mut buf).unwrap();
            s.send_to(&buf[..n], from).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    let cli = pods.run_in('a', move || {
        let bind: SocketAddr = if server.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        let s = UdpSocket::bind(bind).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for i in 0..3u8 {
            s.send_to(&[i; 20], SocketAddr::new(server, UDP_PORT))
                .unwrap();
            s.recv_from(&mut buf).unwrap();
        }
        s.local_addr().unwrap().port()
    });
    srv.join().unwrap();
    cli.join().unwrap()
}

/// Four datagrams to the port pod b's nftables drops.
fn udp_to_dropped_port(pods: &Pods, server: IpAddr) -> u16 {
    pods.run_in('a', move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        for _ in 0..4 {
            s.send_to(b"dropped", SocketAddr::new(server, DROPPED_PORT))
                .unwrap();
        }
        s.local_addr().unwrap().port()
    })
    .join()
    .unwrap()
}

/// Linux's IPV6_DSTOPTS socket option (not in the libc crate for Linux).
const IPV6_DSTOPTS: libc::c_int = 59;

/// Four IPv6 datagrams carrying a destination-options extension header to
/// the port pod b's nftables drops.
fn udp6_with_ext_header_to_dropped_port(pods: &Pods, server: IpAddr) -> u16 {
    pods.run_in('a', move || {
        use std::os::fd::AsRawFd;
        let s = UdpSocket::bind("[::]:0").unwrap();
        // Next header (filled in by the kernel), length 0 (8 bytes), PadN.
        let opts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: valid fd, pointer to a local of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                IPV6_DSTOPTS,
                opts.as_ptr().cast(),
                opts.len() as u32,
            )
        };
        assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", std::io::Error::last_os_error());
        for _ in 0..4 {
            s.send_to(b"dropped", SocketAddr::new(server, DROPPED_PORT))
                .unwrap();
        }
        s.local_addr().unwrap().port()
    })
    .join()
    .unwrap()
}

fn ping(pods: &Pods, dst: IpAddr) {
    let ns = pods.ns('a');
    let dst = dst.to_string();
    sh(&[
        "ip", "netns", "exec", &ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", &dst,
    ]);
}

// ---------- assertions over what the receiver got ----------

#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    packets: u64,
    flags: u32,
    replies: u64,
    dropped: u64,
    drop_reason_ok: bool,
    records: u64,
}

type FlowId = (IpAddr, IpAddr, u32, u32, i32, i32, String);

fn ip(b: &[u8]) -> IpAddr {
    flowgate_probe::aggregate::ip_of(b).expect("4 or 16 address bytes")
}

fn summarize(flows: &[Flow]) -> BTreeMap<FlowId, Seen> {
    let mut out: BTreeMap<FlowId, Seen> = BTreeMap::new();
    for f in flows {
        let id = (
            ip(&f.src_ip),
            ip(&f.dst_ip),
            f.src_port,
            f.dst_port,
            f.protocol,
            f.direction,
            f.interface.clone(),
        );
        let s = out.entry(id).or_default();
        s.packets += f.packets;
        s.flags |= f.tcp_flags;
        s.records += 1;
        if f.is_reply {
            s.replies += 1;
        }
        if f.kernel_fate == KernelFate::Dropped as i32 {
            s.dropped = s.dropped.max(f.dropped_packets);
            s.drop_reason_ok = f.drop_reason == "NETFILTER_DROP";
        }
    }
    out
}

const EGRESS: i32 = Direction::Egress as i32;
const INGRESS: i32 = Direction::Ingress as i32;

fn run(granularity: GranularityArg, id: u32) {
    if !support::is_root() {
        let msg = "!! SKIPPED probe capture test: needs root (eBPF, network namespaces, nftables)";
        assert!(std::env::var_os("CI").is_none(), "{msg}; required in CI");
        eprintln!("{msg}");
        return;
    }
    let pods = Pods::create(id);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);

    let probe = support::start(
        &rt,
        support::config(
            format!("http://{addr}"),
            vec![format!("fgv{id}*")],
            granularity,
            Duration::from_millis(200),
        ),
    );
    let metrics_addr = probe.metrics_addr;

    // The programs are attached: the kernel lists them on both veths.
    for pod in ['a', 'b'] {
        assert_eq!(
            attached(&pods.veth(pod)),
            ["fg_tc_ingress", "fg_tc_egress"],
            "{}",
            pods.veth(pod)
        );
    }

    let (a4, b4, a6, b6) = (pods.v4(1), pods.v4(2), pods.v6(1), pods.v6(2));
    let tcp4 = tcp_exchange(&pods, b4);
    let tcp6 = tcp_exchange(&pods, b6);
    let udp4 = udp_echo(&pods, b4);
    let udp6 = udp_echo(&pods, b6);
    ping(&pods, b4);
    ping(&pods, b6);
    let dropped = udp_to_dropped_port(&pods, b4);
    let dropped6 = udp6_with_ext_header_to_dropped_port(&pods, b6);

    let (va, vb) = (pods.veth('a'), pods.veth('b'));
    let tcp = Protocol::Tcp as i32;
    let udp = Protocol::Udp as i32;
    let icmp = Protocol::Icmp as i32;
    let icmp6 = Protocol::Icmpv6 as i32;
    let key = |s: IpAddr, d: IpAddr, sp: u16, dp: u16, p: i32, dir: i32, ifc: &str| -> FlowId {
        (s, d, sp.into(), dp.into(), p, dir, ifc.to_string())
    };
    // Every expectation, and the condition to stop waiting.
    let complete = |m: &BTreeMap<FlowId, Seen>| {
        let get = |k: &FlowId| m.get(k).copied().unwrap_or_default();
        get(&key(a4, b4, 8, 0, icmp, INGRESS, &vb)).packets >= 2
            && get(&key(a6, b6, 128, 0, icmp6, INGRESS, &vb)).packets >= 2
            && get(&key(b4, a4, TCP_PORT, tcp4, tcp, INGRESS, &va)).flags & 0x01 != 0
            && get(&key(b6, a6, TCP_PORT, tcp6, tcp, INGRESS, &va)).flags & 0x01 != 0
            && get(&key(a4, b4, dropped, DROPPED_PORT, udp, INGRESS, &vb)).dropped >= 4
            && get(&key(a6, b6, dropped6, DROPPED_PORT, udp, INGRESS, &vb)).dropped >= 4
            && get(&key(b6, a6, UDP_PORT, udp6, udp, INGRESS, &va)).packets >= 3
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = BTreeMap::new();
    while Instant::now() < deadline {
        seen = summarize(&receiver.flows.lock().unwrap());
        if complete(&seen) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Metrics are served while running.
    let body = rt.block_on(async {
        let mut s = tokio::net::TcpStream::connect(metrics_addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /metrics HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut s, &mut out)
            .await
            .unwrap();
        out
    });
    assert!(
        body.contains("flowgate_probe_packets_total{interface=\"")
            && body.contains("flowgate_probe_kernel_drops_total{reason=\"NETFILTER_DROP\"}"),
        "{body}"
    );

    let summary = probe.stop(&rt);
    let get = |k: FlowId| {
        seen.get(&k)
            .copied()
            .unwrap_or_else(|| panic!("no flow {k:?}; got:\n{}", dump(&seen)))
    };

    // UDP, both versions: exactly 3 datagrams each way, seen leaving the
    // client's veth (pod egress) and entering the server's (pod ingress).
    for (a, b, port) in [(a4, b4, udp4), (a6, b6, udp6)] {
        for (ifc, dir) in [(&va, EGRESS), (&vb, INGRESS)] {
            let s = get(key(a, b, port, UDP_PORT, udp, dir, ifc));
            assert_eq!((s.packets, s.replies), (3, 0), "udp {a}->{b} on {ifc}");
        }
        for (ifc, dir) in [(&vb, EGRESS), (&va, INGRESS)] {
            let s = get(key(b, a, UDP_PORT, port, udp, dir, ifc));
            assert_eq!(s.packets, 3, "udp reply {b}->{a} on {ifc}");
            assert_eq!(
                s.replies, s.records,
                "udp reply {b}->{a} on {ifc} is a reply"
            );
        }
    }
    // TCP, both versions: the client sends SYN, data (PSH) and FIN; the
    // server answers SYN+ACK, data and FIN. The same packets cross both
    // veths, so the counts on the two interfaces agree exactly.
    for (a, b, port) in [(a4, b4, tcp4), (a6, b6, tcp6)] {
        let out = get(key(a, b, port, TCP_PORT, tcp, EGRESS, &va));
        let inn = get(key(a, b, port, TCP_PORT, tcp, INGRESS, &vb));
        assert_eq!(
            out.packets, inn.packets,
            "tcp {a}->{b}: same packets on both veths"
        );
        assert!(out.packets >= 4, "tcp {a}->{b}: {out:?}");
        assert_eq!(
            out.flags & 0x1b,
            0x1b,
            "tcp {a}->{b} flags SYN|ACK|PSH|FIN: {:#x}",
            out.flags
        );
        assert_eq!(out.flags & 0x04, 0, "no RST");
        assert_eq!(out.replies, 0);
        let back = get(key(b, a, TCP_PORT, port, tcp, EGRESS, &vb));
        let back_in = get(key(b, a, TCP_PORT, port, tcp, INGRESS, &va));
        assert_eq!(back.packets, back_in.packets);
        assert_eq!(
            back.flags & 0x13,
            0x13,
            "tcp {b}->{a} flags SYN|ACK|FIN: {:#x}",
            back.flags
        );
        assert_eq!(back.replies, back.records, "tcp {b}->{a} is the reply");
    }
    // ICMP echo, both versions: 2 requests (type 8 / 128) and 2 replies (0 / 129).
    for (a, b, req, rep, p) in [(a4, b4, 8u16, 0u16, icmp), (a6, b6, 128, 129, icmp6)] {
        assert_eq!(
            get(key(a, b, req, 0, p, EGRESS, &va)).packets,
            2,
            "echo request {a}->{b}"
        );
        assert_eq!(get(key(a, b, req, 0, p, INGRESS, &vb)).packets, 2);
        let reply = get(key(b, a, rep, 0, p, EGRESS, &vb));
        assert_eq!(
            (reply.packets, reply.replies),
            (2, reply.records),
            "echo reply {b}->{a} is a reply"
        );
        assert_eq!(get(key(b, a, rep, 0, p, INGRESS, &va)).packets, 2);
    }
    // The drop: delivered to pod b's veth, then dropped by nftables.
    let d = get(key(a4, b4, dropped, DROPPED_PORT, udp, INGRESS, &vb));
    assert_eq!(
        (d.packets, d.dropped, d.drop_reason_ok),
        (4, 4, true),
        "dropped flow: {d:?}"
    );
    // IPv6 with an extension header: the drop path walks it to the ports,
    // so the drop joins its flow.
    let d6 = get(key(a6, b6, dropped6, DROPPED_PORT, udp, INGRESS, &vb));
    assert_eq!(
        (d6.packets, d6.dropped, d6.drop_reason_ok),
        (4, 4, true),
        "dropped IPv6 flow with extension header: {d6:?}"
    );
    // Flows that were delivered are not marked dropped.
    assert_eq!(
        get(key(a4, b4, udp4, UDP_PORT, udp, INGRESS, &vb)).dropped,
        0
    );

    // Nothing lost, everything acknowledged, nothing left attached.
    assert_eq!(
        (
            summary.ringbuf_lost,
            summary.buffer_overflow_records,
            summary.unacknowledged_records
        ),
        (0, 0, 0)
    );
    let batches = receiver.batches.lock().unwrap().clone();
    let seqs: Vec<u64> = batches.iter().map(|(_, s)| *s).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "batches arrive in order, once: {seqs:?}"
    );
    for pod in ['a', 'b'] {
        assert!(
            attached(&pods.veth(pod)).is_empty(),
            "{} detached on exit",
            pods.veth(pod)
        );
    }
}

fn dump(m: &BTreeMap<FlowId, Seen>) -> String {
    m.iter()
        .map(|(k, v)| format!("  {k:?} => {v:?}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn test_id(offset: u32) -> u32 {
    (std::process::id() % 100) * 2 + offset + 20
}

#[test]
fn flow_granularity_on_the_real_kernel() {
    run(GranularityArg::Flow, test_id(0));
}

#[test]
fn packet_granularity_on_the_real_kernel() {
    run(GranularityArg::Packet, test_id(1));
}

fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Interfaces created after the probe started are observed within moments,
/// and vanishing ones are let go, without restarting anything.
#[test]
fn follows_interfaces_that_appear_and_vanish() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED interface-following test: needs root");
        return;
    }
    let id = test_id(2);
    let (host, peer) = (format!("fgw{id}x"), format!("fgw{id}y"));
    let _ = Command::new("ip").args(["link", "del", &host]).output();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);
    let probe = support::start(
        &rt,
        support::config(
            format!("http://{addr}"),
            vec![format!("fgw{id}*")],
            GranularityArg::Flow,
            Duration::from_millis(200),
        ),
    );
    let metrics = probe.metrics.clone();
    assert_eq!(metrics.interfaces.get(), 0);

    sh(&[
        "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
    ]);
    wait_until(
        "the new veth pair is observed",
        Duration::from_secs(3),
        || attached(&host).len() == 2 && attached(&peer).len() == 2,
    );
    wait_until(
        "metrics count both interfaces",
        Duration::from_secs(3),
        || metrics.interfaces.get() == 2,
    );
    sh(&["ip", "link", "del", &host]);
    wait_until(
        "the vanished pair is let go",
        Duration::from_secs(3),
        || metrics.interfaces.get() == 0,
    );

    probe.stop(&rt);
}

/// While the collector is away, flows wait in the buffer; when it comes
/// back they are delivered once, none lost, none twice.
#[test]
fn buffers_while_the_collector_is_away() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED collector-away test: needs root");
        return;
    }
    let pods = Pods::create(test_id(3));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A free port where nothing listens yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let probe = support::start(
        &rt,
        support::config(
            format!("http://127.0.0.1:{port}"),
            vec![pods.veth('a')],
            GranularityArg::Flow,
            Duration::from_millis(200),
        ),
    );
    let metrics = probe.metrics.clone();

    let client_port = udp_echo(&pods, pods.v4(2));
    wait_until("records wait in the buffer", Duration::from_secs(5), || {
        metrics.buffer_records.get() > 0
    });
    assert!(metrics.reconnects.get() > 0, "the probe kept trying");

    // The collector comes up on that port.
    let receiver = Receiver::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
        .unwrap();
    let r = receiver.clone();
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(flowgate_proto::v1::flow_ingest_server::FlowIngestServer::new(r))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    wait_until("the buffer drains", Duration::from_secs(20), || {
        metrics.buffer_records.get() == 0
    });
    let summary = probe.stop(&rt);
    assert_eq!(
        (
            summary.buffer_overflow_records,
            summary.unacknowledged_records
        ),
        (0, 0)
    );

    let seen = summarize(&receiver.flows.lock().unwrap());
    let (a, b, va) = (pods.v4(1), pods.v4(2), pods.veth('a'));
    let udp = Protocol::Udp as i32;
    let out = seen[&(
        a,
        b,
        client_port.into(),
        UDP_PORT.into(),
        udp,
        EGRESS,
        va.clone(),
    )];
    let back = seen[&(b, a, UDP_PORT.into(), client_port.into(), udp, INGRESS, va)];
    assert_eq!(
        (out.packets, back.packets),
        (3, 3),
        "delivered once, nothing lost"
    );
}

// ---------- connection outcomes ----------

const CLOSED_PORT: u16 = 7020;
const SILENT_PORT: u16 = 7022;

/// Outcome and failure of every record of a flow, oldest window first.
type Judged = BTreeMap<FlowId, Vec<(Outcome, Failure, KernelFate)>>;

fn judged(flows: &[Flow]) -> Judged {
    let mut sorted: Vec<&Flow> = flows.iter().collect();
    sorted.sort_by_key(|f| f.last_seen_ns);
    let mut out = Judged::new();
    for f in sorted {
        let id = (
            ip(&f.src_ip),
            ip(&f.dst_ip),
            f.src_port,
            f.dst_port,
            f.protocol,
            f.direction,
            f.interface.clone(),
        );
        out.entry(id)
            .or_default()
            .push((f.outcome(), f.failure(), f.kernel_fate()));
    }
    out
}

/// The last judgement of a flow, or None if no record arrived.
fn last(j: &Judged, k: &FlowId) -> Option<(Outcome, Failure, KernelFate)> {
    j.get(k).and_then(|v| v.last().copied())
}

/// Refused (RST, and the kernel's NO_SOCKET free), dropped by nftables,
/// established then closed, and unanswered, each told apart by the probe on
/// the real kernel.
#[test]
fn connection_outcomes_on_the_real_kernel() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED connection-outcome test: needs root");
        return;
    }
    let pods = Pods::create(test_id(4));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);
    let probe = support::start(
        &rt,
        support::config(
            format!("http://{addr}"),
            vec![pods.veth('a'), pods.veth('b')],
            GranularityArg::Flow,
            Duration::from_millis(200),
        ),
    );
    let (a, b, va) = (pods.v4(1), pods.v4(2), pods.veth('a'));
    let (tcp, udp) = (Protocol::Tcp as i32, Protocol::Udp as i32);
    let out = |sport: u16, dport: u16, p: i32| -> FlowId {
        (a, b, sport.into(), dport.into(), p, EGRESS, va.clone())
    };
    let wait_for = |what: &str, k: &FlowId, want: Outcome| {
        wait_until(what, Duration::from_secs(10), || {
            last(&judged(&receiver.flows.lock().unwrap()), k).is_some_and(|j| j.0 == want)
        });
    };

    // Nothing listens: TCP is answered by RST, UDP freed as NO_SOCKET.
    let refused_tcp = pods
        .run_in('a', move || {
            let (port, r) = connect_from_known_port(b, CLOSED_PORT);
            (port, r.expect_err("nothing listens"))
        })
        .join()
        .unwrap();
    assert_eq!(refused_tcp.1.kind(), std::io::ErrorKind::ConnectionRefused);
    let refused_udp = pods
        .run_in('a', move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"anyone?", SocketAddr::new(b, CLOSED_PORT))
                .unwrap();
            s.local_addr().unwrap().port()
        })
        .join()
        .unwrap();
    let dropped = udp_to_dropped_port(&pods, b);

    // Established, held open across windows, then closed both ways.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let srv = pods.run_in('b', move || {
        let l = TcpListener::bind(SocketAddr::new(b, TCP_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let (mut s, _) = l.accept().unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).unwrap();
    });
    ready_rx.recv().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::sync_channel(1);
    let (close_tx, close_rx) = std::sync::mpsc::sync_channel::<()>(1);
    let cli = pods.run_in('a', move || {
        let mut s = TcpStream::connect(SocketAddr::new(b, TCP_PORT)).unwrap();
        s.write_all(b"held open").unwrap();
        port_tx.send(s.local_addr().unwrap().port()).unwrap();
        close_rx.recv().unwrap();
    });
    let held = port_rx.recv().unwrap();
    wait_for(
        "the open connection is established",
        &out(held, TCP_PORT, tcp),
        Outcome::Established,
    );
    close_tx.send(()).unwrap();
    cli.join().unwrap();
    srv.join().unwrap();
    wait_for(
        "the connection is closed",
        &out(held, TCP_PORT, tcp),
        Outcome::Closed,
    );

    // A destination that never answers: a UDP socket that reads and says
    // nothing, and a TCP listener whose answers have no route back.
    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let silent = pods.run_in('b', move || {
        let s = UdpSocket::bind(SocketAddr::new(b, SILENT_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            s.recv_from(&mut buf).unwrap();
        }
    });
    ready_rx.recv().unwrap();
    let unanswered_udp = pods
        .run_in('a', move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            for _ in 0..3 {
                s.send_to(b"hello?", SocketAddr::new(b, SILENT_PORT))
                    .unwrap();
                // Retries, as a client waiting for an answer would.
                std::thread::sleep(Duration::from_millis(300));
            }
            s.local_addr().unwrap().port()
        })
        .join()
        .unwrap();
    silent.join().unwrap();
    let ns_b = pods.ns('b');
    sh(&[
        "ip",
        "-n",
        &ns_b,
        "route",
        "add",
        "blackhole",
        &format!("{a}/32"),
    ]);
    let _listener = pods
        .run_in('b', move || {
            TcpListener::bind(SocketAddr::new(b, CLOSED_PORT + 1)).unwrap()
        })
        .join()
        .unwrap();
    let unanswered_tcp = pods
        .run_in('a', move || {
            let (port, r) = connect_from_known_port(b, CLOSED_PORT + 1);
            assert!(r.is_err(), "no answer comes back");
            port
        })
        .join()
        .unwrap();

    wait_for(
        "the silent UDP exchange is unanswered",
        &out(unanswered_udp, SILENT_PORT, udp),
        Outcome::Unanswered,
    );
    wait_for(
        "the SYN without answer is unanswered",
        &out(unanswered_tcp, CLOSED_PORT + 1, tcp),
        Outcome::Unanswered,
    );
    wait_for(
        "the UDP to a closed port is refused",
        &out(refused_udp, CLOSED_PORT, udp),
        Outcome::Refused,
    );
    probe.stop(&rt);

    let j = judged(&receiver.flows.lock().unwrap());
    let get = |k: FlowId| last(&j, &k).unwrap_or_else(|| panic!("no flow {k:?}; got:\n{j:#?}"));
    use {Failure as F, KernelFate as K, Outcome as O};
    assert_eq!(
        get(out(refused_tcp.0, CLOSED_PORT, tcp)),
        (O::Refused, F::NoListener, K::Forwarded),
        "no listener is no policy drop (no mismatch)"
    );
    assert_eq!(
        get(out(refused_udp, CLOSED_PORT, udp)),
        (O::Refused, F::NoListener, K::Forwarded)
    );
    assert_eq!(
        get(out(dropped, DROPPED_PORT, udp)),
        (O::Dropped, F::Policy, K::Dropped)
    );
    let lifecycle: Vec<Outcome> = j[&out(held, TCP_PORT, tcp)].iter().map(|x| x.0).collect();
    assert_eq!(
        lifecycle.first(),
        Some(&O::Established),
        "first window: {lifecycle:?}"
    );
    assert_eq!(lifecycle.last(), Some(&O::Closed), "{lifecycle:?}");
    // The answers count as the same connection's.
    let back = (b, a, TCP_PORT.into(), held.into(), tcp, INGRESS, va.clone());
    assert_eq!(get(back).0, O::Closed);
    for k in [
        out(unanswered_udp, SILENT_PORT, udp),
        out(unanswered_tcp, CLOSED_PORT + 1, tcp),
    ] {
        assert_eq!(get(k), (O::Unanswered, F::Unspecified, K::Forwarded));
    }
}

/// Connects from an ephemeral port chosen first, so the port is known even
/// when the connection fails. Gives up after 2.5 s (one SYN retry).
fn connect_from_known_port(dst: IpAddr, port: u16) -> (u16, std::io::Result<TcpStream>) {
    let probe = UdpSocket::bind("0.0.0.0:0").unwrap();
    let sport = probe.local_addr().unwrap().port();
    drop(probe);
    // SAFETY: plain socket calls on a fresh fd owned below by TcpStream.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
    assert!(fd >= 0);
    let IpAddr::V4(d) = dst else {
        panic!("IPv4 only")
    };
    let sin = |ip: std::net::Ipv4Addr, p: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: p.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let local = sin(std::net::Ipv4Addr::UNSPECIFIED, sport);
    let remote = sin(d, port);
    let len = size_of::<libc::sockaddr_in>() as u32;
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 500_000,
    };
    // SAFETY: valid fd, pointers to locals of the stated sizes.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&timeout as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as u32,
        );
        assert_eq!(
            libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len),
            0
        );
        libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len)
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours; the stream closes it.
    let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    if rc == 0 {
        (sport, Ok(stream))
    } else {
        (sport, Err(err))
    }
}

// ---------- DNS names ----------

const DNS_NAME: &str = "svc.flowgate.test";
const DNS_TARGET_PORT: u16 = 7030;

/// A pod resolves a name through a DNS server in another namespace (a tiny
/// one, here: it answers every A query with pod b's address) and connects
/// to the answer: its flows carry the name it resolved.
#[test]
fn flows_carry_the_dns_name_the_pod_resolved() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED DNS-name test: needs root");
        return;
    }
    use flowgate_probe::dns::wire;
    let pods = Pods::create(test_id(5));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);
    let probe = support::start(
        &rt,
        support::config(
            format!("http://{addr}"),
            vec![pods.veth('a')],
            GranularityArg::Flow,
            Duration::from_millis(200),
        ),
    );
    let (a, b, va) = (pods.v4(1), pods.v4(2), pods.veth('a'));
    let IpAddr::V4(b_v4) = b else { unreachable!() };

    let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
    let server = pods.run_in('b', move || {
        let s = UdpSocket::bind(SocketAddr::new(b, 53)).unwrap();
        let l = TcpListener::bind(SocketAddr::new(b, DNS_TARGET_PORT)).unwrap();
        ready_tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        s.send_to(&wire::answer(&buf[..n], &[b_v4.octets()], 300), from)
            .unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
    });
    ready_rx.recv().unwrap();
    let client_port = pods
        .run_in('a', move || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s.send_to(&wire::query(0x4242, DNS_NAME), SocketAddr::new(b, 53))
                .unwrap();
            let mut buf = [0u8; 512];
            let n = s.recv(&mut buf).unwrap();
            let answer = flowgate_probe::dns::parse_response(&buf[..n]).unwrap();
            let (target, _) = answer.addresses[0];
            let mut c = TcpStream::connect(SocketAddr::new(target, DNS_TARGET_PORT)).unwrap();
            c.write_all(b"hi").unwrap();
            c.local_addr().unwrap().port()
        })
        .join()
        .unwrap();
    server.join().unwrap();

    let tcp = Protocol::Tcp as i32;
    let out: FlowId = (
        a,
        b,
        client_port.into(),
        DNS_TARGET_PORT.into(),
        tcp,
        EGRESS,
        va.clone(),
    );
    let back: FlowId = (
        b,
        a,
        DNS_TARGET_PORT.into(),
        client_port.into(),
        tcp,
        INGRESS,
        va.clone(),
    );
    let names = |k: &FlowId| -> Vec<(String, String)> {
        receiver
            .flows
            .lock()
            .unwrap()
            .iter()
            .filter(|f| {
                (
                    ip(&f.src_ip),
                    ip(&f.dst_ip),
                    f.src_port,
                    f.dst_port,
                    f.protocol,
                    f.direction,
                    f.interface.clone(),
                ) == *k
            })
            .map(|f| (f.src_dns_name.clone(), f.dst_dns_name.clone()))
            .collect()
    };
    wait_until(
        "both directions are exported",
        Duration::from_secs(10),
        || !names(&out).is_empty() && !names(&back).is_empty(),
    );
    let metrics = probe.metrics.clone();
    probe.stop(&rt);
    for (src, dst) in names(&out) {
        assert_eq!(
            (src.as_str(), dst.as_str()),
            ("", DNS_NAME),
            "pod a sends to the name"
        );
    }
    for (src, dst) in names(&back) {
        assert_eq!(
            (src.as_str(), dst.as_str()),
            (DNS_NAME, ""),
            "pod a hears from the name"
        );
    }
    assert_eq!(metrics.dns_responses.get(), 1);
    assert_eq!(metrics.dns_malformed.get(), 0);
}

// ---------- conntrack ----------

const INVALID_PORT: u16 = 7030;

/// A TCP segment with SYN and FIN (a combination conntrack calls invalid)
/// from pod a's `sport` to `dst`, sent through a raw socket.
fn send_syn_fin(pods: &Pods, src: IpAddr, dst: IpAddr, sport: u16) {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("IPv4 only")
    };
    pods.run_in('a', move || {
        let mut seg = [0u8; 20];
        seg[0..2].copy_from_slice(&sport.to_be_bytes());
        seg[2..4].copy_from_slice(&INVALID_PORT.to_be_bytes());
        seg[4..8].copy_from_slice(&1u32.to_be_bytes());
        seg[12] = 5 << 4;
        seg[13] = 0x03; // FIN | SYN
        seg[14..16].copy_from_slice(&512u16.to_be_bytes());
        // Checksum over the pseudo-header and the segment, so that only
        // the flags make it invalid.
        let mut sum: u32 = 0;
        let pseudo = [&s.octets()[..], &d.octets()[..], &[0, 6, 0, 20]].concat();
        for chunk in pseudo.chunks(2).chain(seg.chunks(2)) {
            sum += u32::from(u16::from_be_bytes([chunk[0], chunk[1]]));
        }
        while sum >> 16 != 0 {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        seg[16..18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
        // SAFETY: a raw socket, closed below; sendto with a valid
        // sockaddr_in and a buffer of the given length.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_TCP);
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let mut to: libc::sockaddr_in = std::mem::zeroed();
            to.sin_family = libc::AF_INET as u16;
            to.sin_addr.s_addr = u32::from_ne_bytes(d.octets());
            let n = libc::sendto(
                fd,
                seg.as_ptr().cast(),
                seg.len(),
                0,
                (&to as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            assert_eq!(n, 20, "sendto: {}", std::io::Error::last_os_error());
            libc::close(fd);
        }
    })
    .join()
    .unwrap();
}

/// With connection tracking on in pod b, a segment conntrack judges invalid
/// and drops (`ct state invalid drop`) is a conntrack failure, while the
/// port nftables drops by rule stays a policy drop.
#[test]
fn conntrack_invalid_drops_are_told_from_policy_drops() {
    if !support::is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "needs root; required in CI"
        );
        eprintln!("!! SKIPPED conntrack test: needs root");
        return;
    }
    let pods = Pods::create(test_id(6));
    sh(&[
        "ip",
        "netns",
        "exec",
        &pods.ns('b'),
        "nft",
        "insert rule inet fgtest input ct state invalid drop",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let receiver = Receiver::default();
    let addr = support::serve(&rt, &receiver);
    let probe = support::start(
        &rt,
        support::config(
            format!("http://{addr}"),
            vec![pods.veth('a'), pods.veth('b')],
            GranularityArg::Flow,
            Duration::from_millis(200),
        ),
    );
    let (a, b, va) = (pods.v4(1), pods.v4(2), pods.veth('a'));
    let out = |sport: u16, dport: u16, p: Protocol| -> FlowId {
        (
            a,
            b,
            sport.into(),
            dport.into(),
            p as i32,
            EGRESS,
            va.clone(),
        )
    };
    let invalid_sport = 40123;
    send_syn_fin(&pods, a, b, invalid_sport);
    let dropped = udp_to_dropped_port(&pods, b);
    let invalid = out(invalid_sport, INVALID_PORT, Protocol::Tcp);
    let policy = out(dropped, DROPPED_PORT, Protocol::Udp);
    wait_until("both drops are judged", Duration::from_secs(10), || {
        let j = judged(&receiver.flows.lock().unwrap());
        [&invalid, &policy]
            .iter()
            .all(|k| last(&j, k).is_some_and(|x| x.0 == Outcome::Dropped))
    });
    probe.stop(&rt);
    let j = judged(&receiver.flows.lock().unwrap());
    assert_eq!(
        last(&j, &invalid),
        Some((Outcome::Dropped, Failure::Conntrack, KernelFate::Dropped)),
        "{j:#?}"
    );
    assert_eq!(
        last(&j, &policy),
        Some((Outcome::Dropped, Failure::Policy, KernelFate::Dropped)),
        "conntrack on, the rule's drop is still policy: {j:#?}"
    );
}
