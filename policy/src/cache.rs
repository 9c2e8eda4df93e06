//! A verdict cache for the collector's hot path.
//!
//! Keyed by both endpoints, port, protocol and the cluster generation, so a
//! new snapshot never serves stale verdicts. Bounded: when full it is
//! cleared in one go (cheap, predictable; evictions are counted).

use rustc_hash::FxHashMap;

use crate::cluster::{Cluster, Endpoint, Verdict};
use crate::model::Protocol;

/// The key, packed into plain integers: hashing it is the whole cost of a
/// hit. The generation is part of the key through the map itself, which
/// holds one generation at a time.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    src_ip: u128,
    dst_ip: u128,
    /// Source and destination pod ids plus one (0: no pod).
    pods: u64,
    /// Port in the low 16 bits, protocol above.
    port_protocol: u32,
}

impl Key {
    fn new(src: &Endpoint, dst: &Endpoint, port: u16, protocol: Protocol) -> Self {
        let ip = |e: &Endpoint| match e.ip {
            std::net::IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
            std::net::IpAddr::V6(v6) => u128::from(v6),
        };
        let pod = |e: &Endpoint| e.pod.map_or(0, |p| u64::from(p.0) + 1);
        Key {
            src_ip: ip(src),
            dst_ip: ip(dst),
            pods: (pod(src) << 32) | pod(dst),
            port_protocol: u32::from(port) | ((protocol as u32) << 16),
        }
    }
}

/// Counters of a [`VerdictCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Entries dropped because the cache was full or the generation changed.
    pub evictions: u64,
    pub len: usize,
}

#[derive(Debug)]
pub struct VerdictCache {
    map: FxHashMap<Key, Verdict>,
    capacity: usize,
    generation: u64,
    stats: CacheStats,
    /// The last verdict computed past the cache (see `verdict_named`).
    named: Option<Verdict>,
}

impl VerdictCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            capacity: capacity.max(1),
            generation: 0,
            stats: CacheStats::default(),
            named: None,
        }
    }

    /// The verdict, from the cache or computed and remembered.
    pub fn verdict(
        &mut self,
        cluster: &Cluster,
        src: &Endpoint,
        dst: &Endpoint,
        port: u16,
        protocol: Protocol,
    ) -> &Verdict {
        let generation = cluster.generation();
        if generation != self.generation {
            // Entries of older generations can never be hit again.
            self.stats.evictions += self.map.len() as u64;
            self.map.clear();
            self.generation = generation;
        }
        let key = Key::new(src, dst, port, protocol);
        if self.map.contains_key(&key) {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
            if self.map.len() >= self.capacity {
                self.stats.evictions += self.map.len() as u64;
                self.map.clear();
            }
        }
        self.map
            .entry(key)
            .or_insert_with(|| cluster.verdict(src, dst, port, protocol))
    }

    /// [`Self::verdict`] for a destination reached by the DNS name
    /// `dst_name`. Verdicts that can depend on the name (the cluster has
    /// `domainNames` peers) are computed without the cache, whose key has
    /// no name; every other one is cached as usual.
    pub fn verdict_named(
        &mut self,
        cluster: &Cluster,
        src: &Endpoint,
        dst: &Endpoint,
        dst_name: Option<&str>,
        port: u16,
        protocol: Protocol,
    ) -> &Verdict {
        match dst_name {
            Some(name) if cluster.judges_domain_names() => {
                self.stats.misses += 1;
                self.named
                    .insert(cluster.verdict_named(src, dst, Some(name), port, protocol))
            }
            _ => self.verdict(cluster, src, dst, port, protocol),
        }
    }

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            len: self.map.len(),
            ..self.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClusterObjects;

    fn cluster(generation: u64) -> Cluster {
        let mut o = ClusterObjects::default();
        o.parse_yaml(
            "base",
            include_str!("../tests/fixtures/semantics/_base.yaml"),
        )
        .unwrap();
        o.parse_yaml(
            "union",
            include_str!("../tests/fixtures/semantics/union-and-empty.yaml"),
        )
        .unwrap();
        Cluster::build(&o, generation).unwrap()
    }

    fn ends(c: &Cluster) -> (Endpoint, Endpoint) {
        let client = c.pod_endpoint(c.find_pod("dev", "client").unwrap(), None);
        let web = c.pod_endpoint(c.find_pod("prod", "web").unwrap(), None);
        (client, web)
    }

    #[test]
    fn hits_match_fresh_verdicts_and_are_counted() {
        let c = cluster(1);
        let (client, web) = ends(&c);
        let mut cache = VerdictCache::new(100);
        for port in [80, 81, 80, 81, 80] {
            let cached = cache
                .verdict(&c, &client, &web, port, Protocol::Tcp)
                .clone();
            assert_eq!(cached, c.verdict(&client, &web, port, Protocol::Tcp));
        }
        assert!(cache.verdict(&c, &client, &web, 80, Protocol::Tcp).allowed);
        assert!(!cache.verdict(&c, &client, &web, 80, Protocol::Udp).allowed);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.len), (4, 3, 3));
    }

    #[test]
    fn a_new_generation_never_serves_old_verdicts() {
        let (old, new) = (cluster(1), cluster(2));
        let (client, web) = ends(&old);
        let mut cache = VerdictCache::new(100);
        assert_eq!(
            cache
                .verdict(&old, &client, &web, 80, Protocol::Tcp)
                .generation,
            1
        );
        assert_eq!(
            cache
                .verdict(&new, &client, &web, 80, Protocol::Tcp)
                .generation,
            2
        );
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.evictions, s.len), (0, 2, 1, 1));
    }

    #[test]
    fn a_full_cache_is_cleared_and_counts_evictions() {
        let c = cluster(1);
        let (client, web) = ends(&c);
        let mut cache = VerdictCache::new(2);
        for port in [1, 2, 3] {
            cache.verdict(&c, &client, &web, port, Protocol::Tcp);
        }
        let s = cache.stats();
        assert_eq!((s.misses, s.evictions, s.len), (3, 2, 1));
    }
}
