//! flowgate demo: a cluster built from network namespaces, policies enforced with nftables.
