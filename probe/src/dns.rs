//! DNS names for the addresses pods talk to.
//!
//! The eBPF programs copy DNS responses entering a pod (source port 53, UDP
//! or TCP, up to 512 bytes) to the ring buffer; [`parse_response`] reads the
//! question name and the A/AAAA answers (following CNAME chains implicitly:
//! every address answers the name the pod asked for), bounded in every loop
//! and failing with a named error on anything malformed. [`Names`] keeps,
//! per interface (one pod), address → name until the answer's TTL ends.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rustc_hash::FxHashMap;

const HEADER: usize = 12;
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;
/// A name is at most 255 bytes on the wire.
const MAX_NAME: usize = 255;
/// Compression pointers followed for one name; real names need a few.
const MAX_POINTERS: usize = 16;
/// Answers read from one response.
const MAX_ANSWERS: usize = 64;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    #[error("DNS message shorter than its header ({0} bytes)")]
    ShortHeader(usize),
    #[error("DNS message is a query, not a response")]
    NotResponse,
    #[error("DNS response has {0} questions; exactly one is understood")]
    Questions(u16),
    #[error("DNS name runs past the end of the message")]
    NameTruncated,
    #[error("DNS name longer than 255 bytes")]
    NameTooLong,
    #[error("DNS name compression loops or nests deeper than {MAX_POINTERS} pointers")]
    PointerLoop,
    #[error("DNS label type {0:#04x} is not a plain label or a pointer")]
    LabelType(u8),
    #[error("DNS record runs past the end of the message")]
    RecordTruncated,
    #[error("DNS {kind} record has {len} bytes of data")]
    AddressLength { kind: &'static str, len: usize },
}

/// What a response taught: the name asked, and each address with its TTL.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub addresses: Vec<(IpAddr, u32)>,
}

/// Parses a DNS response (for TCP, without the 2-byte length prefix). A
/// response cut short by the capture limit yields the answers read so far.
pub fn parse_response(msg: &[u8]) -> Result<Answer, DnsError> {
    if msg.len() < HEADER {
        return Err(DnsError::ShortHeader(msg.len()));
    }
    let be16 = |at: usize| u16::from_be_bytes([msg[at], msg[at + 1]]);
    if msg[2] & 0x80 == 0 {
        return Err(DnsError::NotResponse);
    }
    let questions = be16(4);
    if questions != 1 {
        return Err(DnsError::Questions(questions));
    }
    let answers = usize::from(be16(6)).min(MAX_ANSWERS);
    let (name, mut at) = read_name(msg, HEADER)?;
    at += 4; // QTYPE, QCLASS
    let mut addresses = Vec::new();
    for _ in 0..answers {
        let Ok((_, after)) = read_name(msg, at) else {
            break; // cut by the capture limit: keep what was read
        };
        let Some(fixed) = msg.get(after..after + 10) else {
            break;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let Some(data) = msg.get(after + 10..after + 10 + len) else {
            if addresses.is_empty() {
                return Err(DnsError::RecordTruncated);
            }
            break;
        };
        at = after + 10 + len;
        if class != CLASS_IN {
            continue;
        }
        let addr = match (rtype, data.len()) {
            (TYPE_A, 4) => IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3])),
            (TYPE_AAAA, 16) => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(data).map_err(|_| DnsError::RecordTruncated)?,
            )),
            (TYPE_A, len) => return Err(DnsError::AddressLength { kind: "A", len }),
            (TYPE_AAAA, len) => return Err(DnsError::AddressLength { kind: "AAAA", len }),
            _ => continue, // CNAME and others: the question's name stands
        };
        addresses.push((addr, ttl));
    }
    Ok(Answer { name, addresses })
}

/// Reads a possibly compressed name at `at`; returns it (lower case, no
/// trailing dot) and the offset just past it in the original position.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), DnsError> {
    let mut name = String::new();
    let mut end = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at).ok_or(DnsError::NameTruncated)?;
        match len & 0xc0 {
            0x00 if len == 0 => {
                return Ok((name, end.unwrap_or(at + 1)));
            }
            0x00 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(len))
                    .ok_or(DnsError::NameTruncated)?;
                if name.len() + label.len() + 1 > MAX_NAME {
                    return Err(DnsError::NameTooLong);
                }
                if !name.is_empty() {
                    name.push('.');
                }
                name.extend(label.iter().map(|b| b.to_ascii_lowercase() as char));
                at += 1 + usize::from(len);
            }
            0xc0 => {
                let low = *msg.get(at + 1).ok_or(DnsError::NameTruncated)?;
                pointers += 1;
                if pointers > MAX_POINTERS {
                    return Err(DnsError::PointerLoop);
                }
                end.get_or_insert(at + 2);
                at = usize::from(len & 0x3f) << 8 | usize::from(low);
            }
            _ => return Err(DnsError::LabelType(len)),
        }
    }
}

/// A TTL shorter than this is stretched to it: a client connects right
/// after resolving, often after a TTL of 0 or a few seconds has passed.
const MIN_TTL_NS: u64 = 10_000_000_000;
/// Most addresses remembered on the node; beyond, new answers are counted
/// and not kept until expired ones make room.
pub const MAX_ENTRIES: usize = 65_536;

/// Per interface (pod): address → (name, expiry), CLOCK_MONOTONIC ns.
#[derive(Debug, Default)]
pub struct Names {
    entries: FxHashMap<(u32, IpAddr), (String, u64)>,
    /// Answers not kept because the map was full.
    pub full: u64,
}

impl Names {
    /// Remembers what the pod behind `ifindex` learnt at `now_ns`.
    pub fn learn(&mut self, ifindex: u32, answer: Answer, now_ns: u64) {
        for (addr, ttl) in answer.addresses {
            let ttl_ns = (u64::from(ttl) * 1_000_000_000).max(MIN_TTL_NS);
            if self.entries.len() >= MAX_ENTRIES && !self.entries.contains_key(&(ifindex, addr)) {
                self.expire(now_ns);
                if self.entries.len() >= MAX_ENTRIES {
                    self.full += 1;
                    continue;
                }
            }
            self.entries
                .insert((ifindex, addr), (answer.name.clone(), now_ns + ttl_ns));
        }
    }

    /// The name the pod behind `ifindex` resolved to `addr`, if the answer
    /// was still valid at `at_ns`.
    pub fn name(&self, ifindex: u32, addr: IpAddr, at_ns: u64) -> Option<&str> {
        self.entries
            .get(&(ifindex, addr))
            .filter(|(_, expires)| *expires >= at_ns)
            .map(|(n, _)| n.as_str())
    }

    pub fn expire(&mut self, now_ns: u64) {
        self.entries.retain(|_, (_, expires)| *expires >= now_ns);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Builds DNS messages for tests (here and in the real-kernel test).
pub mod wire {
    /// A name in wire form.
    pub fn name(n: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    /// A query for `n` (type A, class IN).
    pub fn query(id: u16, n: &str) -> Vec<u8> {
        let mut m = id.to_be_bytes().to_vec();
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        m.extend(name(n));
        m.extend_from_slice(&[0, 1, 0, 1]);
        m
    }

    /// The answer to `query` (as built by [`query`]): one A record per
    /// address, its name a compression pointer to the question.
    pub fn answer(query: &[u8], addresses: &[[u8; 4]], ttl: u32) -> Vec<u8> {
        let mut m = query.to_vec();
        m[2] = 0x81;
        m[3] = 0x80;
        m[6..8].copy_from_slice(&(addresses.len() as u16).to_be_bytes());
        for a in addresses {
            m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&[0, 4]);
            m.extend_from_slice(a);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_a_cname_chain_names_the_question() {
        let mut m = wire::query(7, "Api.Example.com");
        m[2] = 0x81;
        m[7] = 2;
        // CNAME api.example.com -> lb.example.net, then A lb.example.net.
        let target = wire::name("lb.example.net");
        m.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, target.len() as u8]);
        let target_at = m.len();
        m.extend(target);
        m.extend_from_slice(&[
            0xc0,
            target_at as u8,
            0,
            1,
            0,
            1,
            0,
            0,
            1,
            0,
            0,
            4,
            1,
            2,
            3,
            4,
        ]);
        let a = parse_response(&m).unwrap();
        assert_eq!(a.name, "api.example.com");
        assert_eq!(a.addresses, vec![("1.2.3.4".parse().unwrap(), 256)]);
    }

    #[test]
    fn malformed_messages_are_named_errors() {
        assert_eq!(parse_response(&[0; 5]), Err(DnsError::ShortHeader(5)));
        let q = wire::query(1, "a.b");
        assert_eq!(parse_response(&q), Err(DnsError::NotResponse));
        let mut looped = wire::answer(&q, &[], 1);
        // The question's name points at itself.
        looped.truncate(12);
        looped.extend_from_slice(&[0xc0, 12]);
        assert_eq!(parse_response(&looped), Err(DnsError::PointerLoop));
        let mut bad_len = wire::answer(&q, &[[1, 1, 1, 1]], 1);
        let n = bad_len.len();
        bad_len[n - 5] = 3; // rdlength 3 for an A record
        bad_len.pop();
        assert_eq!(
            parse_response(&bad_len),
            Err(DnsError::AddressLength { kind: "A", len: 3 })
        );
        let mut label = wire::answer(&q, &[], 1);
        label[12] = 0x80;
        assert_eq!(parse_response(&label), Err(DnsError::LabelType(0x80)));
        // Every prefix of a valid answer parses or fails cleanly.
        let full = wire::answer(&q, &[[1, 1, 1, 1], [2, 2, 2, 2]], 1);
        for cut in 0..full.len() {
            let _ = parse_response(&full[..cut]);
        }
        let cut = parse_response(&full[..full.len() - 2]).unwrap();
        assert_eq!(cut.addresses.len(), 1, "answers before the cut are kept");
    }

    #[test]
    fn names_are_per_pod_and_expire_with_the_ttl() {
        let q = wire::query(1, "db.example.org");
        let mut names = Names::default();
        names.learn(
            3,
            parse_response(&wire::answer(&q, &[[9, 9, 9, 9]], 60)).unwrap(),
            0,
        );
        let addr: IpAddr = "9.9.9.9".parse().unwrap();
        assert_eq!(names.name(3, addr, 59_000_000_000), Some("db.example.org"));
        assert_eq!(names.name(4, addr, 0), None, "another pod did not ask");
        assert_eq!(names.name(3, addr, 61_000_000_000), None, "TTL passed");
        names.learn(
            3,
            parse_response(&wire::answer(&q, &[[9, 9, 9, 9]], 0)).unwrap(),
            0,
        );
        assert_eq!(names.name(3, addr, 9_000_000_000), Some("db.example.org"));
        names.expire(MIN_TTL_NS + 1);
        assert!(names.is_empty());
    }
}
