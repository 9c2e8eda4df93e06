//! The Rust mirror of `bpf/flowgate.h`. Field for field, no implicit
//! padding; `layout_matches_the_c_header` proves it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const HOOK_INGRESS: u8 = 1;
pub const HOOK_EGRESS: u8 = 2;

pub const IPV4: u8 = 4;
pub const IPV6: u8 = 6;

pub const GRANULARITY_FLOW: u32 = 0;
pub const GRANULARITY_PACKET: u32 = 1;

pub const EVENT_PACKET: u8 = 1;
pub const EVENT_NEW_FLOW: u8 = 2;
pub const EVENT_TCP_CTRL: u8 = 3;
pub const EVENT_DROP: u8 = 4;
pub const EVENT_DNS: u8 = 5;
/// An ICMP destination unreachable: the key is the tuple of the packet it
/// quotes, `drop_reason` the ICMP type << 8 | code.
pub const EVENT_UNREACH: u8 = 6;

/// [`Event::drop_flags`]: connection tracking runs where the packet was
/// dropped and had attached no entry to it (it judged the packet invalid).
pub const DROP_CT_NONE: u16 = 1;

/// Most DNS payload bytes a [`DnsEvent`] carries.
pub const DNS_MAX: usize = 512;
pub const DNS_PORT: u16 = 53;

/// Indexes of the per-CPU `fg_counters` array.
pub mod counter {
    pub const RINGBUF_LOST: u32 = 0;
    pub const PACKETS: u32 = 1;
    pub const NOT_IP: u32 = 2;
    pub const TRUNCATED: u32 = 3;
    pub const FLOW_UPDATE_FAIL: u32 = 4;
    pub const DROPS: u32 = 5;
    pub const COUNT: u32 = 8;
}

/// `struct fg_flow_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
    pub src_port: u16,
    pub dst_port: u16,
    pub ifindex: u32,
    pub protocol: u8,
    pub ip_version: u8,
    pub hook: u8,
    pub _pad: u8,
}

/// `struct fg_flow_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    pub packets: u64,
    pub bytes: u64,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub tcp_flags: u32,
    pub _pad: u32,
}

/// `struct fg_event`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub timestamp_ns: u64,
    pub key: FlowKey,
    pub len: u32,
    pub kind: u8,
    pub tcp_flags: u8,
    /// `DROP_*` bits, for [`EVENT_DROP`].
    pub drop_flags: u16,
    pub drop_reason: u32,
}

/// `struct fg_dns_event`: a DNS response entering a pod.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DnsEvent {
    pub event: Event,
    pub payload_len: u32,
    pub _pad: u32,
    pub payload: [u8; DNS_MAX],
}

impl DnsEvent {
    /// The payload bytes of a ring-buffer record of kind [`EVENT_DNS`]
    /// (`None` if the record is shorter than the structure or its length
    /// field exceeds the buffer).
    pub fn payload_of(bytes: &[u8]) -> Option<&[u8]> {
        if bytes.len() < size_of::<DnsEvent>() {
            return None;
        }
        let at = std::mem::offset_of!(DnsEvent, payload_len);
        let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().ok()?) as usize;
        let start = std::mem::offset_of!(DnsEvent, payload);
        (len <= DNS_MAX).then(|| &bytes[start..start + len])
    }
}

// SAFETY: plain-old-data: fixed-size integer fields, no padding, every bit
// pattern valid.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowStats {}
// SAFETY: as above.
unsafe impl aya::Pod for Event {}

impl Event {
    /// Reads an event from ring-buffer bytes; `None` if too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: length checked; Event is plain-old-data (see above) and
        // read_unaligned makes no alignment assumption.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }
}

fn ip(raw: &[u8; 16], version: u8) -> IpAddr {
    if version == IPV4 {
        IpAddr::V4(Ipv4Addr::new(raw[12], raw[13], raw[14], raw[15]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*raw))
    }
}

impl FlowKey {
    pub fn src(&self) -> IpAddr {
        ip(&self.src_ip, self.ip_version)
    }

    pub fn dst(&self) -> IpAddr {
        ip(&self.dst_ip, self.ip_version)
    }

    /// The same flow seen from the other end (ports and addresses swapped).
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src_ip: self.dst_ip,
            dst_ip: self.src_ip,
            src_port: self.dst_port,
            dst_port: self.src_port,
            ..*self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn layout_matches_the_c_header() {
        let c = include_str!(concat!(env!("OUT_DIR"), "/c_layout.txt"));
        let rust: Vec<(&str, usize)> = vec![
            ("fg_flow_key", size_of::<FlowKey>()),
            ("fg_flow_key.src_ip", offset_of!(FlowKey, src_ip)),
            ("fg_flow_key.dst_ip", offset_of!(FlowKey, dst_ip)),
            ("fg_flow_key.src_port", offset_of!(FlowKey, src_port)),
            ("fg_flow_key.dst_port", offset_of!(FlowKey, dst_port)),
            ("fg_flow_key.ifindex", offset_of!(FlowKey, ifindex)),
            ("fg_flow_key.protocol", offset_of!(FlowKey, protocol)),
            ("fg_flow_key.ip_version", offset_of!(FlowKey, ip_version)),
            ("fg_flow_key.hook", offset_of!(FlowKey, hook)),
            ("fg_flow_key._pad", offset_of!(FlowKey, _pad)),
            ("fg_flow_stats", size_of::<FlowStats>()),
            ("fg_flow_stats.packets", offset_of!(FlowStats, packets)),
            ("fg_flow_stats.bytes", offset_of!(FlowStats, bytes)),
            (
                "fg_flow_stats.first_seen_ns",
                offset_of!(FlowStats, first_seen_ns),
            ),
            (
                "fg_flow_stats.last_seen_ns",
                offset_of!(FlowStats, last_seen_ns),
            ),
            ("fg_flow_stats.tcp_flags", offset_of!(FlowStats, tcp_flags)),
            ("fg_flow_stats._pad", offset_of!(FlowStats, _pad)),
            ("fg_event", size_of::<Event>()),
            ("fg_event.timestamp_ns", offset_of!(Event, timestamp_ns)),
            ("fg_event.key", offset_of!(Event, key)),
            ("fg_event.len", offset_of!(Event, len)),
            ("fg_event.kind", offset_of!(Event, kind)),
            ("fg_event.tcp_flags", offset_of!(Event, tcp_flags)),
            ("fg_event.drop_flags", offset_of!(Event, drop_flags)),
            ("fg_event.drop_reason", offset_of!(Event, drop_reason)),
            ("fg_dns_event", size_of::<DnsEvent>()),
            ("fg_dns_event.event", offset_of!(DnsEvent, event)),
            (
                "fg_dns_event.payload_len",
                offset_of!(DnsEvent, payload_len),
            ),
            ("fg_dns_event._pad", offset_of!(DnsEvent, _pad)),
            ("fg_dns_event.payload", offset_of!(DnsEvent, payload)),
        ];
        let c: Vec<(&str, usize)> = c
            .lines()
            .map(|l| {
                let (name, n) = l.split_once(' ').unwrap();
                (name, n.parse().unwrap())
            })
            .collect();
        assert_eq!(rust, c);
    }

    #[test]
    fn structs_have_no_implicit_padding() {
        // Sum of field sizes equals struct size.
        assert_eq!(size_of::<FlowKey>(), 16 + 16 + 2 + 2 + 4 + 4);
        assert_eq!(size_of::<FlowStats>(), 8 * 4 + 4 + 4);
        assert_eq!(
            size_of::<Event>(),
            8 + size_of::<FlowKey>() + 4 + 1 + 1 + 2 + 4
        );
        assert_eq!(size_of::<DnsEvent>(), size_of::<Event>() + 4 + 4 + DNS_MAX);
    }

    #[test]
    fn ipv4_is_read_from_the_mapped_form() {
        let mut k = FlowKey {
            ip_version: IPV4,
            ..Default::default()
        };
        k.src_ip[10..].copy_from_slice(&[0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(k.src().to_string(), "10.0.0.1");
        assert_eq!(k.reversed().dst().to_string(), "10.0.0.1");
        assert!(Event::from_bytes(&[0u8; 10]).is_none());
    }

    #[test]
    fn dns_payload_is_bounded_by_its_length_field() {
        let mut rec = vec![0u8; size_of::<DnsEvent>()];
        let at = offset_of!(DnsEvent, payload_len);
        rec[at..at + 4].copy_from_slice(&3u32.to_ne_bytes());
        let start = offset_of!(DnsEvent, payload);
        rec[start..start + 3].copy_from_slice(b"abc");
        assert_eq!(DnsEvent::payload_of(&rec), Some(&b"abc"[..]));
        rec[at..at + 4].copy_from_slice(&9999u32.to_ne_bytes());
        assert_eq!(DnsEvent::payload_of(&rec), None, "length beyond the buffer");
        assert_eq!(DnsEvent::payload_of(&rec[..100]), None, "short record");
    }
}
