//! The binary's global allocator: mimalloc, with one extra: a thread may move its allocations
//! into an arena of its own ([`use_own_arena`]), and hand back all its freed memory at a moment
//! it chooses ([`release_freed_memory`]).
//!
//! Why: a batch runs its sub-batches on two worker threads. Sharing mimalloc's arenas, each took
//! the pages the other had just freed or not, by timing, so the resident peak of a chunk varied
//! by ~60 MiB and a 1000-pair batch (the highest of 125 chunks) peaked 15 % above a 10-pair one.
//! With an arena per worker and a release at each chunk's start, every chunk starts from the
//! same state and allocates the same way, so every chunk peaks alike (docs/performance.md,
//! "Batches"). mimalloc's own `MiMalloc` always takes the thread's default heap; this routes a
//! thread to a first-class heap instead (about 20 lines; mimalloc v3 has no per-thread default).

use libmimalloc_sys as mi;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};

/// The global allocator (`#[global_allocator]` in `main.rs`): mimalloc, through the thread's own
/// heap where it has one.
pub struct Allocator;

thread_local! {
    /// The calling thread's own heap, or null for mimalloc's default. Const-initialised and
    /// without a destructor, so reading it never allocates (safe inside the allocator).
    static OWN_HEAP: Cell<*mut mi::mi_heap_t> = const { Cell::new(std::ptr::null_mut()) };
}

fn own_heap() -> *mut mi::mi_heap_t {
    OWN_HEAP.try_with(Cell::get).unwrap_or(std::ptr::null_mut())
}

// SAFETY: every path returns mimalloc memory of the layout's size and alignment or null, and
// `mi_free` frees memory of any mimalloc heap from any thread. An own heap that cannot serve a
// request (its arena full, or an object too big for an arena) falls back to the default heap.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let heap = own_heap();
        if !heap.is_null() {
            let p = mi::mi_heap_malloc_aligned(heap, size, align);
            if !p.is_null() {
                return p as *mut u8;
            }
        }
        mi::mi_malloc_aligned(size, align) as *mut u8
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let (size, align) = (layout.size(), layout.align());
        let heap = own_heap();
        if !heap.is_null() {
            let p = mi::mi_heap_zalloc_aligned(heap, size, align);
            if !p.is_null() {
                return p as *mut u8;
            }
        }
        mi::mi_zalloc_aligned(size, align) as *mut u8
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi::mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let heap = own_heap();
        if !heap.is_null() {
            let p = mi::mi_heap_realloc_aligned(heap, ptr as *mut c_void, new_size, layout.align());
            if !p.is_null() {
                return p as *mut u8;
            }
        }
        mi::mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
    }
}

/// Address space an own arena reserves: committed only as it is used, so the size costs no
/// memory; enough for an official-size translation (~2 GB), and anything beyond it goes to the
/// default heap. (16 GiB, mimalloc v3's largest arena, is refused with ENOMEM.)
const OWN_ARENA_BYTES: usize = 8 << 30;

/// Whether this process allocates through mimalloc ([`Allocator`] or mimalloc's own); the
/// library's tests, for one, run on the system allocator, where heaps and arenas mean nothing.
fn mimalloc_is_global() -> bool {
    let probe = Box::new(0u64);
    // SAFETY: only compares the address against mimalloc's reserved regions.
    unsafe { mi::mi_is_in_heap_region(&*probe as *const u64 as *const c_void) }
}

static OWN_ARENAS_ALLOWED: AtomicBool = AtomicBool::new(false);

/// Lets [`use_own_arena`] act, for the rest of the process. `midm batch` and `midm bench
/// --batch` do; the editor does not: it never hands memory back (see `main.rs`), and memory
/// kept in the sweep workers' own arenas could not serve its other threads.
pub fn allow_own_arenas() {
    OWN_ARENAS_ALLOWED.store(true, Ordering::Relaxed);
}

/// Moves the calling thread's allocations into a heap in an arena that no other thread takes
/// pages from. Returns whether it did (false: not allowed by [`allow_own_arenas`], not on
/// mimalloc, already done, or the reservation was refused; the thread then keeps the default
/// heap, which is merely less repeatable). Memory the thread allocated before stays where it
/// is; the heap lives as long as the process.
pub fn use_own_arena() -> bool {
    if !OWN_ARENAS_ALLOWED.load(Ordering::Relaxed) || !own_heap().is_null() || !mimalloc_is_global()
    {
        return false;
    }
    let mut arena: mi::mi_arena_id_t = std::ptr::null_mut();
    // SAFETY: reserves address space (not committed, no large pages) for an exclusive arena
    // and makes a heap in it; both are kept for the life of the process.
    let heap = unsafe {
        if mi::mi_reserve_os_memory_ex(OWN_ARENA_BYTES, false, false, true, &mut arena) != 0 {
            return false;
        }
        mi::mi_heap_new_in_arena(arena)
    };
    if heap.is_null() {
        return false;
    }
    OWN_HEAP.with(|h| h.set(heap));
    true
}

/// Hands every block the calling thread freed back to the OS now, not after mimalloc's purge
/// delay: its own heap's when it has one, the default heap's otherwise, and every arena's
/// expired and unexpired purges. A no-op off mimalloc.
pub fn release_freed_memory() {
    let heap = own_heap();
    // SAFETY: collects the calling thread's part of a heap it owns (or the default one).
    unsafe {
        if heap.is_null() {
            mi::mi_collect(true);
        } else {
            mi::mi_heap_collect(heap, true);
        }
    }
}
