/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/*
 * flowgate's kernel/user ABI: the one definition of every structure that
 * crosses the boundary. The Rust mirror is ebpf/src/abi.rs; a test compares
 * sizes and offsets. Rules: fixed-width fields, no implicit padding, u32
 * flags rather than bool.
 */
#ifndef FLOWGATE_H
#define FLOWGATE_H

#include <linux/types.h>

/* Which TC hook saw the packet. On the host side of a pod veth, the ingress
 * hook sees what the pod sends and the egress hook what it receives. */
#define FG_HOOK_INGRESS 1
#define FG_HOOK_EGRESS 2

#define FG_IPV4 4
#define FG_IPV6 6

/* Granularity, set at load time in the read-only global fg_granularity. */
#define FG_GRANULARITY_FLOW 0
#define FG_GRANULARITY_PACKET 1

/* Event kinds in the ring buffer. */
#define FG_EVENT_PACKET 1   /* packet mode: every packet */
#define FG_EVENT_NEW_FLOW 2 /* flow mode: first packet of a new flow-table entry */
#define FG_EVENT_TCP_CTRL 3 /* flow mode: a packet with SYN, FIN or RST */
#define FG_EVENT_DROP 4     /* skb:kfree_skb: the kernel dropped a packet */
#define FG_EVENT_DNS 5      /* a DNS response delivered to a pod: struct fg_dns_event */
#define FG_EVENT_UNREACH 6  /* an ICMP destination unreachable: key is the packet it quotes */

/* fg_event.drop_flags: connection tracking runs in the namespace where the
 * packet was dropped (IPv4 or IPv6, as the packet) and had attached no entry
 * to it: it judged the packet invalid (or it was dropped before conntrack
 * saw it). With NETFILTER_DROP this tells a `ct state invalid drop` from a
 * policy rule. */
#define FG_DROP_CT_NONE 1

/* DNS responses are copied up to this many bytes of the UDP payload (the
 * classic limit; longer answers are cut and parsed as far as they go). */
#define FG_DNS_MAX 512
#define FG_DNS_PORT 53

/* Indexes of the per-CPU counters array fg_counters. */
#define FG_CTR_RINGBUF_LOST 0    /* events not reserved: ring buffer full */
#define FG_CTR_PACKETS 1         /* packets seen by the TC programs */
#define FG_CTR_NOT_IP 2          /* packets that were neither IPv4 nor IPv6 */
#define FG_CTR_TRUNCATED 3       /* packets too short for the headers they announce */
#define FG_CTR_FLOW_UPDATE_FAIL 4 /* flow-table inserts that failed (not LRU eviction) */
#define FG_CTR_DROPS 5           /* kfree_skb events for IP packets */
#define FG_CTR_COUNT 8

/* A flow: 5-tuple, interface and hook. IPv4 addresses are stored
 * IPv4-mapped (::ffff:a.b.c.d) so both versions share one layout.
 * For ICMP/ICMPv6, src_port holds the type and dst_port the code. */
struct fg_flow_key {
	__u8 src_ip[16];
	__u8 dst_ip[16];
	__u16 src_port; /* host byte order */
	__u16 dst_port;
	__u32 ifindex;
	__u8 protocol; /* IANA number: 6 TCP, 17 UDP, 132 SCTP, 1 ICMP, 58 ICMPv6 */
	__u8 ip_version; /* FG_IPV4 or FG_IPV6 */
	__u8 hook;       /* FG_HOOK_*; 0 for drops */
	__u8 _pad;
};

/* Per-CPU counters of one flow, cumulative while the entry lives. */
struct fg_flow_stats {
	__u64 packets;
	__u64 bytes;
	__u64 first_seen_ns; /* CLOCK_MONOTONIC at tick resolution (bpf_ktime_get_coarse_ns) */
	__u64 last_seen_ns;
	__u32 tcp_flags; /* OR of every flag byte seen */
	__u32 _pad;
};

/* One ring-buffer record. */
struct fg_event {
	__u64 timestamp_ns; /* CLOCK_MONOTONIC: at tick resolution from the TC programs
			     * (as first_seen_ns), precise for drops */
	struct fg_flow_key key;
	__u32 len; /* skb->len: bytes including the L2 header at TC */
	__u8 kind; /* FG_EVENT_* */
	__u8 tcp_flags;
	__u16 drop_flags; /* FG_DROP_*, for FG_EVENT_DROP; else 0 */
	__u32 drop_reason; /* FG_EVENT_DROP: enum skb_drop_reason;
			    * FG_EVENT_UNREACH: ICMP type << 8 | code */
};

/* A DNS response (source port 53, UDP or TCP) seen entering a pod. For
 * TCP the payload starts with the 2-byte DNS length prefix. */
struct fg_dns_event {
	struct fg_event event; /* kind FG_EVENT_DNS; key and hook as for packets */
	__u32 payload_len;     /* bytes of payload captured, <= FG_DNS_MAX */
	__u32 _pad;
	__u8 payload[FG_DNS_MAX];
};

#endif
