//! The binary's global allocator: mimalloc, except that `midm batch --low-memory` allocates from
//! glibc's malloc ([`switch_to_system`]).
//!
//! Why: candle allocates every op's output afresh, so a batch allocates and frees the same few
//! hundred large blocks (activations of a quarter MiB to tens of MiB) chunk after chunk. mimalloc
//! keeps a freed block for its purge delay and meanwhile places new blocks in untouched memory
//! as often as in just-freed memory, so a chunk's resident peak depended on the two workers'
//! timing (chunk tops 411-455 MiB) and a 1000-pair batch, the highest of 125 chunks, peaked 15 %
//! above a 10-pair one; purging at once cost 40 % of the speed. glibc's malloc, from one arena,
//! puts a request into the best-fitting freed chunk (coalesced with its free neighbours) before
//! it grows the heap, so a chunk reuses what the previous one freed: chunk tops of 325-351 MiB,
//! but 3-8 % slower than mimalloc, which is why it is asked for, not the default
//! (docs/performance.md, "Batches"). Single runs and the editor never switch: at the official
//! size their blocks reach 64 MiB, which glibc maps and unmaps block by block (the page faults
//! `main.rs` describes).
//!
//! Blocks made before the switch stay mimalloc's: a free asks mimalloc's page map
//! (`mi_is_in_heap_region`, two loads) which allocator owns the block.

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout, System};
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

static SYSTEM: AtomicBool = AtomicBool::new(false);

/// The global allocator (`#[global_allocator]` in `main.rs`).
pub struct Allocator;

/// From now on every request comes from glibc's malloc, set to one arena (per-thread arenas
/// would keep one worker's freed memory from the other), heap blocks up to its limit of 32 MiB
/// (larger ones are mapped per block) and no trimming of the heap's top (trimmed, it was faulted
/// in again: 15-20 % slower at the default sampler settings). Call before other threads start:
/// `mallopt` is not meant to race with allocations. Returns false (nothing changed) where the C
/// library is not glibc.
pub fn switch_to_system() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: plain integer settings of glibc's malloc, made before other threads run.
        let ok = unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1) == 1
                && libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
        };
        if ok {
            SYSTEM.store(true, Ordering::Release);
        }
        ok
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// Whether requests go to glibc now.
pub fn on_system() -> bool {
    SYSTEM.load(Ordering::Acquire)
}

/// Whether a block came from the system's malloc rather than mimalloc.
///
/// # Safety
/// `ptr` is a live block of this allocator.
unsafe fn owned_by_system(ptr: *mut u8) -> bool {
    on_system() && !mi::mi_is_in_heap_region(ptr as *const c_void)
}

// SAFETY: every path returns a block of the layout's size and alignment or null, from mimalloc
// or the system's malloc, and every block goes back to the allocator that made it
// (`owned_by_system`; before the switch there is only mimalloc).
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if on_system() {
            return System.alloc(layout);
        }
        mi::mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if on_system() {
            return System.alloc_zeroed(layout);
        }
        mi::mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if owned_by_system(ptr) {
            System.dealloc(ptr, layout);
        } else {
            mi::mi_free(ptr as *mut c_void);
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !on_system() {
            return mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8;
        }
        if owned_by_system(ptr) {
            return System.realloc(ptr, layout, new_size);
        }
        // A mimalloc block from before the switch: its bytes move to glibc.
        let new = System.alloc(Layout::from_size_align_unchecked(new_size, layout.align()));
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            mi::mi_free(ptr as *mut c_void);
        }
        new
    }
}

// The switch exists only on glibc (elsewhere `switch_to_system` refuses), so the tests too.
#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    // These call the allocator directly (the test binary's global allocator is the system's),
    // with the switch on; blocks made by mimalloc directly stand for those made before it.

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 4).unwrap()
    }

    fn fill(p: *mut u8, size: usize, seed: usize) {
        for i in 0..size {
            // SAFETY: p holds size bytes.
            unsafe { *p.add(i) = ((i * 7 + seed) % 251) as u8 };
        }
    }

    fn holds(p: *mut u8, size: usize, seed: usize) -> bool {
        // SAFETY: p holds size bytes.
        (0..size).all(|i| unsafe { *p.add(i) } == ((i * 7 + seed) % 251) as u8)
    }

    /// The allocator with the switch made.
    fn switched() -> Allocator {
        assert!(switch_to_system());
        Allocator
    }

    /// A block as mimalloc made it before the switch, filled from `seed`.
    fn block_from_before(size: usize, seed: usize) -> *mut u8 {
        // SAFETY: a plain mimalloc allocation; the caller frees it through the allocator.
        let p = unsafe { mi::mi_malloc_aligned(size, 4) } as *mut u8;
        fill(p, size, seed);
        p
    }

    #[test]
    fn after_the_switch_blocks_come_from_glibc_and_go_back_where_they_came_from() {
        let a = switched();
        unsafe {
            // Made before the switch (mimalloc), freed after it: mimalloc frees it.
            let before = block_from_before(3 << 20, 0);
            assert!(!owned_by_system(before));
            a.dealloc(before, layout(3 << 20));
            for size in [16, 4096, 1 << 20, 40 << 20] {
                let p = a.alloc(layout(size));
                assert!(owned_by_system(p), "{size} bytes from glibc");
                fill(p, size.min(1 << 16), size);
                assert!(holds(p, size.min(1 << 16), size));
                a.dealloc(p, layout(size));
            }
            let z = a.alloc_zeroed(layout(5 << 20));
            assert!(std::slice::from_raw_parts(z, 5 << 20)
                .iter()
                .all(|&b| b == 0));
            a.dealloc(z, layout(5 << 20));
            let wide = Layout::from_size_align(1 << 20, 4096).unwrap();
            let w = a.alloc(wide);
            assert_eq!(w as usize % 4096, 0);
            a.dealloc(w, wide);
        }
    }

    #[test]
    fn realloc_moves_a_block_from_before_the_switch_with_its_bytes() {
        let a = switched();
        unsafe {
            let m = block_from_before(1 << 20, 9);
            let g = a.realloc(m, layout(1 << 20), 3 << 20);
            assert!(owned_by_system(g));
            assert!(holds(g, 1 << 20, 9));
            let s = a.realloc(g, layout(3 << 20), 500);
            assert!(holds(s, 500, 9));
            a.dealloc(s, layout(500));
        }
    }

    #[test]
    fn threads_freeing_each_others_blocks_keep_their_bytes() {
        switched();
        let sizes = [24usize, 4096, 300_000, 9_700_000, 40 << 20];
        // Blocks made on one thread and freed on another, as a batch's outputs are.
        let (tx, rx) = std::sync::mpsc::channel::<(usize, usize, usize)>();
        let maker = std::thread::spawn(move || {
            let a = Allocator;
            for round in 0..150usize {
                let size = sizes[round % sizes.len()];
                // SAFETY: the block is handed over whole, once.
                unsafe {
                    let p = a.alloc(layout(size));
                    fill(p, size.min(1 << 16), round);
                    tx.send((p as usize, size, round)).unwrap();
                }
            }
        });
        let a = Allocator;
        for (p, size, seed) in rx {
            let p = p as *mut u8;
            assert!(holds(p, size.min(1 << 16), seed), "bytes changed");
            // SAFETY: freed once, with the layout it was made with.
            unsafe { a.dealloc(p, layout(size)) };
        }
        maker.join().unwrap();
    }
}
