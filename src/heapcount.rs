//! A counting allocator for the unit tests: heap bytes live on the calling
//! thread, both as asked for and as glibc's malloc lays them out (a chunk
//! is the request plus an 8-byte header, rounded up to 16, at least 32).
//! It lets a test say what an idle connection costs, byte by byte, without
//! sockets, while other tests run on other threads.

#![allow(unsafe_code)] // test-only: a GlobalAlloc is unsafe by definition

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

pub struct Counting;

thread_local! {
    static ASKED: Cell<isize> = const { Cell::new(0) };
    static CHUNKS: Cell<isize> = const { Cell::new(0) };
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

/// What glibc's malloc uses for a request of `n` bytes.
pub fn chunk(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

fn count(n: usize, sign: isize) {
    let _ = ASKED.try_with(|c| c.set(c.get() + sign * n as isize));
    let _ = CHUNKS.try_with(|c| c.set(c.get() + sign * chunk(n) as isize));
    let _ = BLOCKS.try_with(|c| c.set(c.get() + sign));
}

// SAFETY: every call is passed to `System` unchanged; the counters are
// thread-local cells, touched without allocating.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size(), 1);
        // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        count(l.size(), -1);
        // SAFETY: `p` came from `System` with this layout.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size(), 1);
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(l.size(), -1);
        count(new, 1);
        // SAFETY: `p` came from `System` with layout `l`.
        unsafe { System.realloc(p, l, new) }
    }
}

/// Live on this thread: (bytes asked, bytes in malloc chunks, blocks).
pub fn live() -> (isize, isize, isize) {
    (
        ASKED.with(Cell::get),
        CHUNKS.with(Cell::get),
        BLOCKS.with(Cell::get),
    )
}
