//! Random operation sequences against a naive model: a Vec of token rows per sequence.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use ferrolm_kvcache::half::f16;
use ferrolm_kvcache::{KvCacheConfig, KvCacheError, KvElement, PagedKvCache, SeqId};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Create,
    Append {
        seq: usize,
        n: usize,
    },
    Rewrite {
        seq: usize,
        pos: usize,
        layer: usize,
    },
    Truncate {
        seq: usize,
        keep: usize,
    },
    Fork {
        seq: usize,
    },
    Free {
        seq: usize,
    },
    Clear,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Create),
        8 => (any::<usize>(), 0usize..9).prop_map(|(seq, n)| Op::Append { seq, n }),
        2 => (any::<usize>(), any::<usize>(), any::<usize>()).prop_map(|(seq, pos, layer)| Op::Rewrite { seq, pos, layer }),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(seq, keep)| Op::Truncate { seq, keep }),
        3 => any::<usize>().prop_map(|seq| Op::Fork { seq }),
        2 => any::<usize>().prop_map(|seq| Op::Free { seq }),
        1 => Just(Op::Clear),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    layers: usize,
    heads: usize,
    dim: usize,
    block_tokens: usize,
    blocks: usize,
    max_tokens: usize,
}

fn shape() -> impl Strategy<Value = Shape> {
    (
        1usize..3,
        1usize..3,
        1usize..4,
        1usize..5,
        3usize..20,
        prop_oneof![Just(usize::MAX), 4usize..40],
    )
        .prop_map(|(layers, heads, dim, block_tokens, blocks, max)| Shape {
            layers,
            heads,
            dim,
            block_tokens,
            blocks,
            max_tokens: max.min(block_tokens * blocks * 2),
        })
}

/// The naive model: for each sequence, each token's values as
/// `[layer][k, v][head][dim]`, already rounded to the element type.
struct Model<T: KvElement> {
    cache: PagedKvCache<T>,
    shape: Shape,
    seqs: BTreeMap<SeqId, Vec<Vec<f32>>>,
    counter: f32,
}

impl<T: KvElement> Model<T> {
    fn new(shape: Shape) -> Self {
        let config = KvCacheConfig::new(
            shape.layers,
            shape.heads,
            shape.dim,
            shape.block_tokens,
            shape.blocks,
        )
        .unwrap()
        .with_max_sequence_tokens(shape.max_tokens);
        Self {
            cache: PagedKvCache::new(config).unwrap(),
            shape,
            seqs: BTreeMap::new(),
            counter: 0.0,
        }
    }

    fn pick(&self, i: usize) -> Option<SeqId> {
        let n = self.seqs.len();
        (n > 0).then(|| *self.seqs.keys().nth(i % n).unwrap())
    }

    fn row_len(&self) -> usize {
        self.shape.heads * self.shape.dim
    }

    /// Fresh rows for `n` tokens of one layer; returns (k, v, what the cache should hold).
    fn fresh_rows(&mut self, n: usize) -> (Vec<f32>, Vec<f32>) {
        let len = n * self.row_len();
        let mut k = Vec::with_capacity(len);
        let mut v = Vec::with_capacity(len);
        for _ in 0..len {
            self.counter += 1.0;
            k.push(self.counter * 0.37);
            v.push(-self.counter * 0.61);
        }
        (k, v)
    }

    fn record(&mut self, seq: SeqId, layer: usize, first: usize, k: &[f32], v: &[f32]) {
        let row = self.row_len();
        let tokens = self.seqs.get_mut(&seq).unwrap();
        for t in 0..k.len() / row {
            let slot = &mut tokens[first + t][layer * 2 * row..(layer + 1) * 2 * row];
            for i in 0..row {
                slot[i] = T::from_f32(k[t * row + i]).to_f32();
                slot[row + i] = T::from_f32(v[t * row + i]).to_f32();
            }
        }
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Create => {
                let id = self.cache.create_sequence();
                self.seqs.insert(id, Vec::new());
            }
            Op::Append { seq, n } => {
                let Some(id) = self.pick(seq) else {
                    return Ok(());
                };
                let len = self.seqs[&id].len();
                let bt = self.shape.block_tokens;
                let free = self.cache.stats().blocks_free;
                match self.cache.append(id, n) {
                    Ok(range) => {
                        prop_assert_eq!(range.clone(), len..len + n);
                        let width = self.shape.layers * 2 * self.row_len();
                        self.seqs
                            .get_mut(&id)
                            .unwrap()
                            .extend((0..n).map(|_| vec![f32::NAN; width]));
                        for layer in 0..self.shape.layers {
                            let (k, v) = self.fresh_rows(n);
                            self.cache.write(id, layer, len, &k, &v).unwrap();
                            self.record(id, layer, len, &k, &v);
                        }
                    }
                    Err(KvCacheError::ContextFull {
                        len: l,
                        requested,
                        max,
                        ..
                    }) => {
                        prop_assert_eq!((l, requested, max), (len, n, self.shape.max_tokens));
                        prop_assert!(len + n > self.shape.max_tokens);
                    }
                    Err(KvCacheError::OutOfBlocks { needed, free: f }) => {
                        prop_assert_eq!(f, free);
                        prop_assert!(needed > free);
                        // New blocks plus at most one copy-on-write.
                        prop_assert!(needed <= (len + n).div_ceil(bt) - len.div_ceil(bt) + 1);
                        prop_assert!(needed >= (len + n).div_ceil(bt) - len.div_ceil(bt));
                    }
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::Rewrite { seq, pos, layer } => {
                let Some(id) = self.pick(seq) else {
                    return Ok(());
                };
                let len = self.seqs[&id].len();
                if len == 0 {
                    return Ok(());
                }
                let (pos, layer) = (pos % len, layer % self.shape.layers);
                let (k, v) = self.fresh_rows(1);
                match self.cache.write(id, layer, pos, &k, &v) {
                    Ok(()) => self.record(id, layer, pos, &k, &v),
                    Err(KvCacheError::OutOfBlocks { needed: 1, free: 0 }) => {}
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
            Op::Truncate { seq, keep } => {
                let Some(id) = self.pick(seq) else {
                    return Ok(());
                };
                let len = self.seqs[&id].len();
                let keep = keep % (len + 2);
                self.cache.truncate(id, keep).unwrap();
                self.seqs.get_mut(&id).unwrap().truncate(keep);
            }
            Op::Fork { seq } => {
                let Some(id) = self.pick(seq) else {
                    return Ok(());
                };
                let child = self.cache.fork(id).unwrap();
                let copy = self.seqs[&id].clone();
                self.seqs.insert(child, copy);
            }
            Op::Free { seq } => {
                let Some(id) = self.pick(seq) else {
                    return Ok(());
                };
                self.cache.free(id).unwrap();
                self.seqs.remove(&id);
                prop_assert_eq!(
                    self.cache.len(id),
                    Err(KvCacheError::UnknownSequence { seq: id })
                );
            }
            Op::Clear => {
                self.cache.clear();
                self.seqs.clear();
                prop_assert_eq!(self.cache.stats().blocks_free, self.shape.blocks);
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let s = self.shape;
        let row = self.row_len();
        for (&id, tokens) in &self.seqs {
            prop_assert_eq!(self.cache.len(id).unwrap(), tokens.len());
            for layer in 0..s.layers {
                for head in 0..s.heads {
                    let mut pos = 0;
                    for block in self.cache.head_blocks(id, layer, head).unwrap() {
                        prop_assert_eq!(block.first_pos, pos);
                        for t in 0..block.n_tokens {
                            let want = &tokens[pos + t][layer * 2 * row..(layer + 1) * 2 * row];
                            for d in 0..s.dim {
                                prop_assert_eq!(
                                    block.keys[t * s.dim + d].to_f32(),
                                    want[head * s.dim + d]
                                );
                                prop_assert_eq!(
                                    block.values[t * s.dim + d].to_f32(),
                                    want[row + head * s.dim + d]
                                );
                            }
                        }
                        pos += block.n_tokens;
                    }
                    prop_assert_eq!(pos, tokens.len());
                }
            }
            if let Some(last) = tokens.len().checked_sub(1) {
                let (k, _) = self
                    .cache
                    .token(id, s.layers - 1, s.heads - 1, last)
                    .unwrap();
                let want = &tokens[last][(s.layers - 1) * 2 * row..];
                prop_assert_eq!(k[0].to_f32(), want[(s.heads - 1) * s.dim]);
            }
        }
        // Block accounting: every used block is referenced, and references add up.
        let ledger = self.cache.ledger();
        let mut referenced = BTreeSet::new();
        let mut references = 0;
        for (id, len) in ledger.sequences() {
            let table = ledger.block_table(id).unwrap();
            prop_assert_eq!(table.len(), len.div_ceil(s.block_tokens));
            referenced.extend(table.iter().copied());
            references += table.len();
        }
        let stats = self.cache.stats();
        prop_assert_eq!(stats.blocks_used, referenced.len());
        prop_assert_eq!(stats.blocks_used + stats.blocks_free, s.blocks);
        prop_assert_eq!(
            referenced
                .iter()
                .map(|&b| ledger.ref_count(b) as usize)
                .sum::<usize>(),
            references
        );
        prop_assert_eq!(
            stats.tokens,
            self.seqs.values().map(Vec::len).sum::<usize>()
        );
        prop_assert!(stats.utilization() <= 1.0 && stats.utilization() > 0.0);
        Ok(())
    }
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128)
}

fn run<T: KvElement>(shape: Shape, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut model = Model::<T>::new(shape);
    for op in ops {
        model.apply(op)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn f32_cache_agrees_with_the_model(shape in shape(), ops in prop::collection::vec(op(), 1..60)) {
        run::<f32>(shape, &ops)?;
    }

    #[test]
    fn f16_cache_agrees_with_the_model(shape in shape(), ops in prop::collection::vec(op(), 1..60)) {
        run::<f16>(shape, &ops)?;
    }

    #[test]
    fn freed_blocks_are_reused(shape in shape(), rounds in 1usize..5) {
        let shape = Shape { max_tokens: usize::MAX, ..shape };
        let mut model = Model::<f32>::new(shape);
        let capacity = shape.blocks * shape.block_tokens;
        let mut first_table = None;
        for _ in 0..rounds {
            let id = model.cache.create_sequence();
            model.cache.append(id, capacity).unwrap();
            prop_assert_eq!(model.cache.stats().blocks_free, 0);
            let other = model.cache.create_sequence();
            let refused = matches!(model.cache.append(other, 1), Err(KvCacheError::OutOfBlocks { needed: 1, free: 0 }));
            prop_assert!(refused);
            let table = model.cache.ledger().block_table(id).unwrap().to_vec();
            if let Some(first) = &first_table {
                prop_assert_eq!(&table, first);
            }
            first_table = Some(table);
            model.cache.free(id).unwrap();
            model.cache.free(other).unwrap();
        }
    }
}

#[test]
fn forks_never_see_each_others_later_tokens() {
    let shape = Shape {
        layers: 1,
        heads: 1,
        dim: 2,
        block_tokens: 4,
        blocks: 16,
        max_tokens: 64,
    };
    let ops = [
        Op::Create,
        Op::Append { seq: 0, n: 6 },
        Op::Fork { seq: 0 },
        Op::Append { seq: 0, n: 3 },
        Op::Append { seq: 1, n: 5 },
        Op::Rewrite {
            seq: 0,
            pos: 2,
            layer: 0,
        },
        Op::Truncate { seq: 1, keep: 5 },
        Op::Append { seq: 1, n: 2 },
    ];
    let mut model = Model::<f32>::new(shape);
    for op in &ops {
        model.apply(op).unwrap();
    }
    let ids: Vec<SeqId> = model.seqs.keys().copied().collect();
    let read = |id| -> Vec<f32> {
        model
            .cache
            .head_blocks(id, 0, 0)
            .unwrap()
            .flat_map(|b| b.keys.to_vec())
            .collect()
    };
    let (a, b) = (read(ids[0]), read(ids[1]));
    assert_eq!((a.len(), b.len()), (18, 14));
    // Position 0 and 1 still shared; position 2 rewritten only in the first sequence.
    assert_eq!(a[..4], b[..4]);
    assert_ne!(a[4..6], b[4..6]);
    assert_ne!(a[12..14], b[12..14]);
}
