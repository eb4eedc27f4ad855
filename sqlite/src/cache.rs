//! A bounded least-recently-used cache of committed database pages (file page index → page
//! bytes), so a page this process read or committed is not fetched from storage again.
//!
//! It holds only what is durable: a page enters after a read at VDL or after the commit that
//! wrote it became durable, and pages a commit zeroed or cut off leave it. It stays right because
//! this process is the volume's only writer; once another writer takes the volume over, the
//! database latches an error and nothing is read from the cache any more.

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;

/// Pages kept (4 KiB each: 32 MiB per open volume).
pub const CACHE_PAGES_MAX: usize = 8192;

/// The cache of one open volume.
#[derive(Debug)]
pub struct PageCache {
    pages_max: usize,
    /// Page → its bytes and the tick it was last used.
    pages: HashMap<u64, (Bytes, u64)>,
    /// Tick → page: the least recently used page first.
    by_use: BTreeMap<u64, u64>,
    tick: u64,
}

impl PageCache {
    pub fn new(pages_max: usize) -> PageCache {
        assert!(pages_max > 0, "a cache holds at least one page");
        PageCache { pages_max, pages: HashMap::new(), by_use: BTreeMap::new(), tick: 0 }
    }

    /// The page's bytes, and marks it recently used.
    pub fn get(&mut self, page: u64) -> Option<Bytes> {
        let tick = self.next_tick();
        let (bytes, used) = self.pages.get_mut(&page)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, page);
        Some(bytes.clone())
    }

    /// True if the page is cached (without marking it used).
    pub fn contains(&self, page: u64) -> bool {
        self.pages.contains_key(&page)
    }

    /// Keeps `bytes` as the page's content, evicting the least recently used page when full.
    pub fn insert(&mut self, page: u64, bytes: Bytes) {
        let tick = self.next_tick();
        if let Some((_, used)) = self.pages.insert(page, (bytes, tick)) {
            self.by_use.remove(&used);
        }
        self.by_use.insert(tick, page);
        while self.pages.len() > self.pages_max {
            let (_, oldest) = self.by_use.pop_first().expect("every cached page has a tick");
            self.pages.remove(&oldest);
        }
    }

    /// Forgets every page at or above `first`.
    pub fn remove_from(&mut self, first: u64) {
        let gone: Vec<u64> = self.pages.keys().copied().filter(|p| *p >= first).collect();
        for page in gone {
            if let Some((_, used)) = self.pages.remove(&page) {
                self.by_use.remove(&used);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(b: u8) -> Bytes {
        Bytes::from(vec![b; 8])
    }

    #[test]
    fn the_least_recently_used_page_leaves_first() {
        let mut cache = PageCache::new(2);
        cache.insert(1, page(1));
        cache.insert(2, page(2));
        assert_eq!(cache.get(1), Some(page(1)));
        cache.insert(3, page(3));
        assert_eq!(cache.get(2), None, "page 2 was the least recently used");
        assert_eq!(cache.get(1), Some(page(1)));
        assert_eq!(cache.get(3), Some(page(3)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_page_written_again_is_replaced_not_duplicated() {
        let mut cache = PageCache::new(2);
        cache.insert(1, page(1));
        cache.insert(1, page(9));
        cache.insert(2, page(2));
        assert_eq!(cache.get(1), Some(page(9)));
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn pages_cut_off_are_forgotten() {
        let mut cache = PageCache::new(8);
        for p in 0..6 {
            cache.insert(p, page(p as u8));
        }
        cache.remove_from(3);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(4), None);
        assert_eq!(cache.get(2), Some(page(2)));
        cache.insert(7, page(7));
        assert_eq!(cache.len(), 4);
    }
}
