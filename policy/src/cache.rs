//! A verdict cache for the collector's hot path.
//!
//! Keyed by both endpoints, port, protocol and the cluster generation, so a
//! new snapshot never serves stale verdicts. Bounded: when full it is
//! cleared in one go (cheap, predictable; evictions are counted).

use rustc_hash::FxHashMap;

use crate::cluster::{Cluster, Endpoint, Verdict};
use crate::model::Protocol;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct Key {
    src: Endpoint,
    dst: Endpoint,
    port: u16,
    protocol: Protocol,
    generation: u64,
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
}

impl VerdictCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: FxHashMap::default(),
            capacity: capacity.max(1),
            generation: 0,
            stats: CacheStats::default(),
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
        let key = Key {
            src: *src,
            dst: *dst,
            port,
            protocol,
            generation,
        };
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

    pub fn stats(&self) -> CacheStats {
        CacheStats {
            len: self.map.len(),
            ..self.stats
        }
    }
}
