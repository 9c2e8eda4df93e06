// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/*
 * TC programs (clsact or TCX; TCX needs Linux 6.6) that observe every packet
 * on an interface. They never change or drop a packet: they always return
 * TC_ACT_UNSPEC (TCX_NEXT), so the next program or the stack decides.
 *
 * flow granularity: a per-CPU LRU hash aggregates packets per 5-tuple,
 * interface and hook; the probe reads and exports it every interval. New
 * entries and TCP SYN/FIN/RST also go to the ring buffer, so a connection
 * shorter than the interval is never missed.
 * packet granularity: every packet is a ring-buffer event.
 */
#include "parse.h"
#include <bpf/bpf_core_read.h>

#ifndef TC_ACT_UNSPEC
#define TC_ACT_UNSPEC (-1)
#endif

#define FG_TCP_CTRL (0x01 | 0x02 | 0x04) /* FIN | SYN | RST */

/* Set by the loader before the program is verified; the verifier prunes
 * the branch not taken. */
volatile const __u32 fg_granularity = FG_GRANULARITY_FLOW;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} fg_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct fg_flow_key);
	__type(value, struct fg_flow_stats);
} fg_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, FG_CTR_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} fg_counters SEC(".maps");

/* Records are submitted without waking the consumer: a wakeup (irq_work)
 * costs far more than the record, and forced ones while the consumer lags
 * cost microseconds per packet. The probe drains the ring on a timer (every
 * few milliseconds), long before 8 MiB of records can pile up. */
#define FG_SUBMIT BPF_RB_NO_WAKEUP

/* The clock of every timestamp: CLOCK_MONOTONIC at tick resolution (at most
 * one jiffy behind). Reading it is a load; bpf_ktime_get_ns reads the clock
 * source and cost a third of the per-packet budget. Timestamps decide
 * windows, idle timeouts and retries 200 ms apart: ticks are fine for all.
 * The drop tracepoint reads the precise clock (see fg_kfree_skb), so the
 * two order to within a tick. */
static __always_inline __u64 fg_now(void)
{
	return bpf_ktime_get_coarse_ns();
}

static __always_inline void fg_count(__u32 idx)
{
	__u64 *c = bpf_map_lookup_elem(&fg_counters, &idx);
	if (c)
		*c += 1;
}

static __always_inline void fg_emit(const struct fg_flow_key *key, __u64 now, __u32 len, __u8 kind,
				    __u8 tcp_flags)
{
	struct fg_event *e = bpf_ringbuf_reserve(&fg_events, sizeof(*e), 0);
	if (!e) {
		fg_count(FG_CTR_RINGBUF_LOST);
		return;
	}
	e->timestamp_ns = now;
	__builtin_memcpy(&e->key, key, sizeof(*key));
	e->len = len;
	e->kind = kind;
	e->tcp_flags = tcp_flags;
	e->drop_flags = 0;
	e->drop_reason = 0;
	bpf_ringbuf_submit(e, FG_SUBMIT);
}

/* A DNS response on its way into the pod: its payload, for the probe's
 * address-to-name map. Rare next to data packets, so a copy is cheap; not
 * inlined, like the other rare paths, to keep the per-packet path short. */
static __noinline void fg_emit_dns(struct __sk_buff *skb, const struct fg_flow_key *key, __u64 now,
					__u32 payload_off)
{
	if (payload_off == 0 || payload_off >= skb->len)
		return;
	__u64 n = skb->len - payload_off;
	struct fg_dns_event *e = bpf_ringbuf_reserve(&fg_events, sizeof(*e), 0);
	if (!e) {
		fg_count(FG_CTR_RINGBUF_LOST);
		return;
	}
	e->event.timestamp_ns = now;
	__builtin_memcpy(&e->event.key, key, sizeof(*key));
	e->event.len = skb->len;
	e->event.kind = FG_EVENT_DNS;
	e->event.tcp_flags = 0;
	e->event.drop_flags = 0;
	e->event.drop_reason = 0;
	e->_pad = 0;
	if (n > FG_DNS_MAX)
		n = FG_DNS_MAX;
	/* The verifier needs the size bounded and non-zero in the register
	 * passed; the barrier keeps clang from testing a copy instead. */
	asm volatile("" : "+r"(n));
	if (n < 1 || n > FG_DNS_MAX || bpf_skb_load_bytes(skb, payload_off, e->payload, n) < 0) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return;
	}
	e->payload_len = n;
	bpf_ringbuf_submit(e, FG_SUBMIT);
}

/* ICMP destination unreachable (IPv4 type 3, ICMPv6 type 1): the quoted
 * packet's tuple with the type and code, as evidence about that connection
 * (refused for want of a listener, a route, or by a firewall's reject).
 * Rare, and never on the hot path of data packets. */
static __noinline void fg_emit_unreach(struct __sk_buff *skb, const struct fg_flow_key *outer,
				    __u64 now, __u32 quote_off)
{
	struct fg_flow_key key = {};

	if (quote_off == 0 || fg_parse_quote(skb, quote_off, outer->ip_version, &key) != 0)
		return;
	key.ifindex = outer->ifindex;
	key.hook = outer->hook;
	struct fg_event *e = bpf_ringbuf_reserve(&fg_events, sizeof(*e), 0);
	if (!e) {
		fg_count(FG_CTR_RINGBUF_LOST);
		return;
	}
	e->timestamp_ns = now;
	__builtin_memcpy(&e->key, &key, sizeof(key));
	e->len = skb->len;
	e->kind = FG_EVENT_UNREACH;
	e->tcp_flags = 0;
	e->drop_flags = 0;
	e->drop_reason = ((__u32)outer->src_port << 8) | outer->dst_port;
	bpf_ringbuf_submit(e, FG_SUBMIT);
}

static __always_inline void fg_add(struct fg_flow_stats *s, __u64 now, __u32 len, __u8 tcp_flags)
{
	/* Per-CPU slot: this CPU may see the flow for the first time. */
	if (s->first_seen_ns == 0)
		s->first_seen_ns = now;
	s->packets += 1;
	s->bytes += len;
	s->last_seen_ns = now;
	s->tcp_flags |= tcp_flags;
}

static __always_inline int fg_observe(struct __sk_buff *skb, __u8 hook)
{
	struct fg_flow_key key = {};
	__u8 tcp_flags = 0;
	__u32 payload_off = 0;
	__u64 now = fg_now();

	fg_count(FG_CTR_PACKETS);
	int rc = fg_parse(skb, &key, &tcp_flags, &payload_off);
	if (rc == FG_PARSE_NOT_IP) {
		fg_count(FG_CTR_NOT_IP);
		return TC_ACT_UNSPEC;
	}
	if (rc != FG_PARSE_OK) {
		fg_count(FG_CTR_TRUNCATED);
		return TC_ACT_UNSPEC;
	}
	key.ifindex = skb->ifindex;
	key.hook = hook;
	if (hook == FG_HOOK_EGRESS && key.src_port == FG_DNS_PORT &&
	    (key.protocol == IPPROTO_UDP || key.protocol == IPPROTO_TCP))
		fg_emit_dns(skb, &key, now, payload_off);
	else if ((key.protocol == IPPROTO_ICMP && key.src_port == 3) ||
		 (key.protocol == IPPROTO_ICMPV6 && key.src_port == 1))
		fg_emit_unreach(skb, &key, now, payload_off);

	if (fg_granularity == FG_GRANULARITY_PACKET) {
		fg_emit(&key, now, skb->len, FG_EVENT_PACKET, tcp_flags);
		return TC_ACT_UNSPEC;
	}

	struct fg_flow_stats *s = bpf_map_lookup_elem(&fg_flows, &key);
	if (s) {
		fg_add(s, now, skb->len, tcp_flags);
	} else {
		struct fg_flow_stats init = {
			.packets = 1,
			.bytes = skb->len,
			.first_seen_ns = now,
			.last_seen_ns = now,
			.tcp_flags = tcp_flags,
		};
		if (bpf_map_update_elem(&fg_flows, &key, &init, BPF_NOEXIST) == 0) {
			fg_emit(&key, now, skb->len, FG_EVENT_NEW_FLOW, tcp_flags);
		} else {
			/* Another CPU inserted it first: add to our slot. */
			s = bpf_map_lookup_elem(&fg_flows, &key);
			if (s)
				fg_add(s, now, skb->len, tcp_flags);
			else
				fg_count(FG_CTR_FLOW_UPDATE_FAIL);
		}
	}
	if (tcp_flags & FG_TCP_CTRL)
		fg_emit(&key, now, skb->len, FG_EVENT_TCP_CTRL, tcp_flags);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int fg_tc_ingress(struct __sk_buff *skb)
{
	return fg_observe(skb, FG_HOOK_INGRESS);
}

SEC("classifier")
int fg_tc_egress(struct __sk_buff *skb)
{
	return fg_observe(skb, FG_HOOK_EGRESS);
}

/*
 * skb:kfree_skb as a BTF tracepoint (Linux 5.5+; drop reasons 5.17+): every
 * packet the kernel frees as dropped, with its reason. Only the few sk_buff
 * fields read here are declared; CO-RE relocates their offsets against the
 * running kernel's BTF at load time.
 */
struct netns_nf {
	unsigned int defrag_ipv4_users;
	unsigned int defrag_ipv6_users;
} __attribute__((preserve_access_index));

struct net {
	struct netns_nf nf;
} __attribute__((preserve_access_index));

struct net_device {
	int ifindex;
	struct {
		struct net *net;
	} nd_net;
} __attribute__((preserve_access_index));

struct sk_buff {
	unsigned long _nfct; /* conntrack entry | ctinfo; 0: none */
	unsigned int len;
	__u16 protocol; /* __be16 */
	__u16 transport_header;
	__u16 network_header;
	unsigned char *head;
	struct net_device *dev;
} __attribute__((preserve_access_index));

#define FG_SKB_CONSUMED 1 /* enum skb_drop_reason values <= 1 are not drops */

/* FG_DROP_CT_NONE when conntrack runs in the device's namespace for this
 * family (it holds the defragmenter, so its users count is non-zero) and
 * attached no entry to the packet. Kernels without conntrack or without
 * these fields report nothing. */
static __always_inline __u16 fg_ct_flags(struct sk_buff *skb, __u16 proto)
{
	unsigned int users;

	if (!bpf_core_field_exists(skb->_nfct) || !bpf_core_field_exists(struct netns_nf, defrag_ipv4_users))
		return 0;
	if (BPF_CORE_READ(skb, _nfct) != 0)
		return 0;
	if (proto == bpf_htons(ETH_P_IP))
		users = BPF_CORE_READ(skb, dev, nd_net.net, nf.defrag_ipv4_users);
	else
		users = BPF_CORE_READ(skb, dev, nd_net.net, nf.defrag_ipv6_users);
	return users ? FG_DROP_CT_NONE : 0;
}

/* Walks IPv6 extension headers in kernel memory from *off (just past the
 * fixed header), as fg_parse does on the capture path: returns the upper
 * protocol and leaves *off at its header. *fragment is set for a non-first
 * fragment (no ports). On a failed read the walk stops where it is. */
static __always_inline __u8 fg_skip_ipv6_ext(const unsigned char *head, __u32 *off, __u8 l4,
					     int *fragment)
{
#pragma unroll
	for (int i = 0; i < FG_MAX_EXT_HEADERS; i++) {
		__u8 ext[4];
		if (l4 != FG_NEXTHDR_HOP && l4 != FG_NEXTHDR_ROUTING && l4 != FG_NEXTHDR_DEST &&
		    l4 != FG_NEXTHDR_FRAGMENT && l4 != FG_NEXTHDR_AUTH)
			break;
		if (bpf_probe_read_kernel(ext, sizeof(ext), head + *off) < 0)
			break;
		if (l4 == FG_NEXTHDR_FRAGMENT) {
			*fragment = ((((__u16)ext[2] << 8) | ext[3]) & 0xfff8) != 0;
			*off += 8;
		} else if (l4 == FG_NEXTHDR_AUTH) {
			*off += ((__u32)ext[1] + 2) * 4;
		} else {
			*off += ((__u32)ext[1] + 1) * 8;
		}
		l4 = ext[0];
	}
	return l4;
}

SEC("tp_btf/kfree_skb")
int fg_kfree_skb(__u64 *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	__u32 reason = (__u32)ctx[2];
	struct fg_event *e;
	unsigned char *head;
	__u16 proto, nh, th;
	__u32 l4_off;
	int fragment = 0;
	__u8 l4;

	if (reason <= FG_SKB_CONSUMED)
		return 0;
	proto = BPF_CORE_READ(skb, protocol);
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return 0;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	th = BPF_CORE_READ(skb, transport_header);

	e = bpf_ringbuf_reserve(&fg_events, sizeof(*e), 0);
	if (!e) {
		fg_count(FG_CTR_RINGBUF_LOST);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	/* Tracing programs may not read the coarse clock (timekeeping could be
	 * the code traced), so drops carry the precise one. */
	e->timestamp_ns = bpf_ktime_get_ns();
	e->kind = FG_EVENT_DROP;
	e->drop_reason = reason;
	e->len = BPF_CORE_READ(skb, len);
	e->key.ifindex = BPF_CORE_READ(skb, dev, ifindex);
	e->drop_flags = fg_ct_flags(skb, proto);

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh) < 0)
			goto out;
		e->key.ip_version = FG_IPV4;
		fg_map_v4(e->key.src_ip, ip.saddr);
		fg_map_v4(e->key.dst_ip, ip.daddr);
		l4 = ip.protocol;
		/* transport_header is unset (~0) on some paths: derive it. */
		if (th == 0xffff || th <= nh)
			th = nh + ip.ihl * 4;
		l4_off = th;
		fragment = (bpf_ntohs(ip.frag_off) & 0x1fff) != 0;
	} else {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh) < 0)
			goto out;
		e->key.ip_version = FG_IPV6;
		__builtin_memcpy(e->key.src_ip, &ip6.saddr, 16);
		__builtin_memcpy(e->key.dst_ip, &ip6.daddr, 16);
		/* transport_header is not reliable here: on input it points just
		 * past the fixed header until the extension headers are
		 * processed. Walk them. */
		l4_off = nh + sizeof(ip6);
		l4 = fg_skip_ipv6_ext(head, &l4_off, ip6.nexthdr, &fragment);
	}
	e->key.protocol = l4;
	if (fragment)
		goto out;
	th = l4_off;
	if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP || l4 == IPPROTO_SCTP) {
		__u8 ports[4];
		if (bpf_probe_read_kernel(ports, sizeof(ports), head + th) == 0) {
			e->key.src_port = ((__u16)ports[0] << 8) | ports[1];
			e->key.dst_port = ((__u16)ports[2] << 8) | ports[3];
		}
		if (l4 == IPPROTO_TCP) {
			__u8 flags;
			if (bpf_probe_read_kernel(&flags, 1, head + th + 13) == 0)
				e->tcp_flags = flags;
		}
	} else if (l4 == IPPROTO_ICMP || l4 == IPPROTO_ICMPV6) {
		__u8 tc[2];
		if (bpf_probe_read_kernel(tc, sizeof(tc), head + th) == 0) {
			e->key.src_port = tc[0];
			e->key.dst_port = tc[1];
		}
	}
out:
	fg_count(FG_CTR_DROPS);
	bpf_ringbuf_submit(e, FG_SUBMIT);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
