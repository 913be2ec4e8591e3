//! Which inode a name in a volume directory names, remembered so that a
//! lookup costs no round trip when it was made before: every path the
//! program opens walks its directories again (`base`, `base/5` for each
//! relation file of PostgreSQL), and each walk is a VM exit.
//!
//! Correct only because the guest is the volume's one writer (issue 13):
//! the libOS changes names only through unlink, rmdir, rename and create,
//! which keep this up to date. Negative answers are never kept.
//!
//! Keys are (the directory's host inode, name). Directories are held
//! (they are few: PostgreSQL's data directory has about thirty plus one
//! per database); files only while something else holds them.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::sync::{Arc, Weak};

enum Held<V> {
    Dir(Arc<V>),
    File(Weak<V>),
}

pub struct Names<V> {
    map: BTreeMap<(u64, Box<[u8]>), Held<V>>,
}

impl<V> Names<V> {
    pub const fn new() -> Self {
        Names {
            map: BTreeMap::new(),
        }
    }

    /// What `name` in directory `dir` names, if known and alive.
    pub fn get(&self, dir: u64, name: &[u8]) -> Option<Arc<V>> {
        match self.map.get(&(dir, name.into()))? {
            Held::Dir(d) => Some(d.clone()),
            Held::File(f) => f.upgrade(),
        }
    }

    /// Remember that `name` in `dir` is `v` (held if it is a directory).
    pub fn insert(&mut self, dir: u64, name: &[u8], v: &Arc<V>, is_dir: bool) {
        let held = if is_dir {
            Held::Dir(v.clone())
        } else {
            Held::File(Arc::downgrade(v))
        };
        self.map.insert((dir, name.into()), held);
        // Dead file entries are dropped now and then, so the map stays as
        // large as what is alive.
        if self.map.len().is_multiple_of(256) {
            self.map
                .retain(|_, h| !matches!(h, Held::File(f) if f.strong_count() == 0));
        }
    }

    /// The name is gone (unlink, rmdir, the old or replaced name of a rename).
    /// What it named is handed back for the caller to drop.
    pub fn remove(&mut self, dir: u64, name: &[u8]) -> Option<Arc<V>> {
        match self.map.remove(&(dir, name.into()))? {
            Held::Dir(d) => Some(d),
            Held::File(f) => f.upgrade(),
        }
    }

    /// Directory `dir` is gone: forget every name in it (its host inode
    /// number may come back for another directory).
    pub fn forget_dir(&mut self, dir: u64) -> alloc::vec::Vec<Arc<V>> {
        let keys: alloc::vec::Vec<_> = self
            .map
            .range((dir, Box::<[u8]>::from(&[][..]))..)
            .take_while(|((d, _), _)| *d == dir)
            .map(|(k, _)| k.clone())
            .collect();
        keys.into_iter()
            .filter_map(|k| match self.map.remove(&k)? {
                Held::Dir(d) => Some(d),
                Held::File(f) => f.upgrade(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_held_files_only_while_alive() {
        let mut n = Names::new();
        let dir = Arc::new(1u32);
        let file = Arc::new(2u32);
        n.insert(10, b"base", &dir, true);
        n.insert(10, b"PG_VERSION", &file, false);
        drop(dir);
        assert_eq!(n.get(10, b"base").as_deref(), Some(&1));
        assert_eq!(n.get(10, b"PG_VERSION").as_deref(), Some(&2));
        drop(file);
        assert_eq!(n.get(10, b"PG_VERSION"), None);
        assert_eq!(n.get(11, b"base"), None);
    }

    #[test]
    fn removal_and_a_removed_directory_forget_names() {
        let mut n = Names::new();
        let a = Arc::new(1u32);
        let b = Arc::new(2u32);
        n.insert(10, b"a", &a, true);
        n.insert(20, b"x", &b, true);
        n.insert(20, b"y", &a, true);
        n.insert(21, b"z", &a, true);
        assert_eq!(n.remove(10, b"a").as_deref(), Some(&1));
        assert_eq!(n.get(10, b"a"), None);
        let gone = n.forget_dir(20);
        assert_eq!(gone.len(), 2);
        assert_eq!(n.get(20, b"x"), None);
        assert_eq!(n.get(20, b"y"), None);
        assert_eq!(n.get(21, b"z").as_deref(), Some(&1));
    }
}
