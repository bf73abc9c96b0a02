//! A counting allocator for `scripts/bench` only (`--features alloc-count`): mimalloc, with every
//! allocation counted, exported as `bridgehead_process_allocations_total`, so the bench can
//! report allocations per request. The count is one relaxed atomic add per allocation, shared
//! by all threads: a cost no release build pays.
//!
//! Unsafe because `GlobalAlloc` is an unsafe trait; each method only forwards to mimalloc with
//! the caller's own arguments, under the caller's own contract.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

#[global_allocator]
static GLOBAL: Counting = Counting;

// SAFETY: every method forwards to mimalloc with the arguments it was given; the counter has no
// bearing on memory safety.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded under the caller's contract.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded under the caller's contract.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded under the caller's contract.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Relaxed);
        // SAFETY: forwarded under the caller's contract.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Makes the gateway's metrics export the count.
pub fn install() {
    bridgehead_http::metrics::count_allocations_with(|| ALLOCATIONS.load(Relaxed));
}
