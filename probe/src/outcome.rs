//! How each connection went, and why it failed.
//!
//! Both directions of a pod's connections cross its veth, so the probe sees
//! the opener's flags and the answer's flags on one interface. A connection
//! is keyed by that interface and the opener's 5-tuple; its flags and counts
//! accumulate over windows (a connection outlives a window), and every
//! flow record reports the outcome as of the end of its window. Kernel
//! evidence (a network drop, the endpoint's NO_SOCKET free) is keyed by the
//! opener's tuple alone: the drop tracepoint fires inside the pod's
//! namespace, not on the observed interface.

use flowgate_proto::v1::{Failure, Outcome};
use rustc_hash::FxHashMap;

use crate::aggregate::Tuple;

const FIN: u32 = 0x01;
const SYN: u32 = 0x02;
const RST: u32 = 0x04;
const ACK: u32 = 0x10;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

/// Requests this far apart are retries; closer ones are one burst, which
/// says nothing about an answer (TCP's first SYN retry is after 1 s).
const RETRY_SPREAD_NS: u64 = 200_000_000;
/// State of a connection idle this long is forgotten.
const IDLE_NS: u64 = 300_000_000_000;

/// What the kernel said about a connection, from the drop tracepoint.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Evidence {
    /// A network drop (not an endpoint free): its reason code and class.
    pub drop: Option<(u32, Failure)>,
    /// Refused, and why: the destination had no socket for it (NO_SOCKET,
    /// ICMP port unreachable), no route or host (ICMP host/network
    /// unreachable), or a firewall's reject (ICMP administratively
    /// prohibited).
    pub refused: Option<Failure>,
    pub last_ns: u64,
}

/// One connection as seen on one interface, accumulated over windows.
#[derive(Clone, Copy, Debug, Default)]
struct Conn {
    opener_flags: u32,
    answer_flags: u32,
    opener_packets: u64,
    answer_packets: u64,
    opener_first_ns: u64,
    opener_last_ns: u64,
    last_ns: u64,
}

/// The side of a connection an observation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Opener,
    Answer,
}

/// Window counts of one side, fed once per flow record.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Observation {
    pub packets: u64,
    pub flags: u32,
    pub first_ns: u64,
    pub last_ns: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Tracker {
    conns: FxHashMap<(u32, Tuple), Conn>,
    evidence: FxHashMap<Tuple, Evidence>,
}

impl Tracker {
    /// Adds one window's observation of one side of the connection that
    /// `opener` opened, on interface `ifindex`.
    pub fn observe(&mut self, ifindex: u32, opener: Tuple, side: Side, o: Observation) {
        let c = self.conns.entry((ifindex, opener)).or_default();
        // The same tuple opened again after the last one ended (port reuse).
        // Observations of one window come in any order: only a SYN later
        // than everything seen starts anew.
        if opener.proto == TCP
            && side == Side::Opener
            && o.flags & (SYN | ACK) == SYN
            && (c.opener_flags | c.answer_flags) & (FIN | RST) != 0
            && o.first_ns > c.last_ns
        {
            *c = Conn::default();
            if self
                .evidence
                .get(&opener)
                .is_some_and(|e| e.last_ns < o.first_ns)
            {
                self.evidence.remove(&opener);
            }
        }
        match side {
            Side::Opener => {
                if c.opener_packets == 0 || o.first_ns < c.opener_first_ns {
                    c.opener_first_ns = o.first_ns;
                }
                c.opener_last_ns = c.opener_last_ns.max(o.last_ns);
                c.opener_packets += o.packets;
                c.opener_flags |= o.flags;
            }
            Side::Answer => {
                c.answer_packets += o.packets;
                c.answer_flags |= o.flags;
            }
        }
        c.last_ns = c.last_ns.max(o.last_ns);
    }

    /// The kernel dropped a packet of the connection `opener` opened.
    pub fn dropped(&mut self, opener: Tuple, reason: u32, class: Failure, ts: u64) {
        let e = self.evidence.entry(opener).or_default();
        e.drop = Some((reason, class));
        e.last_ns = e.last_ns.max(ts);
    }

    /// The destination of `opener` had no socket for it.
    pub fn no_listener(&mut self, opener: Tuple, ts: u64) {
        self.refused(opener, Failure::NoListener, ts);
    }

    /// `opener` was refused for the reason `why` (an ICMP unreachable).
    /// A missing listener, the most specific finding, is never overridden.
    pub fn refused(&mut self, opener: Tuple, why: Failure, ts: u64) {
        let e = self.evidence.entry(opener).or_default();
        if e.refused != Some(Failure::NoListener) {
            e.refused = Some(why);
        }
        e.last_ns = e.last_ns.max(ts);
    }

    /// The outcome and failure of the connection as they stand now.
    pub fn judge(&self, ifindex: u32, opener: Tuple) -> (Outcome, Failure) {
        let conn = self.conns.get(&(ifindex, opener)).copied();
        let evidence = self.evidence.get(&opener).copied().unwrap_or_default();
        judge(opener.proto, opener.sport, conn, evidence)
    }

    /// Forgets connections and evidence idle since before `horizon_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let horizon = now_ns.saturating_sub(IDLE_NS);
        self.conns.retain(|_, c| c.last_ns >= horizon);
        self.evidence.retain(|_, e| e.last_ns >= horizon);
    }
}

/// `opener_type`: the source port slot, which holds the ICMP type.
fn judge(proto: u8, opener_type: u16, conn: Option<Conn>, e: Evidence) -> (Outcome, Failure) {
    if let Some((_, class)) = e.drop {
        return (Outcome::Dropped, class);
    }
    if let Some(why) = e.refused {
        return (Outcome::Refused, why);
    }
    let Some(c) = conn else {
        return (Outcome::Unspecified, Failure::Unspecified);
    };
    let outcome = match proto {
        TCP => tcp(&c),
        UDP | SCTP => exchange(&c),
        // ICMP errors answer other flows; only requests open an exchange.
        ICMP | ICMPV6 if is_icmp_request(proto, opener_type) => exchange(&c),
        _ => Outcome::Unspecified,
    };
    let failure = match outcome {
        Outcome::Refused => Failure::NoListener,
        _ => Failure::Unspecified,
    };
    (outcome, failure)
}

fn tcp(c: &Conn) -> Outcome {
    let established =
        c.opener_flags & (SYN | ACK) == SYN | ACK && c.answer_flags & (SYN | ACK) == SYN | ACK;
    let both_fin = c.opener_flags & c.answer_flags & FIN != 0;
    if established {
        if both_fin {
            Outcome::Closed
        } else if (c.opener_flags | c.answer_flags) & RST != 0 {
            Outcome::Reset
        } else {
            Outcome::Established
        }
    } else if c.opener_flags & SYN != 0 && c.answer_flags & RST != 0 {
        Outcome::Refused
    } else {
        exchange(c)
    }
}

/// Request/answer exchanges (UDP, SCTP, ICMP echo; TCP before any answer).
fn exchange(c: &Conn) -> Outcome {
    if c.answer_packets > 0 {
        // TCP with an answer that neither accepted nor refused: not judged.
        if c.opener_flags & SYN != 0 || c.answer_flags != 0 {
            return Outcome::Unspecified;
        }
        return Outcome::Established;
    }
    if c.opener_packets >= 2 && c.opener_last_ns - c.opener_first_ns >= RETRY_SPREAD_NS {
        return Outcome::Unanswered;
    }
    Outcome::Unspecified
}

/// The request type an ICMP reply type answers (echo, timestamp,
/// information, address mask; ICMPv6 echo).
pub(crate) fn icmp_request_of(protocol: u8, reply_type: u16) -> Option<u16> {
    match (protocol, reply_type) {
        (ICMP, 0) => Some(8),
        (ICMP, 14) => Some(13),
        (ICMP, 16) => Some(15),
        (ICMP, 18) => Some(17),
        (ICMPV6, 129) => Some(128),
        _ => None,
    }
}

/// What an ICMP destination unreachable (`icmp` = type << 8 | code, as the
/// probe's UNREACH event carries it) says about the connection it quotes:
/// nothing listens on the port, there is no route or host, or a firewall
/// rejected it. `None` for other codes (fragmentation needed…).
pub(crate) fn unreachable_failure(v6: bool, icmp: u32) -> Option<Failure> {
    let (kind, code) = (icmp >> 8, icmp & 0xff);
    match (v6, kind, code) {
        // IPv4 type 3: 3 port; 0/1/6/7 net/host unknown or unreachable;
        // 9/10/13 administratively prohibited.
        (false, 3, 3) => Some(Failure::NoListener),
        (false, 3, 0 | 1 | 6 | 7) => Some(Failure::Routing),
        (false, 3, 9 | 10 | 13) => Some(Failure::Policy),
        // ICMPv6 type 1: 4 port; 0 no route, 3 address; 1 prohibited,
        // 5/6 source address failed policy / reject route.
        (true, 1, 4) => Some(Failure::NoListener),
        (true, 1, 0 | 3) => Some(Failure::Routing),
        (true, 1, 1 | 5 | 6) => Some(Failure::Policy),
        _ => None,
    }
}

/// Whether an ICMP type opens an exchange (a request with a reply type).
pub(crate) fn is_icmp_request(protocol: u8, icmp_type: u16) -> bool {
    matches!(
        (protocol, icmp_type),
        (ICMP, 8 | 13 | 15 | 17) | (ICMPV6, 128)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(proto: u8) -> Tuple {
        Tuple {
            src: [1; 16],
            dst: [2; 16],
            sport: 40000,
            dport: 80,
            proto,
        }
    }

    fn obs(packets: u64, flags: u32, first: u64, last: u64) -> Observation {
        Observation {
            packets,
            flags,
            first_ns: first,
            last_ns: last,
        }
    }

    #[test]
    fn tcp_handshake_then_close() {
        let mut k = Tracker::default();
        k.observe(1, t(TCP), Side::Opener, obs(1, SYN, 10, 10));
        assert_eq!(k.judge(1, t(TCP)).0, Outcome::Unspecified, "SYN alone");
        // A window's observations come in any order: the answer first.
        let mut j = Tracker::default();
        j.observe(1, t(TCP), Side::Answer, obs(1, RST | ACK, 11, 11));
        j.no_listener(t(TCP), 10);
        j.observe(1, t(TCP), Side::Opener, obs(1, SYN, 10, 10));
        assert_eq!(j.judge(1, t(TCP)), (Outcome::Refused, Failure::NoListener));
        k.observe(1, t(TCP), Side::Answer, obs(1, SYN | ACK, 11, 11));
        k.observe(1, t(TCP), Side::Opener, obs(3, ACK, 12, 14));
        assert_eq!(
            k.judge(1, t(TCP)),
            (Outcome::Established, Failure::Unspecified)
        );
        k.observe(1, t(TCP), Side::Opener, obs(1, ACK | FIN, 20, 20));
        assert_eq!(k.judge(1, t(TCP)).0, Outcome::Established, "half-closed");
        k.observe(1, t(TCP), Side::Answer, obs(1, ACK | FIN, 21, 21));
        assert_eq!(k.judge(1, t(TCP)).0, Outcome::Closed);
        assert_eq!(k.judge(2, t(TCP)).0, Outcome::Unspecified, "per interface");
    }

    #[test]
    fn rst_before_and_after_establishment() {
        let mut k = Tracker::default();
        k.observe(1, t(TCP), Side::Opener, obs(1, SYN, 10, 10));
        k.observe(1, t(TCP), Side::Answer, obs(1, RST | ACK, 11, 11));
        assert_eq!(k.judge(1, t(TCP)), (Outcome::Refused, Failure::NoListener));
        // The same tuple opened again: a new connection, later reset.
        k.observe(1, t(TCP), Side::Opener, obs(1, SYN, 20, 20));
        assert_eq!(k.judge(1, t(TCP)).0, Outcome::Unspecified);
        k.observe(1, t(TCP), Side::Answer, obs(1, SYN | ACK, 21, 21));
        k.observe(1, t(TCP), Side::Opener, obs(2, ACK, 22, 23));
        k.observe(1, t(TCP), Side::Answer, obs(1, RST, 24, 24));
        assert_eq!(k.judge(1, t(TCP)), (Outcome::Reset, Failure::Unspecified));
    }

    #[test]
    fn retries_without_answer_are_unanswered_a_burst_is_not() {
        let mut k = Tracker::default();
        k.observe(1, t(UDP), Side::Opener, obs(5, 0, 10, 1_000));
        assert_eq!(k.judge(1, t(UDP)).0, Outcome::Unspecified, "one burst");
        k.observe(
            1,
            t(UDP),
            Side::Opener,
            obs(1, 0, 1_000_000_010, 1_000_000_010),
        );
        assert_eq!(
            k.judge(1, t(UDP)),
            (Outcome::Unanswered, Failure::Unspecified)
        );
        k.observe(
            1,
            t(UDP),
            Side::Answer,
            obs(1, 0, 1_000_000_020, 1_000_000_020),
        );
        assert_eq!(k.judge(1, t(UDP)).0, Outcome::Established);
        // TCP SYN retried, never answered.
        k.observe(1, t(TCP), Side::Opener, obs(1, SYN, 0, 0));
        k.observe(
            1,
            t(TCP),
            Side::Opener,
            obs(1, SYN, 1_000_000_000, 1_000_000_000),
        );
        assert_eq!(k.judge(1, t(TCP)).0, Outcome::Unanswered);
    }

    #[test]
    fn kernel_evidence_decides_first() {
        let mut k = Tracker::default();
        k.observe(1, t(UDP), Side::Opener, obs(1, 0, 10, 10));
        k.no_listener(t(UDP), 11);
        assert_eq!(k.judge(1, t(UDP)), (Outcome::Refused, Failure::NoListener));
        k.dropped(t(TCP), 12, Failure::Policy, 12);
        assert_eq!(
            k.judge(7, t(TCP)),
            (Outcome::Dropped, Failure::Policy),
            "a drop seen anywhere on the node"
        );
        k.expire(IDLE_NS + 100);
        assert_eq!(k.judge(1, t(UDP)).0, Outcome::Unspecified, "forgotten");
    }

    #[test]
    fn icmp_unreachable_refuses_with_its_reason() {
        assert_eq!(
            unreachable_failure(false, 3 << 8 | 3),
            Some(Failure::NoListener)
        );
        assert_eq!(
            unreachable_failure(false, 3 << 8 | 1),
            Some(Failure::Routing)
        );
        assert_eq!(
            unreachable_failure(false, 3 << 8 | 13),
            Some(Failure::Policy)
        );
        assert_eq!(
            unreachable_failure(false, 3 << 8 | 4),
            None,
            "fragmentation needed"
        );
        assert_eq!(
            unreachable_failure(true, 1 << 8 | 4),
            Some(Failure::NoListener)
        );
        assert_eq!(unreachable_failure(true, 1 << 8 | 1), Some(Failure::Policy));
        let mut k = Tracker::default();
        k.observe(1, t(UDP), Side::Opener, obs(1, 0, 10, 10));
        k.refused(t(UDP), Failure::Routing, 11);
        assert_eq!(k.judge(1, t(UDP)), (Outcome::Refused, Failure::Routing));
        k.no_listener(t(UDP), 12);
        k.refused(t(UDP), Failure::Routing, 13);
        assert_eq!(
            k.judge(1, t(UDP)),
            (Outcome::Refused, Failure::NoListener),
            "no listener is the most specific finding"
        );
    }

    #[test]
    fn icmp_replies_map_to_their_request() {
        assert_eq!(icmp_request_of(ICMP, 0), Some(8));
        assert_eq!(icmp_request_of(ICMPV6, 129), Some(128));
        assert_eq!(icmp_request_of(ICMP, 3), None);
        assert!(is_icmp_request(ICMP, 8) && !is_icmp_request(ICMP, 3));
    }
}
