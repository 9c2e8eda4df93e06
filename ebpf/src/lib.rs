//! flowgate's eBPF programs and their kernel/user ABI.
//!
//! `bpf/flowgate.bpf.c` (C, compiled by `build.rs` with `clang -target bpf`)
//! holds two TC programs (`fg_tc_ingress`, `fg_tc_egress`) that record every
//! packet's 5-tuple, size, TCP flags and hook, either per packet into the
//! `fg_events` ring buffer or aggregated in the `fg_flows` per-CPU LRU hash;
//! and a BTF tracepoint on `skb:kfree_skb` (`fg_kfree_skb`) that records
//! kernel drops with their reason. [`abi`] mirrors `bpf/flowgate.h`.
//! [`load`] loads the object with the chosen granularity; attaching is the
//! probe's job.
//!
//! Minimum kernel: 5.17 (BTF tracepoints with drop reasons, ring buffer);
//! TCX attachment is used from 6.6, clsact before.

pub mod abi;

use aya::{Ebpf, EbpfLoader};

/// The compiled object, 8-byte aligned as the ELF parser wants it.
pub fn object() -> &'static [u8] {
    #[repr(C, align(8))]
    struct Aligned<T: ?Sized>(T);
    static OBJECT: &Aligned<[u8]> =
        &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/flowgate.bpf.o")));
    &OBJECT.0
}

/// Names of the programs and maps in the object.
pub mod names {
    pub const TC_INGRESS: &str = "fg_tc_ingress";
    pub const TC_EGRESS: &str = "fg_tc_egress";
    pub const KFREE_SKB: &str = "fg_kfree_skb";
    pub const EVENTS: &str = "fg_events";
    pub const FLOWS: &str = "fg_flows";
    pub const COUNTERS: &str = "fg_counters";
}

/// How the TC programs report packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// Aggregate in the kernel's flow table; new flows and TCP control
    /// packets also go to the ring buffer.
    Flow,
    /// Every packet is a ring-buffer event.
    Packet,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("loading the eBPF object into the kernel failed: {0}")]
    Object(#[from] aya::EbpfError),
}

/// Parses the object and creates its maps, with the granularity fixed for
/// the verifier. Programs are loaded by the caller (they need attach-time
/// details such as the kernel's BTF).
pub fn load(granularity: Granularity) -> Result<Ebpf, LoadError> {
    let g = match granularity {
        Granularity::Flow => abi::GRANULARITY_FLOW,
        Granularity::Packet => abi::GRANULARITY_PACKET,
    };
    Ok(EbpfLoader::new()
        .set_global("fg_granularity", &g, true)
        .load(object())?)
}
