//! The decode step allocates nothing once the buffers have grown.
mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::SMOLLM2;
use ferrolm_transformer::{Batch, CpuBackend, CpuOptions, Model, Precision};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, which is the system allocator's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn decode_steps_do_not_allocate() {
    let file = common::open_model(SMOLLM2);
    let gguf = file.gguf().expect("parses");
    // One thread: the allocator counts every thread's allocations, and a pool whose threads
    // steal work now and then grows and shrinks its job queues (rayon's bookkeeping, not the
    // model's; under load that happened in half the runs).
    let backend = CpuBackend::new(CpuOptions {
        threads: 1,
        precision: Precision::Q8,
    })
    .expect("thread pool");
    let model = Model::load(&gguf, backend).expect("model loads");
    let mut kv = model.kv_cache(128, 1).expect("kv cache");
    let mut state = model.state(8, 1).expect("state");
    let prompt = [504u32, 3575, 282, 4649, 314];
    let positions = [0u32, 1, 2, 3, 4];
    let batch = Batch {
        tokens: &prompt,
        positions: &positions,
        seqs: &[0; 5],
        outputs: &[4],
    };
    model.forward(&mut state, &mut kv, &batch).expect("prefill");
    let step = |kv: &mut _, state: &mut _, pos: u32| {
        let batch = Batch {
            tokens: &[7042],
            positions: &[pos],
            seqs: &[0],
            outputs: &[0],
        };
        model.forward(state, kv, &batch).expect("decode");
    };
    // The first steps grow per-thread scratch space.
    for pos in 5..9 {
        step(&mut kv, &mut state, pos);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for pos in 9..25 {
        step(&mut kv, &mut state, pos);
    }
    let during = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(during, 0, "{during} allocations in 16 decode steps");
}
