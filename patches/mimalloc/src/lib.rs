// Copyright 2019 Octavian Oncescu

#![no_std]

//! A drop-in global allocator wrapper around the [mimalloc](https://github.com/microsoft/mimalloc) allocator.
//! Mimalloc is a general purpose, performance oriented allocator built by Microsoft.
//!
//! ## Usage
//! ```rust,ignore
//! use mimalloc::MiMalloc;
//!
//! #[global_allocator]
//! static GLOBAL: MiMalloc = MiMalloc;
//! ```
//!
//! ## Usage with secure mode
//! Using secure mode adds guard pages,
//! randomized allocation, encrypted free lists, etc. The performance penalty is usually
//! around 10% according to [mimalloc's](https://github.com/microsoft/mimalloc)
//! own benchmarks.
//!
//! To enable secure mode, put in `Cargo.toml`:
//! ```toml
//! [dependencies]
//! mimalloc = { version = "*", features = ["secure"] }
//! ```

extern crate libmimalloc_sys as ffi;

#[cfg(feature = "extended")]
mod extended;

use core::alloc::{GlobalAlloc, Layout};
use core::ffi::c_void;
use ffi::*;

/// Drop-in mimalloc global allocator.
///
/// ## Usage
/// ```rust,ignore
/// use mimalloc::MiMalloc;
///
/// #[global_allocator]
/// static GLOBAL: MiMalloc = MiMalloc;
/// ```
pub struct MiMalloc;

/// The alignment of every block `mi_malloc` returns that is at least this large, and of every
/// smaller one to its size rounded up to a power of two (`MI_MAX_ALIGN_SIZE`: as C's `malloc`,
/// `max_align_t`).
const MIN_ALIGN: usize = 16;

/// Whether a plain block of `size` bytes is aligned to `align` (a power of two): the test Rust's
/// own `System` allocator makes before it calls `malloc` rather than `posix_memalign`.
#[inline]
fn plain_is_aligned(size: usize, align: usize) -> bool {
    align <= MIN_ALIGN && align <= size
}

// The aligned entry points serve a block from the fast path only up to 1 KiB and from a page
// that happens to have one free; a larger one goes through a second, generic path that checks
// the alignment again before making the plain allocation. Alignments every block has anyway go
// to the plain entry points directly. `mi_free` frees a block of either kind.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if plain_is_aligned(layout.size(), layout.align()) {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if plain_is_aligned(layout.size(), layout.align()) {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if plain_is_aligned(new_size, layout.align()) {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_frees_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_zero_allocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc_zeroed(layout);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_memory() {
        unsafe {
            let layout = Layout::from_size_align(8, 8).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 16);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn it_frees_reallocated_big_memory() {
        unsafe {
            let layout = Layout::from_size_align(1 << 20, 32).unwrap();
            let alloc = MiMalloc;

            let ptr = alloc.alloc(layout);
            let ptr = alloc.realloc(ptr, layout, 2 << 20);
            alloc.dealloc(ptr, layout);
        }
    }

    #[test]
    fn every_block_has_its_alignment_and_keeps_its_bytes() {
        let alloc = MiMalloc;
        let sizes = [
            1, 7, 8, 12, 16, 24, 40, 100, 1000, 1025, 4096, 20_000, 300_000,
        ];
        for &size in sizes.iter() {
            for &align in [1, 2, 4, 8, 16, 32, 64, 128, 4096].iter() {
                let layout = Layout::from_size_align(size, align).unwrap();
                unsafe {
                    let p = alloc.alloc(layout);
                    assert!(
                        !p.is_null() && p as usize % align == 0,
                        "alloc {} {}",
                        size,
                        align
                    );
                    p.write_bytes(0xa5, size);
                    let grown = alloc.realloc(p, layout, size * 3);
                    assert!(
                        !grown.is_null() && grown as usize % align == 0,
                        "realloc {} {}",
                        size,
                        align
                    );
                    assert!(core::slice::from_raw_parts(grown, size)
                        .iter()
                        .all(|b| *b == 0xa5));
                    alloc.dealloc(grown, Layout::from_size_align(size * 3, align).unwrap());
                    let z = alloc.alloc_zeroed(layout);
                    assert!(
                        !z.is_null() && z as usize % align == 0,
                        "alloc_zeroed {} {}",
                        size,
                        align
                    );
                    assert!(core::slice::from_raw_parts(z, size).iter().all(|b| *b == 0));
                    alloc.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn only_alignments_every_block_has_use_the_plain_entry_points() {
        assert!(plain_is_aligned(16, 16) && plain_is_aligned(24, 8) && plain_is_aligned(1, 1));
        assert!(plain_is_aligned(4096, 16));
        assert!(
            !plain_is_aligned(8, 16),
            "a block under 16 bytes may be only 8-aligned"
        );
        assert!(!plain_is_aligned(4096, 32) && !plain_is_aligned(256, 128));
    }
}
