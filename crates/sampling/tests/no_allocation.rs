//! Drawing a token allocates nothing once the chain's buffers have grown.

// A counting global allocator needs `unsafe impl GlobalAlloc`; it only
// forwards to the system allocator.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ferrolm_sampling::{Preset, SamplingConfig};

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

#[test]
fn sampling_a_token_does_not_allocate_after_warm_up() {
    let probe = ALLOCATIONS.with(Cell::get);
    drop(std::hint::black_box(vec![0u8; 16]));
    assert_eq!(
        ALLOCATIONS.with(Cell::get),
        probe + 1,
        "the counter sees allocations"
    );
    let row: Vec<f32> = (0..4_000)
        .map(|i| ((i * 7919) % 1000) as f32 * 0.01)
        .collect();
    let configs = [
        SamplingConfig::preset(Preset::Standard),
        SamplingConfig::preset(Preset::Greedy),
        SamplingConfig::preset(Preset::Creative),
        SamplingConfig::preset(Preset::MinP),
        SamplingConfig {
            typical_p: 0.9,
            top_k: 0,
            frequency_penalty: 0.1,
            presence_penalty: 0.2,
            entropy_weight: 0.3,
            logit_bias: vec![(3, 1.0), (9, f32::NEG_INFINITY)],
            ..SamplingConfig::default()
        },
    ];
    for config in configs {
        let mut chain = config.build().unwrap();
        // Warm-up fills the penalty windows and grows every buffer.
        for _ in 0..80 {
            let t = chain.sample(&row).unwrap();
            chain.accept(t);
        }
        let before = ALLOCATIONS.with(Cell::get);
        for _ in 0..20 {
            let t = chain.sample(&row).unwrap();
            chain.accept(t);
        }
        let after = ALLOCATIONS.with(Cell::get);
        assert_eq!(after - before, 0, "{chain} allocated");
    }
}
