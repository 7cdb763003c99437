//! String interning for the values that repeat across tagents (tenants,
//! versions, OS names, users). A tagent keeps a 4-byte [`Sym`] instead of a
//! string; at a million tagents that is most of the index's memory saved.

use std::sync::Arc;

use hashbrown::HashMap;
use parking_lot::RwLock;

/// An interned string. `Sym(0)` is always the empty string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Sym(pub u32);

/// Append-only: a symbol, once made, stays valid for the life of the process,
/// so symbols can be made while deciding a registration that may still fail.
#[derive(Debug)]
pub struct Interner {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_str: HashMap<Arc<str>, Sym>,
    strs: Vec<Arc<str>>,
}

impl Default for Interner {
    fn default() -> Self {
        let interner = Interner {
            inner: RwLock::new(Inner::default()),
        };
        interner.intern("");
        interner
    }
}

impl Interner {
    pub fn intern(&self, s: &str) -> Sym {
        if let Some(sym) = self.get(s) {
            return sym;
        }
        let mut inner = self.inner.write();
        if let Some(sym) = inner.by_str.get(s) {
            return *sym;
        }
        let sym = Sym(inner.strs.len() as u32);
        let s: Arc<str> = Arc::from(s);
        inner.strs.push(s.clone());
        inner.by_str.insert(s, sym);
        sym
    }

    /// The symbol of `s` if it was ever interned; never allocates.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.inner.read().by_str.get(s).copied()
    }

    pub fn resolve(&self, sym: Sym) -> Arc<str> {
        self.inner
            .read()
            .strs
            .get(sym.0 as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    pub fn len(&self) -> usize {
        self.inner.read().strs.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}
