/* SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0) */
/* Header parsing shared by the TC programs: Ethernet (+ up to two VLAN
 * tags), IPv4, IPv6 (extension headers skipped), TCP, UDP, SCTP, ICMP,
 * ICMPv6. Reads come from the linear data when possible and through
 * bpf_skb_load_bytes otherwise, so non-linear skbs parse too; the packet is
 * never touched. */
#ifndef FLOWGATE_PARSE_H
#define FLOWGATE_PARSE_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "flowgate.h"

#define FG_PARSE_OK 0
#define FG_PARSE_NOT_IP 1
#define FG_PARSE_TRUNCATED 2

#ifndef IPPROTO_ICMPV6
#define IPPROTO_ICMPV6 58
#endif
#define FG_NEXTHDR_HOP 0
#define FG_NEXTHDR_ROUTING 43
#define FG_NEXTHDR_FRAGMENT 44
#define FG_NEXTHDR_AUTH 51
#define FG_NEXTHDR_DEST 60
#define FG_MAX_VLAN 2
#define FG_MAX_EXT_HEADERS 6

static __always_inline void fg_map_v4(__u8 *dst, __u32 addr)
{
	__builtin_memset(dst, 0, 10);
	dst[10] = 0xff;
	dst[11] = 0xff;
	__builtin_memcpy(dst + 12, &addr, 4);
}

/* Copies len bytes at off: straight from the linear packet data when they
 * lie there (no helper call: the common case), else through
 * bpf_skb_load_bytes (non-linear skbs). The packet is never written. */
static __always_inline int fg_load(struct __sk_buff *skb, __u32 off, void *dst, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	if (off < 512 && data + off + len <= end) {
		__builtin_memcpy(dst, data + off, len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, dst, len);
}

/* Fills key (addresses, ports, protocol, version), *tcp_flags and
 * *payload_off (where the TCP/UDP payload or the ICMP message body starts;
 * 0 for other protocols). */
static __always_inline int fg_parse(struct __sk_buff *skb, struct fg_flow_key *key, __u8 *tcp_flags,
				    __u32 *payload_off)
{
	__u32 off = ETH_HLEN;
	__u16 proto;
	__u8 l4 = 0;
	int fragment = 0;

	if (fg_load(skb, 12, &proto, sizeof(proto)) < 0)
		return FG_PARSE_TRUNCATED;
#pragma unroll
	for (int i = 0; i < FG_MAX_VLAN; i++) {
		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		/* VLAN tag: TCI (2 bytes), then the encapsulated EtherType. */
		if (fg_load(skb, off + 2, &proto, sizeof(proto)) < 0)
			return FG_PARSE_TRUNCATED;
		off += 4;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;
		if (fg_load(skb, off, &ip, sizeof(ip)) < 0)
			return FG_PARSE_TRUNCATED;
		if (ip.ihl < 5)
			return FG_PARSE_TRUNCATED;
		key->ip_version = FG_IPV4;
		fg_map_v4(key->src_ip, ip.saddr);
		fg_map_v4(key->dst_ip, ip.daddr);
		l4 = ip.protocol;
		/* Non-first fragments carry no L4 header. */
		fragment = (bpf_ntohs(ip.frag_off) & 0x1fff) != 0;
		off += ip.ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;
		if (fg_load(skb, off, &ip6, sizeof(ip6)) < 0)
			return FG_PARSE_TRUNCATED;
		key->ip_version = FG_IPV6;
		__builtin_memcpy(key->src_ip, &ip6.saddr, 16);
		__builtin_memcpy(key->dst_ip, &ip6.daddr, 16);
		l4 = ip6.nexthdr;
		off += sizeof(ip6);
#pragma unroll
		for (int i = 0; i < FG_MAX_EXT_HEADERS; i++) {
			__u8 ext[2];
			if (l4 != FG_NEXTHDR_HOP && l4 != FG_NEXTHDR_ROUTING && l4 != FG_NEXTHDR_DEST &&
			    l4 != FG_NEXTHDR_FRAGMENT && l4 != FG_NEXTHDR_AUTH)
				break;
			if (fg_load(skb, off, ext, sizeof(ext)) < 0)
				return FG_PARSE_TRUNCATED;
			if (l4 == FG_NEXTHDR_FRAGMENT) {
				__u16 frag;
				if (fg_load(skb, off + 2, &frag, sizeof(frag)) < 0)
					return FG_PARSE_TRUNCATED;
				fragment = (bpf_ntohs(frag) & 0xfff8) != 0;
				off += 8;
			} else if (l4 == FG_NEXTHDR_AUTH) {
				off += ((__u32)ext[1] + 2) * 4;
			} else {
				off += ((__u32)ext[1] + 1) * 8;
			}
			l4 = ext[0];
		}
	} else {
		return FG_PARSE_NOT_IP;
	}

	key->protocol = l4;
	if (fragment)
		return FG_PARSE_OK;
	switch (l4) {
	case IPPROTO_TCP: {
		__u8 tcp[14];
		if (fg_load(skb, off, tcp, sizeof(tcp)) < 0)
			return FG_PARSE_TRUNCATED;
		key->src_port = ((__u16)tcp[0] << 8) | tcp[1];
		key->dst_port = ((__u16)tcp[2] << 8) | tcp[3];
		*tcp_flags = tcp[13];
		*payload_off = off + (tcp[12] >> 4) * 4;
		break;
	}
	case IPPROTO_UDP:
		*payload_off = off + 8;
		/* fall through */
	case IPPROTO_SCTP: {
		__u8 ports[4];
		if (fg_load(skb, off, ports, sizeof(ports)) < 0)
			return FG_PARSE_TRUNCATED;
		key->src_port = ((__u16)ports[0] << 8) | ports[1];
		key->dst_port = ((__u16)ports[2] << 8) | ports[3];
		break;
	}
	case IPPROTO_ICMP:
	case IPPROTO_ICMPV6: {
		__u8 tc[2];
		if (fg_load(skb, off, tc, sizeof(tc)) < 0)
			return FG_PARSE_TRUNCATED;
		key->src_port = tc[0];
		key->dst_port = tc[1];
		/* An error message quotes the packet it answers after the
		 * 8-byte ICMP header. */
		*payload_off = off + 8;
		break;
	}
	default:
		break;
	}
	return FG_PARSE_OK;
}

/* The tuple of the packet an ICMP error quotes at off (its IP header and
 * the first bytes of its TCP, UDP or SCTP header). Returns 0 when read. */
static __always_inline int fg_parse_quote(struct __sk_buff *skb, __u32 off, __u8 ip_version,
					  struct fg_flow_key *key)
{
	__u8 l4;
	__u8 ports[4];

	if (ip_version == FG_IPV4) {
		struct iphdr ip;
		if (fg_load(skb, off, &ip, sizeof(ip)) < 0 || ip.ihl < 5)
			return -1;
		fg_map_v4(key->src_ip, ip.saddr);
		fg_map_v4(key->dst_ip, ip.daddr);
		l4 = ip.protocol;
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip6;
		if (fg_load(skb, off, &ip6, sizeof(ip6)) < 0)
			return -1;
		__builtin_memcpy(key->src_ip, &ip6.saddr, 16);
		__builtin_memcpy(key->dst_ip, &ip6.daddr, 16);
		l4 = ip6.nexthdr;
		off += sizeof(ip6);
	}
	if (l4 != IPPROTO_TCP && l4 != IPPROTO_UDP && l4 != IPPROTO_SCTP)
		return -1;
	if (fg_load(skb, off, ports, sizeof(ports)) < 0)
		return -1;
	key->src_port = ((__u16)ports[0] << 8) | ports[1];
	key->dst_port = ((__u16)ports[2] << 8) | ports[3];
	key->protocol = l4;
	key->ip_version = ip_version;
	return 0;
}

#endif
