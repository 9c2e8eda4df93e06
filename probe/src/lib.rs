//! The node probe: loads and attaches the eBPF programs, turns packet events into flow records and streams them to the collector.
