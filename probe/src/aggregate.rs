//! From kernel observations to flow records, one window at a time.
//!
//! Inputs: ring-buffer events (every packet in packet mode; new flows, TCP
//! control packets and drops in both modes) and, in flow mode, snapshots of
//! the kernel's cumulative flow table. Output at each window's end: one
//! [`Flow`] per 5-tuple, interface and hook that saw packets, with the drops
//! of that 5-tuple joined in (kernel fate), plus records for drops no
//! observed flow explains.

use std::net::IpAddr;

use flowgate_ebpf::abi::{self, Event, FlowKey, FlowStats};
use flowgate_proto::v1::{Direction, Failure, Flow, IpVersion, KernelFate, Outcome, Protocol};
use rustc_hash::FxHashMap;

use crate::dns;
use crate::outcome::{self, Observation, Side, Tracker};

const TCP_SYN: u32 = 0x02;
const TCP_ACK: u32 = 0x10;
const TCP_CTRL: u32 = 0x01 | 0x02 | 0x04;

/// Addresses, ports and protocol: what a drop and a flow share.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) struct Tuple {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl Tuple {
    fn of(k: &FlowKey) -> Self {
        Tuple {
            src: k.src_ip,
            dst: k.dst_ip,
            sport: k.src_port,
            dport: k.dst_port,
            proto: k.protocol,
        }
    }
    fn reversed(&self) -> Self {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            proto: self.proto,
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Acc {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    flags: u32,
}

impl Acc {
    fn add(&mut self, packets: u64, bytes: u64, first: u64, last: u64, flags: u32) {
        if self.packets == 0 || first < self.first_ns {
            self.first_ns = first;
        }
        self.last_ns = self.last_ns.max(last);
        self.packets += packets;
        self.bytes += bytes;
        self.flags |= flags;
    }
}

#[derive(Clone, Default, Debug)]
struct DropAcc {
    packets: u64,
    bytes: u64,
    first_ns: u64,
    last_ns: u64,
    reason: u32,
    ifindex: u32,
    flags: u32,
    key: FlowKey,
}

/// What the kernel flow table held at the last export, per entry.
#[derive(Clone, Copy, Debug)]
struct Seen {
    packets: u64,
    bytes: u64,
    last_ns: u64,
}

/// Turns observations into flow records. Times are CLOCK_MONOTONIC inside,
/// Unix time outside (`mono_to_unix_ns` is added on export).
#[derive(Debug, Default)]
pub struct Aggregator {
    node: String,
    window: FxHashMap<FlowKey, Acc>,
    drops: FxHashMap<Tuple, DropAcc>,
    /// Flow mode: cumulative counts already exported, per kernel entry.
    exported: FxHashMap<FlowKey, Seen>,
    /// Whether a 5-tuple is the answer direction, decided at first sight.
    orientation: FxHashMap<Tuple, (bool, u64)>,
    /// Drops neither on an observed interface nor of an observed tuple:
    /// the node's other traffic, counted and not exported.
    pub unrelated_drops: u64,
    /// Flow mode: kernel entries that vanished without the probe removing
    /// them (the LRU table evicted them under pressure; their packets since
    /// the last export are lost, and counted here).
    pub table_evictions: u64,
    /// Flow mode: entries present in the table during the current read.
    table_seen: rustc_hash::FxHashSet<FlowKey>,
    /// Drop reasons that mean the endpoint discarded a delivered packet
    /// (no socket, socket teardown, TCP state): not the network's verdict.
    endpoint_reasons: rustc_hash::FxHashSet<u32>,
    /// The NO_SOCKET reason: nothing listened (evidence for `refused`).
    no_socket_reason: Option<u32>,
    /// The NETFILTER_DROP reason: a policy drop, unless conntrack judged
    /// the packet invalid (see [`abi::DROP_CT_NONE`]).
    netfilter_drop_reason: Option<u32>,
    /// The failure class of each network drop reason.
    failure_classes: FxHashMap<u32, Failure>,
    /// Connections' outcomes, accumulated over windows.
    tracker: Tracker,
    /// Packets freed for an endpoint reason (counted, not a flow's fate).
    pub endpoint_drops: u64,
    /// Packets of protocols the schema cannot carry (counted, not exported).
    pub other_protocol_packets: u64,
    /// Per pod interface: address → DNS name the pod resolved.
    names: dns::Names,
    /// DNS responses seen, and those that did not parse.
    pub dns_responses: u64,
    pub dns_malformed: u64,
    /// Hold a record whose outcome is still open for one more window.
    hold_undecided: bool,
    /// Records held from the last window, exported with the next.
    held: Vec<(FlowKey, Acc)>,
}

/// One exported window.
#[derive(Debug, Default)]
pub struct Window {
    pub flows: Vec<Flow>,
    /// Kernel flow-table entries idle long enough to delete.
    pub idle: Vec<FlowKey>,
}

impl Aggregator {
    pub fn new(node: String) -> Self {
        Aggregator {
            node,
            ..Default::default()
        }
    }

    /// The kernel's drop reasons by code: which are the endpoint's (not the
    /// network's verdict), which means no listener, and the failure class
    /// of the others.
    pub fn with_reasons<'a>(mut self, names: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        for (code, name) in names {
            if name == "NO_SOCKET" {
                self.no_socket_reason = Some(code);
            }
            if name == "NETFILTER_DROP" {
                self.netfilter_drop_reason = Some(code);
            }
            if crate::preflight::is_endpoint_reason(name) {
                self.endpoint_reasons.insert(code);
            } else {
                self.failure_classes
                    .insert(code, crate::preflight::failure_of(name));
            }
        }
        self
    }

    /// The tuple of the connection `t` belongs to, as its opener sent it.
    fn opener_of(&self, t: &Tuple, tcp_flags: u32) -> Tuple {
        let reply = match self.orientation.get(t) {
            Some((reply, _)) => *reply,
            None => t.proto == 6 && tcp_flags & (TCP_SYN | TCP_ACK) == (TCP_SYN | TCP_ACK),
        };
        if !reply {
            return *t;
        }
        match outcome::icmp_request_of(t.proto, t.sport) {
            Some(request) => Tuple {
                sport: request,
                ..t.reversed()
            },
            None => t.reversed(),
        }
    }

    /// A ring-buffer event.
    pub fn event(&mut self, e: &Event) {
        match e.kind {
            abi::EVENT_PACKET => {
                self.note_tuple(&e.key, e.tcp_flags.into(), e.timestamp_ns);
                self.window.entry(e.key).or_default().add(
                    1,
                    e.len.into(),
                    e.timestamp_ns,
                    e.timestamp_ns,
                    e.tcp_flags.into(),
                );
            }
            // Flow mode: counts come from the table; the event gives the
            // control flags of this window exactly and orients the tuple.
            abi::EVENT_NEW_FLOW | abi::EVENT_TCP_CTRL => {
                self.note_tuple(&e.key, e.tcp_flags.into(), e.timestamp_ns);
                let acc = self.window.entry(e.key).or_default();
                acc.flags |= u32::from(e.tcp_flags) & TCP_CTRL;
            }
            // The quoted packet's tuple: evidence about its connection.
            abi::EVENT_UNREACH => {
                let t = Tuple::of(&e.key);
                let v6 = e.key.ip_version == abi::IPV6;
                if let Some(why) = outcome::unreachable_failure(v6, e.drop_reason) {
                    let opener = self.opener_of(&t, 0);
                    self.tracker.refused(opener, why, e.timestamp_ns);
                }
            }
            abi::EVENT_DROP => {
                let t = Tuple::of(&e.key);
                let opener = self.opener_of(&t, e.tcp_flags.into());
                if self.endpoint_reasons.contains(&e.drop_reason) {
                    self.endpoint_drops += 1;
                    if self.no_socket_reason == Some(e.drop_reason) {
                        self.tracker.no_listener(opener, e.timestamp_ns);
                    }
                    return;
                }
                let class = if self.netfilter_drop_reason == Some(e.drop_reason)
                    && e.drop_flags & abi::DROP_CT_NONE != 0
                {
                    Failure::Conntrack
                } else {
                    self.failure_classes
                        .get(&e.drop_reason)
                        .copied()
                        .unwrap_or(Failure::Other)
                };
                self.tracker
                    .dropped(opener, e.drop_reason, class, e.timestamp_ns);
                let d = self.drops.entry(t).or_insert_with(|| DropAcc {
                    first_ns: e.timestamp_ns,
                    key: e.key,
                    ..Default::default()
                });
                d.packets += 1;
                d.bytes += u64::from(e.len);
                d.last_ns = e.timestamp_ns;
                d.reason = e.drop_reason;
                d.ifindex = e.key.ifindex;
                d.flags |= u32::from(e.tcp_flags);
            }
            _ => {}
        }
    }

    /// Holds a record whose connection's outcome cannot be told yet (a SYN
    /// whose answer lands just after the window ends) for one window, so
    /// that its record carries the outcome. Costs those records one window
    /// of latency.
    pub fn holding_undecided(mut self) -> Self {
        self.hold_undecided = true;
        self
    }

    /// The next flush exports everything, held records included (shutdown).
    pub fn release_held(&mut self) {
        self.hold_undecided = false;
    }

    /// A DNS response entering a pod (`payload`: the L4 payload captured).
    pub fn dns_response(&mut self, e: &Event, payload: &[u8]) {
        self.dns_responses += 1;
        // DNS over TCP: a 2-byte length precedes the message; only a
        // segment that starts one is read.
        let msg = match e.key.protocol {
            6 if payload.len() >= 2 => &payload[2..],
            6 => return,
            _ => payload,
        };
        match dns::parse_response(msg) {
            Ok(answer) => self.names.learn(e.key.ifindex, answer, e.timestamp_ns),
            Err(error) => {
                self.dns_malformed += 1;
                tracing::debug!(%error, interface = e.key.ifindex, "DNS response not understood (counted)");
            }
        }
    }

    /// Answers not remembered because the name map was full, and the
    /// number of names held.
    pub fn dns_names(&self) -> (u64, usize) {
        (self.names.full, self.names.len())
    }

    fn note_tuple(&mut self, key: &FlowKey, flags: u32, ts: u64) {
        let t = Tuple::of(key);
        if self.orientation.contains_key(&t) {
            return;
        }
        // A reply: the reverse was seen first, a TCP SYN+ACK, or an ICMP
        // reply type (whose tuple is not the request's reversed).
        let reply = self
            .orientation
            .get(&t.reversed())
            .is_some_and(|(_, first)| *first <= ts)
            || (key.protocol == 6 && (flags & (TCP_SYN | TCP_ACK)) == (TCP_SYN | TCP_ACK))
            || is_icmp_reply(key.protocol, key.src_port);
        self.orientation.insert(t, (reply, ts));
    }

    /// Flow mode: the end of one read of the kernel table. Entries exported
    /// before and absent now were evicted by the kernel.
    pub fn table_read_done(&mut self) {
        let seen = std::mem::take(&mut self.table_seen);
        let before = self.exported.len();
        self.exported.retain(|k, _| seen.contains(k));
        self.table_evictions += (before - self.exported.len()) as u64;
    }

    /// Flow mode: one entry of the kernel table (cumulative, summed over CPUs).
    pub fn table_entry(
        &mut self,
        key: FlowKey,
        total: FlowStats,
        now_ns: u64,
        idle_ns: u64,
        idle: &mut Vec<FlowKey>,
    ) {
        let prev = self.exported.get(&key).copied();
        self.table_seen.insert(key);
        let (dp, db) = match prev {
            Some(p) => (
                total.packets.saturating_sub(p.packets),
                total.bytes.saturating_sub(p.bytes),
            ),
            None => (total.packets, total.bytes),
        };
        if dp > 0 {
            if prev.is_none() {
                self.note_tuple(&key, total.tcp_flags, total.first_seen_ns);
            }
            let first = match prev {
                None => total.first_seen_ns,
                Some(p) => p.last_ns.max(total.first_seen_ns),
            };
            // Non-control flags persist over the connection; control flags
            // of later windows come from events (see `event`).
            let flags = match prev {
                None => total.tcp_flags,
                Some(_) => total.tcp_flags & !TCP_CTRL,
            };
            self.window
                .entry(key)
                .or_default()
                .add(dp, db, first, total.last_seen_ns, flags);
        } else if now_ns.saturating_sub(total.last_seen_ns) > idle_ns {
            idle.push(key);
            self.exported.remove(&key);
            return;
        }
        self.exported.insert(
            key,
            Seen {
                packets: total.packets,
                bytes: total.bytes,
                last_ns: total.last_seen_ns,
            },
        );
    }

    /// Ends the window: flow records (Unix times), with drops joined.
    pub fn flush(
        &mut self,
        mono_to_unix_ns: i128,
        ifname: &dyn Fn(u32) -> String,
        observed_ifindex: &dyn Fn(u32) -> bool,
    ) -> Vec<Flow> {
        let unix = |t: u64| (i128::from(t) + mono_to_unix_ns).max(0) as u64;
        let mut flows = Vec::with_capacity(self.window.len());
        let mut joined: Vec<Tuple> = Vec::new();
        let mut early = Vec::new();
        self.observe_connections();
        // Held records were observed with their own window; they join this
        // one now and are not held twice.
        let mut released = rustc_hash::FxHashSet::default();
        for (key, h) in std::mem::take(&mut self.held) {
            released.insert(key);
            self.window
                .entry(key)
                .or_default()
                .add(h.packets, h.bytes, h.first_ns, h.last_ns, h.flags);
        }
        for (key, acc) in std::mem::take(&mut self.window) {
            if !exportable(key.protocol) {
                self.other_protocol_packets += acc.packets;
                continue;
            }
            if acc.packets == 0 {
                // Flow mode: an event that arrived after the table was read;
                // its counts come with the next window.
                early.push((key, acc));
                continue;
            }
            let t = Tuple::of(&key);
            let mut f = self.base_flow(&key, ifname);
            f.first_seen_ns = unix(acc.first_ns);
            f.last_seen_ns = unix(acc.last_ns);
            f.packets = acc.packets;
            f.bytes = acc.bytes;
            f.tcp_flags = if key.protocol == 6 {
                acc.flags & 0xff
            } else {
                0
            };
            f.is_reply = self.orientation.get(&t).is_some_and(|(r, _)| *r);
            self.set_outcome(&mut f, key.ifindex, &t, acc.flags);
            self.set_dns_names(&mut f, &key, acc.first_ns);
            f.kernel_fate = KernelFate::Forwarded as i32;
            if let Some(d) = self.drops.get(&t) {
                f.kernel_fate = KernelFate::Dropped as i32;
                f.drop_reason_code = d.reason;
                f.dropped_packets = d.packets;
                joined.push(t);
            } else if self.hold_undecided
                && f.outcome == Outcome::Unspecified as i32
                && !released.contains(&key)
            {
                self.held.push((key, acc));
                continue;
            }
            flows.push(f);
        }
        self.window.extend(early);
        for (t, d) in std::mem::take(&mut self.drops) {
            if joined.contains(&t) {
                continue;
            }
            if !exportable(t.proto) {
                self.other_protocol_packets += d.packets;
                continue;
            }
            // A drop no observed flow explains: keep it if it concerns an
            // observed interface or a tuple seen there; the node's other
            // drops are counted and set aside.
            if !observed_ifindex(d.ifindex) && !self.orientation.contains_key(&t) {
                self.unrelated_drops += d.packets;
                continue;
            }
            let mut f = self.base_flow(&d.key, ifname);
            f.direction = Direction::Unspecified as i32;
            f.first_seen_ns = unix(d.first_ns);
            f.last_seen_ns = unix(d.last_ns);
            f.packets = d.packets;
            f.bytes = d.bytes;
            f.is_reply = self.orientation.get(&t).is_some_and(|(r, _)| *r);
            f.kernel_fate = KernelFate::Dropped as i32;
            f.drop_reason_code = d.reason;
            f.dropped_packets = d.packets;
            self.set_outcome(&mut f, d.ifindex, &t, d.flags);
            flows.push(f);
        }
        // Forget orientations of tuples idle for 5 minutes.
        if let Some(newest) = flows.iter().map(|f| f.last_seen_ns).max() {
            let horizon = (i128::from(newest) - mono_to_unix_ns - 300_000_000_000).max(0) as u64;
            self.orientation
                .retain(|_, (_, first)| *first >= horizon || horizon == 0);
            let newest_mono = (i128::from(newest) - mono_to_unix_ns).max(0) as u64;
            self.tracker.expire(newest_mono);
            self.names.expire(newest_mono);
        }
        flows
    }

    /// Feeds this window's observations to the connection tracker.
    fn observe_connections(&mut self) {
        for (key, acc) in &self.window {
            if acc.packets == 0 {
                continue;
            }
            let t = Tuple::of(key);
            let opener = self.opener_of(&t, acc.flags);
            let side = if opener == t {
                Side::Opener
            } else {
                Side::Answer
            };
            self.tracker.observe(
                key.ifindex,
                opener,
                side,
                Observation {
                    packets: acc.packets,
                    flags: acc.flags,
                    first_ns: acc.first_ns,
                    last_ns: acc.last_ns,
                },
            );
        }
    }

    /// The names the pod behind the interface resolved for the other side:
    /// what it sends goes to `dst`, what it receives comes from `src`.
    fn set_dns_names(&self, f: &mut Flow, key: &FlowKey, at_ns: u64) {
        let name = |addr| {
            self.names
                .name(key.ifindex, addr, at_ns)
                .map(str::to_string)
                .unwrap_or_default()
        };
        match key.hook {
            abi::HOOK_INGRESS => f.dst_dns_name = name(key.dst()),
            abi::HOOK_EGRESS => f.src_dns_name = name(key.src()),
            _ => {}
        }
    }

    fn set_outcome(&self, f: &mut Flow, ifindex: u32, t: &Tuple, tcp_flags: u32) {
        let (outcome, failure) = self.tracker.judge(ifindex, self.opener_of(t, tcp_flags));
        f.outcome = outcome as i32;
        f.failure = failure as i32;
    }

    fn base_flow(&self, key: &FlowKey, ifname: &dyn Fn(u32) -> String) -> Flow {
        let (ipv, src, dst) = match key.ip_version {
            abi::IPV4 => (
                IpVersion::V4,
                key.src_ip[12..].to_vec(),
                key.dst_ip[12..].to_vec(),
            ),
            _ => (IpVersion::V6, key.src_ip.to_vec(), key.dst_ip.to_vec()),
        };
        // The host side of a pod veth: its ingress hook sees what the pod
        // sends (the pod's egress), its egress hook what the pod receives.
        let direction = match key.hook {
            abi::HOOK_INGRESS => Direction::Egress,
            abi::HOOK_EGRESS => Direction::Ingress,
            _ => Direction::Unspecified,
        };
        let protocol = match (key.protocol, key.ip_version) {
            (6, _) => Protocol::Tcp,
            (17, _) => Protocol::Udp,
            (132, _) => Protocol::Sctp,
            (1, _) => Protocol::Icmp,
            (58, _) => Protocol::Icmpv6,
            _ => Protocol::Unspecified,
        };
        Flow {
            node: self.node.clone(),
            interface: ifname(key.ifindex),
            ifindex: key.ifindex,
            direction: direction as i32,
            ip_version: ipv as i32,
            src_ip: src,
            dst_ip: dst,
            protocol: protocol as i32,
            src_port: key.src_port.into(),
            dst_port: key.dst_port.into(),
            ..Default::default()
        }
    }
}

/// Echo, timestamp, information and address-mask replies (ICMP), echo
/// reply (ICMPv6). The type is in the source-port slot.
fn is_icmp_reply(protocol: u8, icmp_type: u16) -> bool {
    match protocol {
        1 => matches!(icmp_type, 0 | 14 | 16 | 18),
        58 => icmp_type == 129,
        _ => false,
    }
}

/// Whether flows of this IANA protocol can be exported (the schema knows
/// TCP, UDP, SCTP, ICMP and ICMPv6; other protocols are counted only).
pub fn exportable(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 132 | 1 | 58)
}

/// The address of raw proto bytes, for logs and tests.
pub fn ip_of(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: u8, dst: u8, sport: u16, dport: u16, proto: u8, hook: u8) -> FlowKey {
        let mut k = FlowKey {
            src_port: sport,
            dst_port: dport,
            protocol: proto,
            ip_version: abi::IPV4,
            hook,
            ifindex: 7,
            ..Default::default()
        };
        k.src_ip[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, src]);
        k.dst_ip[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, dst]);
        k
    }

    fn ev(kind: u8, k: FlowKey, ts: u64, flags: u8) -> Event {
        Event {
            timestamp_ns: ts,
            key: k,
            len: 100,
            kind,
            tcp_flags: flags,
            ..Default::default()
        }
    }

    fn flush(a: &mut Aggregator) -> Vec<Flow> {
        a.flush(1_000_000_000, &|i| format!("if{i}"), &|_| true)
    }

    #[test]
    fn packet_mode_counts_every_packet_and_orients_replies() {
        let mut a = Aggregator::new("n1".into());
        let req = key(1, 2, 40000, 80, 6, abi::HOOK_INGRESS);
        a.event(&ev(abi::EVENT_PACKET, req, 10, 0x02));
        a.event(&ev(abi::EVENT_PACKET, req.reversed(), 11, 0x12));
        a.event(&ev(abi::EVENT_PACKET, req, 12, 0x10));
        let mut flows = flush(&mut a);
        flows.sort_by_key(|f| f.first_seen_ns);
        assert_eq!(flows.len(), 2);
        assert_eq!(
            (flows[0].packets, flows[0].bytes, flows[0].tcp_flags),
            (2, 200, 0x12)
        );
        assert_eq!(
            (flows[0].first_seen_ns, flows[0].last_seen_ns),
            (1_000_000_010, 1_000_000_012)
        );
        assert!(!flows[0].is_reply);
        assert!(flows[1].is_reply);
        assert_eq!(flows[0].direction, Direction::Egress as i32);
        assert_eq!(flows[0].interface, "if7");
        assert_eq!(ip_of(&flows[0].src_ip).unwrap().to_string(), "10.0.0.1");
        assert!(flush(&mut a).is_empty(), "a window is exported once");
    }

    #[test]
    fn flow_mode_exports_deltas_and_evicts_idle_entries() {
        let mut a = Aggregator::new("n1".into());
        let k = key(1, 2, 5000, 53, 17, abi::HOOK_EGRESS);
        let stats = |p: u64, last: u64| FlowStats {
            packets: p,
            bytes: p * 60,
            first_seen_ns: 5,
            last_seen_ns: last,
            ..Default::default()
        };
        let mut idle = Vec::new();
        a.table_entry(k, stats(3, 9), 10, 100, &mut idle);
        let f = flush(&mut a);
        assert_eq!(
            (f[0].packets, f[0].bytes, f[0].direction),
            (3, 180, Direction::Ingress as i32)
        );
        a.table_entry(k, stats(5, 20), 25, 100, &mut idle);
        assert_eq!(flush(&mut a)[0].packets, 2);
        a.table_entry(k, stats(5, 20), 50, 100, &mut idle);
        assert!(flush(&mut a).is_empty());
        assert!(idle.is_empty());
        a.table_entry(k, stats(5, 20), 500, 100, &mut idle);
        assert_eq!(idle, vec![k]);
        a.table_read_done();
        assert_eq!(a.table_evictions, 0, "removed by the probe, not evicted");
    }

    #[test]
    fn endpoint_drops_and_other_protocols_are_counted_not_exported() {
        // 2 = NOT_SPECIFIED, 3 = NO_SOCKET as endpoint reasons; 6 is a network drop.
        let mut a = Aggregator::new("n1".into()).with_reasons([
            (2, "NOT_SPECIFIED"),
            (3, "NO_SOCKET"),
            (6, "NETFILTER_DROP"),
        ]);
        let udp = key(1, 2, 5000, 53, 17, abi::HOOK_EGRESS);
        a.event(&ev(abi::EVENT_PACKET, udp, 1, 0));
        a.event(&Event {
            drop_reason: 3,
            ..ev(abi::EVENT_DROP, udp, 2, 0)
        });
        // IPv6 hop-by-hop (protocol 0), as MLD reports look from the drop path.
        let hop = FlowKey {
            protocol: 0,
            ..key(1, 2, 0, 0, 0, abi::HOOK_EGRESS)
        };
        a.event(&ev(abi::EVENT_PACKET, hop, 3, 0));
        a.event(&Event {
            drop_reason: 6,
            ..ev(abi::EVENT_DROP, hop, 4, 0)
        });
        let flows = flush(&mut a);
        assert_eq!(flows.len(), 1);
        assert_eq!(
            flows[0].kernel_fate,
            KernelFate::Forwarded as i32,
            "a socket-side free is not the network's verdict"
        );
        assert_eq!((a.endpoint_drops, a.other_protocol_packets), (1, 2));
    }

    #[test]
    fn an_undecided_record_waits_one_window_for_its_answer() {
        let mut a = Aggregator::new("n1".into())
            .with_reasons([(3, "NO_SOCKET")])
            .holding_undecided();
        let syn = key(1, 2, 40000, 80, 6, abi::HOOK_INGRESS);
        a.event(&ev(abi::EVENT_PACKET, syn, 10, 0x02));
        assert!(flush(&mut a).is_empty(), "held: nothing can be said yet");
        // The answer lands in the next window.
        a.event(&ev(abi::EVENT_PACKET, syn.reversed(), 11, 0x14));
        let flows = flush(&mut a);
        assert_eq!(flows.len(), 2);
        for f in &flows {
            assert_eq!(
                (f.outcome(), f.failure(), f.packets),
                (Outcome::Refused, Failure::NoListener, 1)
            );
        }
        // A record still undecided after its extra window goes out as is.
        let lone = key(1, 2, 5000, 9, 17, abi::HOOK_INGRESS);
        a.event(&ev(abi::EVENT_PACKET, lone, 20, 0));
        assert!(flush(&mut a).is_empty());
        let flows = flush(&mut a);
        assert_eq!((flows.len(), flows[0].outcome()), (1, Outcome::Unspecified));
        // At shutdown nothing waits.
        a.event(&ev(abi::EVENT_PACKET, lone, 30, 0));
        a.release_held();
        assert_eq!(flush(&mut a).len(), 1);
    }

    #[test]
    fn a_netfilter_drop_without_a_conntrack_entry_is_conntrack() {
        let mut a = Aggregator::new("n1".into()).with_reasons([(12, "NETFILTER_DROP")]);
        let invalid = key(1, 2, 40000, 80, 6, abi::HOOK_INGRESS);
        let denied = key(1, 2, 40001, 81, 6, abi::HOOK_INGRESS);
        for (k, flags) in [(invalid, abi::DROP_CT_NONE), (denied, 0)] {
            a.event(&ev(abi::EVENT_PACKET, k, 10, 0x02));
            a.event(&Event {
                drop_reason: 12,
                drop_flags: flags,
                ..ev(abi::EVENT_DROP, k, 11, 0x02)
            });
        }
        let flows = flush(&mut a);
        let failure = |port: u32| {
            flows
                .iter()
                .find(|f| f.dst_port == port)
                .map(|f| (f.outcome(), f.failure()))
        };
        assert_eq!(failure(80), Some((Outcome::Dropped, Failure::Conntrack)));
        assert_eq!(failure(81), Some((Outcome::Dropped, Failure::Policy)));
    }

    #[test]
    fn icmp_unreachable_refuses_the_connection_it_quotes() {
        let mut a = Aggregator::new("n1".into());
        // A UDP request from 10.0.0.1, answered by port unreachable and
        // (another one) by host unreachable.
        let req = key(1, 2, 5000, 9999, 17, abi::HOOK_INGRESS);
        let other = key(1, 3, 5001, 9999, 17, abi::HOOK_INGRESS);
        for (k, code) in [(req, 3u32), (other, 1)] {
            a.event(&ev(abi::EVENT_PACKET, k, 10, 0));
            // The ICMP message itself, from the destination into the pod.
            let icmp = key(2, 1, 3, code as u16, 1, abi::HOOK_EGRESS);
            a.event(&ev(abi::EVENT_PACKET, icmp, 11, 0));
            a.event(&Event {
                drop_reason: 3 << 8 | code,
                ..ev(abi::EVENT_UNREACH, k, 11, 0)
            });
        }
        let flows = flush(&mut a);
        let judged = |dst: u8| {
            let f = flows
                .iter()
                .find(|f| {
                    f.protocol == Protocol::Udp as i32 && f.dst_ip.ends_with(&[10, 0, 0, dst])
                })
                .expect("the request's record");
            (f.outcome(), f.failure())
        };
        assert_eq!(judged(2), (Outcome::Refused, Failure::NoListener));
        assert_eq!(judged(3), (Outcome::Refused, Failure::Routing));
    }

    #[test]
    fn icmp_replies_are_replies() {
        let mut a = Aggregator::new("n1".into());
        a.event(&ev(
            abi::EVENT_PACKET,
            key(1, 2, 8, 0, 1, abi::HOOK_INGRESS),
            1,
            0,
        ));
        a.event(&ev(
            abi::EVENT_PACKET,
            key(2, 1, 0, 0, 1, abi::HOOK_EGRESS),
            2,
            0,
        ));
        let mut flows = flush(&mut a);
        flows.sort_by_key(|f| f.first_seen_ns);
        assert_eq!((flows[0].is_reply, flows[1].is_reply), (false, true));
    }

    #[test]
    fn entries_the_kernel_evicts_are_counted() {
        let mut a = Aggregator::new("n1".into());
        let (k1, k2) = (
            key(1, 2, 1, 1, 17, abi::HOOK_EGRESS),
            key(1, 2, 2, 2, 17, abi::HOOK_EGRESS),
        );
        let s = FlowStats {
            packets: 1,
            bytes: 60,
            first_seen_ns: 1,
            last_seen_ns: 1,
            ..Default::default()
        };
        let mut idle = Vec::new();
        a.table_entry(k1, s, 2, 1_000, &mut idle);
        a.table_entry(k2, s, 2, 1_000, &mut idle);
        a.table_read_done();
        // Next read: k2 is gone although it was not idle.
        a.table_entry(k1, s, 3, 1_000, &mut idle);
        a.table_read_done();
        assert_eq!(a.table_evictions, 1);
    }

    #[test]
    fn drops_join_their_flow_and_unexplained_ones_stand_alone() {
        let mut a = Aggregator::new("n1".into());
        let k = key(1, 2, 6000, 9, 17, abi::HOOK_EGRESS);
        for ts in 1..=4 {
            a.event(&ev(abi::EVENT_PACKET, k, ts, 0));
            let mut d = ev(
                abi::EVENT_DROP,
                FlowKey {
                    hook: 0,
                    ifindex: 99,
                    ..k
                },
                ts,
                0,
            );
            d.drop_reason = 6;
            a.event(&d);
        }
        // A drop of another tuple on an interface not observed: set aside.
        a.event(&Event {
            drop_reason: 2,
            ..ev(
                abi::EVENT_DROP,
                FlowKey {
                    ifindex: 99,
                    ..key(7, 8, 1, 2, 6, 0)
                },
                5,
                0,
            )
        });
        let flows = a.flush(0, &|_| String::new(), &|i| i == 7);
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].kernel_fate, KernelFate::Dropped as i32);
        assert_eq!(
            (
                flows[0].dropped_packets,
                flows[0].drop_reason_code,
                flows[0].packets
            ),
            (4, 6, 4)
        );
        assert_eq!(a.unrelated_drops, 1);
    }
}
