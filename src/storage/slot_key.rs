//! Storage keys held inline in hash-map slots (the record cache's and
//! the staged generations').

/// Storage keys up to this long are held in the map's own slot.
const INLINE_KEY_BYTES: usize = 30;

/// A storage key as a hash map holds it: in the slot itself when short,
/// as most are (2 bytes of partition and a client key), so that a lookup
/// compares it in the cache line it already loaded for the slot instead
/// of following a pointer to another one, and holding it allocates
/// nothing. A lookup is a few cache misses; this takes one of them away.
#[derive(Clone, Debug)]
pub(super) enum SlotKey {
    Inline {
        len: u8,
        bytes: [u8; INLINE_KEY_BYTES],
    },
    Heap(Box<[u8]>),
}

impl SlotKey {
    pub(super) fn new(key: &[u8]) -> Self {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY_BYTES => {
                let mut bytes = [0; INLINE_KEY_BYTES];
                bytes[..key.len()].copy_from_slice(key);
                Self::Inline { len, bytes }
            }
            _ => Self::Heap(key.into()),
        }
    }

    pub(super) fn as_slice(&self) -> &[u8] {
        match self {
            Self::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Self::Heap(key) => key,
        }
    }
}

// A slot of 64 bytes: the key's 32 and the value's handle.
const _: () = assert!(std::mem::size_of::<SlotKey>() == 32);

// Equality and hash are the bytes', so the map can be asked with a slice.
impl PartialEq for SlotKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for SlotKey {}

impl std::hash::Hash for SlotKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state);
    }
}

impl std::borrow::Borrow<[u8]> for SlotKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}
