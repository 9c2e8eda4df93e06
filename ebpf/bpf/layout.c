// SPDX-License-Identifier: (GPL-2.0-only OR Apache-2.0)
/* Prints every ABI structure's size and field offsets, one per line as
 * `struct.field offset` and `struct size`, for the Rust layout test. */
#include <stddef.h>
#include <stdio.h>

#include "flowgate.h"

#define SIZE(s) printf(#s " %zu\n", sizeof(struct s))
#define OFF(s, f) printf(#s "." #f " %zu\n", offsetof(struct s, f))

int main(void)
{
	SIZE(fg_flow_key);
	OFF(fg_flow_key, src_ip);
	OFF(fg_flow_key, dst_ip);
	OFF(fg_flow_key, src_port);
	OFF(fg_flow_key, dst_port);
	OFF(fg_flow_key, ifindex);
	OFF(fg_flow_key, protocol);
	OFF(fg_flow_key, ip_version);
	OFF(fg_flow_key, hook);
	OFF(fg_flow_key, _pad);
	SIZE(fg_flow_stats);
	OFF(fg_flow_stats, packets);
	OFF(fg_flow_stats, bytes);
	OFF(fg_flow_stats, first_seen_ns);
	OFF(fg_flow_stats, last_seen_ns);
	OFF(fg_flow_stats, tcp_flags);
	OFF(fg_flow_stats, _pad);
	SIZE(fg_event);
	OFF(fg_event, timestamp_ns);
	OFF(fg_event, key);
	OFF(fg_event, len);
	OFF(fg_event, kind);
	OFF(fg_event, tcp_flags);
	OFF(fg_event, drop_flags);
	OFF(fg_event, drop_reason);
	SIZE(fg_dns_event);
	OFF(fg_dns_event, event);
	OFF(fg_dns_event, payload_len);
	OFF(fg_dns_event, _pad);
	OFF(fg_dns_event, payload);
	return 0;
}
