//! The per-token path (reserve, write every layer, read every head) does not allocate.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to the system allocator.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ferrolm_kvcache::half::f16;
use ferrolm_kvcache::{KvCacheConfig, KvElement, PagedKvCache};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's layout is passed to the system allocator unchanged.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: `ptr` came from `System.alloc` with this layout; the size is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn decode_steps<T: KvElement>() {
    let (layers, heads, dim) = (4, 2, 8);
    let mut cache =
        PagedKvCache::<T>::new(KvCacheConfig::new(layers, heads, dim, 16, 64).unwrap()).unwrap();
    let row = vec![0.5_f32; heads * dim];
    let mut scratch = vec![0.0_f32; 16 * dim];
    let before = ALLOCATIONS.with(Cell::get);
    let seq = cache.create_sequence();
    let after_create = ALLOCATIONS.with(Cell::get);
    for _ in 0..300 {
        let pos = cache.append(seq, 1).unwrap().start;
        for layer in 0..layers {
            cache.write(seq, layer, pos, &row, &row).unwrap();
            for head in 0..heads {
                for block in cache.head_blocks(seq, layer, head).unwrap() {
                    T::load(&mut scratch, block.keys);
                }
            }
        }
    }
    cache.truncate(seq, 100).unwrap();
    cache.append(seq, 10).unwrap();
    assert_eq!(
        ALLOCATIONS.with(Cell::get),
        after_create,
        "the decode loop allocated"
    );
    // Creating a sequence reserves its block table once.
    assert!(after_create - before <= 2);
}

#[test]
fn the_decode_loop_does_not_allocate() {
    let probe = ALLOCATIONS.with(Cell::get);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(
        ALLOCATIONS.with(Cell::get),
        probe + 1,
        "the counter sees allocations"
    );
    decode_steps::<f32>();
    decode_steps::<f16>();
}
