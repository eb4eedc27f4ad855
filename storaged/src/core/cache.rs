//! Byte-bounded LRU caches. [`PageCache`] keeps built page versions, keyed by the exact version
//! (PG, page, LSN of the newest record in it): a version never changes once built, so an entry
//! is never stale, and one no read asks for any more simply ages out.

use std::collections::BTreeMap;

use bytes::Bytes;
use protocol::{Lsn, PageId, PgRef};

/// A least-recently-used map holding at most `bytes_max` bytes of values (as the caller
/// weighs them).
#[derive(Debug)]
pub struct Lru<K, V> {
    bytes_max: usize,
    bytes: usize,
    tick: u64,
    entries: BTreeMap<K, (V, usize, u64)>,
    by_age: BTreeMap<u64, K>,
    hits: u64,
    misses: u64,
}

impl<K: Ord + Copy, V: Clone> Lru<K, V> {
    pub fn new(bytes_max: usize) -> Lru<K, V> {
        Lru {
            bytes_max,
            bytes: 0,
            tick: 0,
            entries: BTreeMap::new(),
            by_age: BTreeMap::new(),
            hits: 0,
            misses: 0,
        }
    }

    pub fn get(&mut self, key: &K) -> Option<V> {
        let found = self.touch(key);
        if found.is_some() {
            self.hits += 1;
        } else {
            self.misses += 1;
        }
        found
    }

    /// The greatest key in `range` and its value, marked as used.
    pub fn last_in(&mut self, range: std::ops::Range<K>) -> Option<(K, V)> {
        let key = *self.entries.range(range).next_back()?.0;
        self.touch(&key).map(|value| (key, value))
    }

    /// Keeps `value` (weighing `bytes`), evicting the least recently used beyond the bound.
    pub fn insert(&mut self, key: K, value: V, bytes: usize) {
        if bytes > self.bytes_max || self.entries.contains_key(&key) {
            return;
        }
        self.tick += 1;
        self.bytes += bytes;
        self.entries.insert(key, (value, bytes, self.tick));
        self.by_age.insert(self.tick, key);
        while self.bytes > self.bytes_max {
            let (_, key) = self.by_age.pop_first().expect("bytes held means entries held");
            self.remove(&key);
        }
    }

    /// Drops every entry whose key matches.
    pub fn remove_where(&mut self, doomed: impl Fn(&K) -> bool) {
        let keys: Vec<K> = self.entries.keys().filter(|k| doomed(k)).copied().collect();
        keys.iter().for_each(|k| self.remove(k));
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }
    /// (hits, misses) since start.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }

    fn remove(&mut self, key: &K) {
        if let Some((_, bytes, tick)) = self.entries.remove(key) {
            self.by_age.remove(&tick);
            self.bytes -= bytes;
        }
    }

    fn touch(&mut self, key: &K) -> Option<V> {
        let (value, _, tick) = self.entries.get_mut(key)?;
        self.by_age.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.by_age.insert(self.tick, *key);
        Some(value.clone())
    }
}

/// Built page versions; see the module docs.
#[derive(Debug)]
pub struct PageCache(Lru<(PgRef, PageId, Lsn), Bytes>);

impl PageCache {
    pub fn new(bytes_max: usize) -> PageCache {
        PageCache(Lru::new(bytes_max))
    }

    /// The version of `page` whose newest record is `version`, if cached.
    pub fn get(&mut self, pg: PgRef, page: PageId, version: Lsn) -> Option<Bytes> {
        self.0.get(&(pg, page, version))
    }

    /// The newest cached version of `page` in `[from, below)`: a base to build on.
    pub fn newest_in(&mut self, pg: PgRef, page: PageId, from: Lsn, below: Lsn) -> Option<(Lsn, Bytes)> {
        self.0.last_in((pg, page, from)..(pg, page, below)).map(|(key, bytes)| (key.2, bytes))
    }

    pub fn insert(&mut self, pg: PgRef, page: PageId, version: Lsn, bytes: Bytes) {
        let len = bytes.len();
        self.0.insert((pg, page, version), bytes, len);
    }

    /// Drops every cached version of `pg` above `after` (a truncation removed the records).
    pub fn drop_above(&mut self, pg: PgRef, after: Lsn) {
        self.0.remove_where(|key| key.0 == pg && key.2 > after);
    }

    /// Drops every cached version of `volume` (it was dropped).
    pub fn drop_volume(&mut self, volume: protocol::VolumeId) {
        self.0.remove_where(|key| key.0.volume_id == volume);
    }

    pub fn bytes(&self) -> usize {
        self.0.bytes()
    }
    pub fn hits_and_misses(&self) -> (u64, u64) {
        self.0.hits_and_misses()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{PgId, VolumeId};

    const PG: PgRef = PgRef { volume_id: VolumeId(1), pg_id: PgId(0) };

    #[test]
    fn the_least_recently_used_version_goes_first_and_the_bound_holds() {
        let mut cache = PageCache::new(1024);
        let page = |b: u8| Bytes::from(vec![b; 512]);
        cache.insert(PG, PageId(1), Lsn(10), page(1));
        cache.insert(PG, PageId(2), Lsn(10), page(2));
        assert!(cache.get(PG, PageId(1), Lsn(10)).is_some());
        cache.insert(PG, PageId(3), Lsn(10), page(3));
        assert!(cache.get(PG, PageId(2), Lsn(10)).is_none(), "page 2 was least recently used");
        assert!(cache.get(PG, PageId(1), Lsn(10)).is_some());
        assert_eq!(cache.bytes(), 1024);
        assert_eq!(cache.newest_in(PG, PageId(3), Lsn(0), Lsn(11)).map(|(l, _)| l), Some(Lsn(10)));
        assert!(cache.newest_in(PG, PageId(3), Lsn(0), Lsn(10)).is_none(), "the bound is exclusive");
        cache.drop_above(PG, Lsn(5));
        assert_eq!(cache.bytes(), 0);
    }
}
