//! The TC programs run by the kernel on crafted packets (BPF_PROG_TEST_RUN):
//! what they record for each packet shape, in both granularities, and that
//! they never drop or change a packet. Needs root (CAP_BPF); without it the
//! test says so loudly, and fails under CI.

use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};

use aya::Ebpf;
use aya::maps::{PerCpuArray, PerCpuHashMap, RingBuf};
use aya::programs::SchedClassifier;
use flowgate_ebpf::abi::{self, Event, FlowKey, FlowStats, counter};
use flowgate_ebpf::{Granularity, names};

/// `union bpf_attr`, the `test` member (BPF_PROG_TEST_RUN).
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
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

const BPF_PROG_TEST_RUN: libc::c_long = 10;
const TC_ACT_UNSPEC: u32 = u32::MAX; // -1

/// Runs the program once on `packet`; returns its verdict and the packet as
/// the program left it.
fn test_run(prog: &SchedClassifier, packet: &[u8]) -> (u32, Vec<u8>) {
    let fd = prog.fd().expect("program loaded");
    let mut out = vec![0u8; packet.len() + 256];
    let mut attr = TestRunAttr {
        prog_fd: fd.as_fd().as_raw_fd() as u32,
        data_size_in: packet.len() as u32,
        data_size_out: out.len() as u32,
        data_in: packet.as_ptr() as u64,
        data_out: out.as_mut_ptr() as u64,
        repeat: 1,
        ..Default::default()
    };
    // SAFETY: attr is a valid bpf_attr prefix; the buffers outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            size_of::<TestRunAttr>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    out.truncate(attr.data_size_out as usize);
    (attr.retval, out)
}

fn loaded(granularity: Granularity) -> Option<Ebpf> {
    let mut bpf = match flowgate_ebpf::load(granularity) {
        Ok(b) => b,
        Err(e) => {
            let msg = format!(
                "!! SKIPPED eBPF program tests: cannot load BPF programs here ({e}); run as root"
            );
            assert!(std::env::var_os("CI").is_none(), "{msg} (required in CI)");
            eprintln!("{msg}");
            return None;
        }
    };
    for name in [names::TC_INGRESS, names::TC_EGRESS] {
        let p: &mut SchedClassifier = bpf.program_mut(name).unwrap().try_into().unwrap();
        p.load()
            .unwrap_or_else(|e| panic!("verifier rejected {name}: {e:?}"));
    }
    Some(bpf)
}

// --- packet builders (checksums are irrelevant to the programs) ---

fn eth(ethertype: u16, vlans: &[u16]) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    for (i, vid) in vlans.iter().enumerate() {
        p.extend_from_slice(
            &(if i == 0 && vlans.len() > 1 {
                0x88a8u16
            } else {
                0x8100u16
            })
            .to_be_bytes(),
        );
        p.extend_from_slice(&vid.to_be_bytes());
    }
    p.extend_from_slice(&ethertype.to_be_bytes());
    p
}

fn ipv4(proto: u8, src: [u8; 4], dst: [u8; 4], frag_offset: u16, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1]);
    h.extend_from_slice(&frag_offset.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn ipv6(next: u8, src: [u8; 16], dst: [u8; 16], payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

fn tcp(sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0; 8]);
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

fn ports(sport: u16, dport: u16) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&[0, 8, 0, 0]);
    u
}

const V4A: [u8; 4] = [10, 0, 0, 1];
const V4B: [u8; 4] = [10, 0, 0, 2];
fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0xfd;
    a[15] = last;
    a
}

struct Case {
    name: &'static str,
    packet: Vec<u8>,
    /// (src, dst, protocol, src_port, dst_port, tcp_flags), or the counter it must bump.
    want: Result<(&'static str, &'static str, u8, u16, u16, u8), u32>,
}

fn cases() -> Vec<Case> {
    let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
    // IPv6 hop-by-hop (8 bytes) then destination options (16 bytes) then UDP.
    let mut ext = vec![60, 0, 1, 4, 0, 0, 0, 0]; // next = DSTOPTS, len 0 → 8 bytes
    ext.extend_from_slice(&[17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // next = UDP, len 1 → 16 bytes
    ext.extend_from_slice(&ports(5353, 53));
    // IPv6 fragment header (first fragment, offset 0) then TCP.
    let mut frag6 = vec![6, 0, 0, 1, 0, 0, 0, 42];
    frag6.extend_from_slice(&tcp(1000, 2000, 0x10));
    vec![
        Case {
            name: "ipv4 tcp syn",
            packet: cat(
                eth(0x0800, &[]),
                ipv4(6, V4A, V4B, 0, &tcp(40000, 8080, 0x02)),
            ),
            want: Ok(("10.0.0.1", "10.0.0.2", 6, 40000, 8080, 0x02)),
        },
        Case {
            name: "ipv4 udp",
            packet: cat(eth(0x0800, &[]), ipv4(17, V4A, V4B, 0, &ports(5000, 53))),
            want: Ok(("10.0.0.1", "10.0.0.2", 17, 5000, 53, 0)),
        },
        Case {
            name: "ipv4 sctp",
            packet: cat(eth(0x0800, &[]), ipv4(132, V4A, V4B, 0, &ports(3868, 3869))),
            want: Ok(("10.0.0.1", "10.0.0.2", 132, 3868, 3869, 0)),
        },
        Case {
            name: "ipv4 icmp echo request",
            packet: cat(
                eth(0x0800, &[]),
                ipv4(1, V4A, V4B, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
            ),
            want: Ok(("10.0.0.1", "10.0.0.2", 1, 8, 0, 0)),
        },
        Case {
            name: "vlan ipv4 tcp",
            packet: cat(
                eth(0x0800, &[100]),
                ipv4(6, V4B, V4A, 0, &tcp(443, 50000, 0x12)),
            ),
            want: Ok(("10.0.0.2", "10.0.0.1", 6, 443, 50000, 0x12)),
        },
        Case {
            name: "qinq ipv4 udp",
            packet: cat(eth(0x0800, &[10, 20]), ipv4(17, V4A, V4B, 0, &ports(1, 2))),
            want: Ok(("10.0.0.1", "10.0.0.2", 17, 1, 2, 0)),
        },
        Case {
            name: "ipv4 non-first fragment has no ports",
            packet: cat(eth(0x0800, &[]), ipv4(17, V4A, V4B, 185, &[1, 2, 3, 4])),
            want: Ok(("10.0.0.1", "10.0.0.2", 17, 0, 0, 0)),
        },
        Case {
            name: "ipv6 tcp fin",
            packet: cat(
                eth(0x86dd, &[]),
                ipv6(6, v6(1), v6(2), &tcp(33000, 80, 0x11)),
            ),
            want: Ok(("fd00::1", "fd00::2", 6, 33000, 80, 0x11)),
        },
        Case {
            name: "ipv6 icmpv6 echo",
            packet: cat(
                eth(0x86dd, &[]),
                ipv6(58, v6(1), v6(2), &[128, 0, 0, 0, 0, 1, 0, 1]),
            ),
            want: Ok(("fd00::1", "fd00::2", 58, 128, 0, 0)),
        },
        Case {
            name: "ipv6 extension headers skipped",
            packet: cat(eth(0x86dd, &[]), ipv6(0, v6(3), v6(4), &ext)),
            want: Ok(("fd00::3", "fd00::4", 17, 5353, 53, 0)),
        },
        Case {
            name: "ipv6 first fragment keeps ports",
            packet: cat(eth(0x86dd, &[]), ipv6(44, v6(5), v6(6), &frag6)),
            want: Ok(("fd00::5", "fd00::6", 6, 1000, 2000, 0x10)),
        },
        Case {
            name: "arp is not ip",
            packet: cat(eth(0x0806, &[]), vec![0; 28]),
            want: Err(counter::NOT_IP),
        },
        Case {
            // IHL 15 announces 40 bytes of options the packet does not have.
            name: "ipv4 options run past the end",
            packet: cat(eth(0x0800, &[]), {
                let mut ip = ipv4(6, V4A, V4B, 0, &[0, 80, 0, 81]);
                ip[0] = 0x4f;
                ip
            }),
            want: Err(counter::TRUNCATED),
        },
        Case {
            name: "tcp header cut short",
            packet: cat(eth(0x0800, &[]), ipv4(6, V4A, V4B, 0, &[0x9c, 0x40, 0x1f])),
            want: Err(counter::TRUNCATED),
        },
    ]
}

fn counters(bpf: &Ebpf) -> Vec<u64> {
    let c: PerCpuArray<_, u64> = PerCpuArray::try_from(bpf.map(names::COUNTERS).unwrap()).unwrap();
    (0..counter::COUNT)
        .map(|i| c.get(&i, 0).unwrap().iter().sum())
        .collect()
}

fn check_key(name: &str, key: &FlowKey, want: (&str, &str, u8, u16, u16, u8), hook: u8) {
    let (src, dst, proto, sport, dport, _) = want;
    assert_eq!(key.src(), src.parse::<IpAddr>().unwrap(), "{name}");
    assert_eq!(key.dst(), dst.parse::<IpAddr>().unwrap(), "{name}");
    assert_eq!(
        (key.protocol, key.src_port, key.dst_port, key.hook),
        (proto, sport, dport, hook),
        "{name}"
    );
    assert_eq!(
        key.ip_version,
        if src.contains(':') {
            abi::IPV6
        } else {
            abi::IPV4
        },
        "{name}"
    );
}

/// The ring buffer, taken once: aya 0.13.1 yields empty records from a
/// `RingBuf` made again after records were consumed (aya-rs/aya#1309).
fn events(bpf: &mut Ebpf) -> RingBuf<aya::maps::MapData> {
    RingBuf::try_from(bpf.take_map(names::EVENTS).unwrap()).unwrap()
}

fn drain(rb: &mut RingBuf<aya::maps::MapData>) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = rb.next() {
        out.push(Event::from_bytes(&item).unwrap_or_else(|| {
            panic!(
                "ring-buffer record of {} bytes, expected {}",
                item.len(),
                size_of::<Event>()
            )
        }));
    }
    out
}

#[test]
fn packet_mode_reports_every_packet_exactly() {
    let Some(mut bpf) = loaded(Granularity::Packet) else {
        return;
    };
    let mut rb = events(&mut bpf);
    for case in cases() {
        let before = counters(&bpf);
        let prog: &SchedClassifier = bpf.program(names::TC_INGRESS).unwrap().try_into().unwrap();
        let (ret, out) = test_run(prog, &case.packet);
        assert_eq!(
            ret, TC_ACT_UNSPEC,
            "{}: the probe must never decide a packet's fate",
            case.name
        );
        assert_eq!(
            out, case.packet,
            "{}: the packet must be left unchanged",
            case.name
        );
        let events = drain(&mut rb);
        let after = counters(&bpf);
        assert_eq!(
            after[counter::PACKETS as usize] - before[counter::PACKETS as usize],
            1,
            "{}",
            case.name
        );
        match case.want {
            Ok(want) => {
                assert_eq!(events.len(), 1, "{}: {events:?}", case.name);
                let e = &events[0];
                assert_eq!(e.kind, abi::EVENT_PACKET, "{}", case.name);
                assert_eq!(e.len as usize, case.packet.len(), "{}", case.name);
                assert_eq!(e.tcp_flags, want.5, "{}", case.name);
                assert!(e.timestamp_ns > 0);
                check_key(case.name, &e.key, want, abi::HOOK_INGRESS);
            }
            Err(ctr) => {
                assert!(events.is_empty(), "{}: {events:?}", case.name);
                assert_eq!(
                    after[ctr as usize] - before[ctr as usize],
                    1,
                    "{}",
                    case.name
                );
            }
        }
    }
}

#[test]
fn flow_mode_aggregates_and_reports_new_flows_and_tcp_control() {
    let Some(mut bpf) = loaded(Granularity::Flow) else {
        return;
    };
    let mut rb = events(&mut bpf);
    for case in cases() {
        let Ok(want) = case.want else { continue };
        let prog: &SchedClassifier = bpf.program(names::TC_EGRESS).unwrap().try_into().unwrap();
        for _ in 0..3 {
            let (ret, _) = test_run(prog, &case.packet);
            assert_eq!(ret, TC_ACT_UNSPEC, "{}", case.name);
        }
        let events = drain(&mut rb);
        // One NEW_FLOW for the first packet; one TCP_CTRL per SYN/FIN/RST packet.
        let new_flows: Vec<_> = events
            .iter()
            .filter(|e| e.kind == abi::EVENT_NEW_FLOW)
            .collect();
        assert_eq!(new_flows.len(), 1, "{}: {events:?}", case.name);
        check_key(case.name, &new_flows[0].key, want, abi::HOOK_EGRESS);
        let ctrl = events
            .iter()
            .filter(|e| e.kind == abi::EVENT_TCP_CTRL)
            .count();
        assert_eq!(
            ctrl,
            if want.5 & 0x07 != 0 { 3 } else { 0 },
            "{}",
            case.name
        );

        let flows: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(bpf.map(names::FLOWS).unwrap()).unwrap();
        let key = new_flows[0].key;
        let per_cpu = flows.get(&key, 0).expect("flow in the table");
        let (packets, bytes, flags) = per_cpu.iter().fold((0, 0, 0), |(p, b, f), s| {
            (p + s.packets, b + s.bytes, f | s.tcp_flags)
        });
        assert_eq!(packets, 3, "{}", case.name);
        assert_eq!(bytes, 3 * case.packet.len() as u64, "{}", case.name);
        assert_eq!(flags, u32::from(want.5), "{}", case.name);
        let s = per_cpu.iter().find(|s| s.packets > 0).unwrap();
        assert!(
            s.first_seen_ns > 0 && s.last_seen_ns >= s.first_seen_ns,
            "{}",
            case.name
        );
    }
}

#[test]
fn icmp_unreachable_reports_the_tuple_it_quotes() {
    let Some(mut bpf) = loaded(Granularity::Flow) else {
        return;
    };
    let mut rb = events(&mut bpf);
    let cat = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
    // What the pod sent (10.0.0.1:5000 → 10.0.0.2:9999 UDP), quoted by the
    // destination's answer: IPv4 port unreachable, ICMPv6 address unreachable.
    let quoted_v4 = ipv4(17, V4A, V4B, 0, &ports(5000, 9999));
    let quoted_v6 = ipv6(6, v6(1), v6(2), &tcp(5001, 443, 0x02));
    let v4 = cat(
        eth(0x0800, &[]),
        ipv4(
            1,
            V4B,
            V4A,
            0,
            &cat(vec![3, 3, 0, 0, 0, 0, 0, 0], quoted_v4),
        ),
    );
    let v6 = cat(
        eth(0x86dd, &[]),
        ipv6(
            58,
            v6(2),
            v6(1),
            &cat(vec![1, 3, 0, 0, 0, 0, 0, 0], quoted_v6),
        ),
    );
    // Not an error: an echo request has no quote.
    let echo = cat(
        eth(0x0800, &[]),
        ipv4(1, V4A, V4B, 0, &[8, 0, 0, 0, 0, 1, 0, 1]),
    );
    let prog: &SchedClassifier = bpf.program(names::TC_EGRESS).unwrap().try_into().unwrap();
    for (name, packet, want) in [
        (
            "v4 port unreachable",
            v4,
            Some(("10.0.0.1", "10.0.0.2", 17, 5000, 9999, 3 << 8 | 3)),
        ),
        (
            "v6 address unreachable",
            v6,
            Some(("fd00::1", "fd00::2", 6, 5001, 443, 1 << 8 | 3)),
        ),
        ("echo request", echo, None),
    ] {
        let (ret, _) = test_run(prog, &packet);
        assert_eq!(ret, TC_ACT_UNSPEC, "{name}");
        let events = drain(&mut rb);
        let unreach: Vec<_> = events
            .iter()
            .filter(|e| e.kind == abi::EVENT_UNREACH)
            .collect();
        assert_eq!(
            events
                .iter()
                .filter(|e| e.kind == abi::EVENT_NEW_FLOW)
                .count(),
            1,
            "{name}: the ICMP message is a flow of its own too: {events:?}"
        );
        match want {
            None => assert!(unreach.is_empty(), "{name}: {events:?}"),
            Some((src, dst, proto, sport, dport, icmp)) => {
                assert_eq!(unreach.len(), 1, "{name}: {events:?}");
                let e = unreach[0];
                check_key(
                    name,
                    &e.key,
                    (src, dst, proto, sport, dport, 0),
                    abi::HOOK_EGRESS,
                );
                assert_eq!(e.drop_reason, icmp, "{name}: ICMP type << 8 | code");
            }
        }
    }
}
