//! The plugin's allocator: free lists of small blocks in front of the system allocator.
//!
//! Every hook call copies the request into the plugin, one allocation per string (a request
//! with ten headers makes more than twenty), and frees it all when the hook returns. So a
//! plugin allocates and frees the same few small sizes on every call. The standard library's
//! allocator for `wasm32` (dlmalloc) spends a few hundred instructions on each of those;
//! popping or pushing a free list takes about ten, which makes a hook call with a full request
//! head about a sixth cheaper (17% fewer instructions, measured under callgrind,
//! `docs/performance.md`).
//!
//! Blocks of up to [`MAX_SMALL`] bytes and alignment up to [`ALIGN`] come from 32 lists of
//! 16-byte size classes, filled from the system allocator on demand. A freed small block goes
//! back on its list and is never returned to the system allocator, so a plugin's small-block
//! memory is its largest number of blocks of each class ever alive at once: for a plugin
//! that keeps no state, about one request's worth. Anything larger goes straight to the
//! system allocator.
//!
//! The SDK installs it as the global allocator of `wasm32` builds (components are
//! single-threaded) unless the default feature `small-alloc` is turned off, for a plugin that
//! brings its own.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::ptr;

/// The alignment of every small block: enough for any Rust type on `wasm32`.
pub const ALIGN: usize = 16;

/// The largest block served from the free lists.
pub const MAX_SMALL: usize = 512;

const CLASSES: usize = MAX_SMALL / ALIGN;

/// A free block: the first word holds the next free block of its class.
struct Free {
    next: *mut Free,
}

/// Free lists of small blocks over `A`. Not thread-safe: `Sync` only on single-threaded
/// `wasm32`, where it is the global allocator.
#[derive(Debug)]
pub struct SmallAlloc<A> {
    system: A,
    heads: UnsafeCell<[*mut Free; CLASSES]>,
}

// SAFETY: `wasm32` without the `atomics` feature has one thread, so the lists are never
// touched concurrently.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<A: Sync> Sync for SmallAlloc<A> {}

impl<A> SmallAlloc<A> {
    /// Empty lists over `system`.
    pub const fn new(system: A) -> Self {
        Self {
            system,
            heads: UnsafeCell::new([ptr::null_mut(); CLASSES]),
        }
    }
}

/// The size class of `layout`, if it is small.
fn class(layout: Layout) -> Option<usize> {
    (layout.size() <= MAX_SMALL && layout.align() <= ALIGN)
        .then(|| layout.size().max(1).div_ceil(ALIGN) - 1)
}

/// The layout of every block of class `class`.
fn block(class: usize) -> Layout {
    // SAFETY: the size is a non-zero multiple of the alignment, a power of two, and far from
    // overflowing.
    unsafe { Layout::from_size_align_unchecked((class + 1) * ALIGN, ALIGN) }
}

// SAFETY: small blocks are handed out once (popped before use) and only pushed back by
// `dealloc`, whose caller gives back a block this allocator returned for the same layout, and
// so of the same class; everything else is the system allocator's own contract.
unsafe impl<A: GlobalAlloc> GlobalAlloc for SmallAlloc<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class(layout) else {
            return unsafe { self.system.alloc(layout) };
        };
        let head = unsafe { &mut (*self.heads.get())[class] };
        if head.is_null() {
            return unsafe { self.system.alloc(block(class)) };
        }
        let free = *head;
        *head = unsafe { (*free).next };
        free.cast()
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if class(layout).is_none() {
            // Fresh memory from the system allocator may need no clearing.
            return unsafe { self.system.alloc_zeroed(layout) };
        }
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class(layout) else {
            return unsafe { self.system.dealloc(ptr, layout) };
        };
        let head = unsafe { &mut (*self.heads.get())[class] };
        let free = ptr.cast::<Free>();
        unsafe { free.write(Free { next: *head }) };
        *head = free;
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees that `new_size` with `layout.align()` is a valid layout.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(layout), class(new)) {
            (Some(old), Some(new)) if old == new => ptr,
            (None, None) => unsafe { self.system.realloc(ptr, layout, new_size) },
            _ => {
                let moved = unsafe { self.alloc(new) };
                if !moved.is_null() {
                    unsafe {
                        ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                        self.dealloc(ptr, layout);
                    }
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::alloc::System;
    use std::cell::Cell;

    use super::*;

    /// The system allocator, counting what reaches it.
    #[derive(Default)]
    struct Counting {
        allocs: Cell<usize>,
        deallocs: Cell<usize>,
    }

    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            self.allocs.set(self.allocs.get() + 1);
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            self.deallocs.set(self.deallocs.get() + 1);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_are_sixteen_bytes_wide() {
        assert_eq!(class(layout(1, 1)), Some(0));
        assert_eq!(class(layout(16, 8)), Some(0));
        assert_eq!(class(layout(17, 1)), Some(1));
        assert_eq!(class(layout(512, 16)), Some(31));
        assert_eq!(class(layout(513, 1)), None);
        assert_eq!(class(layout(8, 32)), None);
    }

    #[test]
    fn a_freed_small_block_is_reused_without_the_system_allocator() {
        let a = SmallAlloc::new(Counting::default());
        unsafe {
            let first = a.alloc(layout(24, 8));
            a.dealloc(first, layout(24, 8));
            // Same class (17-32 bytes), other size: the same block, from the list.
            let again = a.alloc(layout(30, 1));
            assert_eq!(again, first);
            assert_eq!(a.system.allocs.get(), 1);
            assert_eq!(a.system.deallocs.get(), 0);
            a.dealloc(again, layout(30, 1));
        }
    }

    #[test]
    fn lists_hand_out_blocks_last_freed_first_and_never_twice() {
        let a = SmallAlloc::new(Counting::default());
        let l = layout(40, 8);
        unsafe {
            let blocks: Vec<*mut u8> = (0..4).map(|_| a.alloc(l)).collect();
            for (i, b) in blocks.iter().enumerate() {
                b.write_bytes(u8::try_from(i).unwrap(), 40);
            }
            for b in &blocks {
                a.dealloc(*b, l);
            }
            let again: Vec<*mut u8> = (0..4).map(|_| a.alloc(l)).collect();
            assert_eq!(again, blocks.iter().rev().copied().collect::<Vec<_>>());
            assert_eq!(a.system.allocs.get(), 4);
            // A fifth block is new.
            let fifth = a.alloc(l);
            assert!(!again.contains(&fifth));
            assert_eq!(a.system.allocs.get(), 5);
        }
    }

    #[test]
    fn zeroed_blocks_are_zero_even_when_reused() {
        let a = SmallAlloc::new(Counting::default());
        unsafe {
            let dirty = a.alloc(layout(48, 8));
            dirty.write_bytes(0xAB, 48);
            a.dealloc(dirty, layout(48, 8));
            let again = a.alloc_zeroed(layout(40, 8));
            assert_eq!(again, dirty, "the freed block is reused");
            assert!(
                std::slice::from_raw_parts(again, 40)
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(again, layout(40, 8));
            let large = a.alloc_zeroed(layout(4096, 8));
            assert!(
                std::slice::from_raw_parts(large, 4096)
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(large, layout(4096, 8));
        }
    }

    #[test]
    fn large_and_over_aligned_blocks_go_to_the_system_allocator() {
        let a = SmallAlloc::new(Counting::default());
        unsafe {
            for l in [layout(4096, 8), layout(16, 64)] {
                let p = a.alloc(l);
                assert_eq!(p as usize % l.align(), 0);
                a.dealloc(p, l);
            }
        }
        assert_eq!(a.system.allocs.get(), 2);
        assert_eq!(a.system.deallocs.get(), 2);
    }

    #[test]
    fn realloc_keeps_the_bytes_across_classes_and_sizes() {
        let a = SmallAlloc::new(Counting::default());
        unsafe {
            let p = a.alloc(layout(10, 1));
            p.copy_from_nonoverlapping(b"0123456789".as_ptr(), 10);
            // Within the class: the same block.
            assert_eq!(a.realloc(p, layout(10, 1), 16), p);
            // Small to small, another class; then small to large; then large to larger.
            let q = a.realloc(p, layout(16, 1), 100);
            let r = a.realloc(q, layout(100, 1), 2000);
            let s = a.realloc(r, layout(2000, 1), 5000);
            assert_eq!(std::slice::from_raw_parts(s, 10), b"0123456789");
            // Large back to small.
            let t = a.realloc(s, layout(5000, 1), 12);
            assert_eq!(std::slice::from_raw_parts(t, 10), b"0123456789");
            a.dealloc(t, layout(12, 1));
        }
    }
}
