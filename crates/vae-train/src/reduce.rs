//! The reduction phase of a training step: the shards' gradients and loss terms summed into one
//! flat buffer, which is all the optimizer sees.
//!
//! A batch is split into fixed contiguous shards ([`vae_core::par::split`]); in one process each
//! thread runs one shard, across processes each rank runs its own run of consecutive shards.
//! Whatever the split, the sum is the left fold of the shards in shard order (`g0 + g1 + g2 +
//! …`, in f32 for the gradients and in f64 for the loss terms): in one process it is folded
//! locally ([`Local`]); across ranks as a chain in rank order, rank r adding its shards to the
//! partial sum of the ranks before it, the last rank's total then broadcast ([`chain`]). So `R`
//! ranks of `T` threads give the bytes of one process of `R × T` threads.
//!
//! The buffer ([`Layout`]) is a header of f64 values, each stored as two f32 words (the stop
//! flags of signals, the reconstruction term, the objective, the KL of each latent unit, one
//! "has a gradient" flag per variable), then every variable's gradient, the variables in name
//! order. The reduced gradients ([`Gradients`]) are views into that one buffer. In one process,
//! where there is nothing to fold on the host (a single shard, whose sum is itself, or
//! gradients on another device), each variable's shards are summed where they are instead.

use std::collections::BTreeMap;
use std::ops::Range;

use vae_core::candle_core::backprop::GradStore;
use vae_core::candle_core::{self, CpuStorage, DType, Device, StorageRef, Tensor, Var};
use vae_core::ops::adam::sum_gradients;
use vae_core::ops::Kernels;
use vae_core::par;

use crate::{Result, TrainError};

/// Signals seen by a rank before it contributed to a step (bits; the reduction keeps the
/// union).
pub const STOP_INTERRUPT: u8 = 1;
pub const STOP_TERMINATE: u8 = 2;

const SLOT_INT: usize = 0;
const SLOT_TERM: usize = 1;
const SLOT_RECON: usize = 2;
const SLOT_OBJECTIVE: usize = 3;
const SLOT_KL: usize = 4;

/// Where everything lives in the flat buffer of a step.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Name, the variable (for its gradient in a [`GradStore`]), offset of its gradient in the
    /// buffer, and its shape; in name order.
    vars: Vec<(String, Var, usize)>,
    kl_units: usize,
    len: usize,
}

impl Layout {
    /// The layout for `vars` (name, variable; any order) and a model with `kl_units` KL units.
    pub fn new(vars: impl IntoIterator<Item = (String, Var)>, kl_units: usize) -> Self {
        let mut sorted: Vec<(String, Var)> = vars.into_iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = SLOT_KL + kl_units + sorted.len();
        let mut off = 2 * slots;
        let vars = sorted
            .into_iter()
            .map(|(name, var)| {
                let o = off;
                off += var.elem_count();
                (name, var, o)
            })
            .collect();
        Self {
            vars,
            kl_units,
            len: off,
        }
    }

    /// Words (f32) in the buffer.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Words of the header (the f64 values).
    pub fn header_len(&self) -> usize {
        2 * (SLOT_KL + self.kl_units + self.vars.len())
    }

    /// Gradient values in the buffer (the number of parameters).
    pub fn params(&self) -> usize {
        self.len - self.header_len()
    }

    /// The buffer in the pieces a transport moves one at a time: the header whole, then the
    /// gradients in pieces of at most `max` words.
    pub fn segments(&self, max: usize) -> Vec<Range<usize>> {
        let h = self.header_len();
        let mut out = Vec::with_capacity(1 + self.params().div_ceil(max.max(1)));
        out.push(0..h);
        let max = max.max(1);
        let mut a = h;
        while a < self.len {
            let b = (a + max).min(self.len);
            out.push(a..b);
            a = b;
        }
        out
    }

    fn presence_slot(&self, v: usize) -> usize {
        SLOT_KL + self.kl_units + v
    }
}

fn get_f64(words: &[f32], slot: usize) -> f64 {
    let lo = words[2 * slot].to_bits() as u64;
    let hi = words[2 * slot + 1].to_bits() as u64;
    f64::from_bits(lo | (hi << 32))
}

fn put_f64(words: &mut [f32], slot: usize, v: f64) {
    let b = v.to_bits();
    words[2 * slot] = f32::from_bits(b as u32);
    words[2 * slot + 1] = f32::from_bits((b >> 32) as u32);
}

/// What one shard of the batch computed: its gradients and its loss terms.
pub struct Shard {
    pub grads: GradStore,
    /// Reconstruction term summed over the shard's examples.
    pub recon: f64,
    /// KL of each latent unit summed over the shard's examples.
    pub kl_units: Vec<f64>,
    /// The shard's part of the objective (per example of the whole batch).
    pub objective: f64,
}

/// This rank's part of a step: its shards in shard order and the signals it has seen.
pub struct Contribution<'a> {
    pub shards: &'a [Shard],
    pub stop: u8,
}

/// A gradient's values on the host: borrowed from a CPU tensor, or copied from another device.
enum Values<'a> {
    Borrowed(StorageRef<'a>, usize, usize),
    Owned(Vec<f32>),
}

impl Values<'_> {
    fn of(t: &Tensor) -> Result<Values<'_>> {
        if t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous() {
            let (s, l) = t.storage_and_layout();
            let start = l.start_offset();
            if matches!(&*s, candle_core::Storage::Cpu(CpuStorage::F32(_))) {
                return Ok(Values::Borrowed(s, start, t.elem_count()));
            }
        }
        Ok(Values::Owned(
            t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?,
        ))
    }

    fn slice(&self) -> &[f32] {
        match self {
            Values::Borrowed(s, start, n) => match &**s {
                candle_core::Storage::Cpu(CpuStorage::F32(v)) => &v[*start..][..*n],
                _ => &[],
            },
            Values::Owned(v) => v,
        }
    }
}

/// This rank's contribution with every gradient readable on the host, ready to be folded into
/// segments of the buffer.
pub struct Folder<'a> {
    layout: &'a Layout,
    stop: u8,
    shards: &'a [Shard],
    /// `grads[s][v]`: shard s's gradient of variable v.
    grads: Vec<Vec<Option<Values<'a>>>>,
    /// Whether the partial sum received had a gradient for each variable (known once the
    /// header is folded).
    received: Vec<bool>,
}

impl<'a> Folder<'a> {
    pub fn new(layout: &'a Layout, c: &Contribution<'a>) -> Result<Self> {
        Self::with(layout, c, true)
    }

    /// With `values` false, only which shards have which gradients is recorded (enough to
    /// fold the header).
    fn with(layout: &'a Layout, c: &Contribution<'a>, values: bool) -> Result<Self> {
        let mut grads = Vec::with_capacity(c.shards.len());
        for s in c.shards {
            let mut per_var = Vec::with_capacity(layout.vars.len());
            for (name, var, _) in &layout.vars {
                per_var.push(match s.grads.get(var.as_tensor()) {
                    Some(g) if g.elem_count() != var.elem_count() => {
                        return Err(TrainError::Internal(format!(
                            "the gradient of {name} has {} values, the variable {}",
                            g.elem_count(),
                            var.elem_count()
                        )));
                    }
                    Some(g) if values => Some(Values::of(g)?),
                    Some(_) => Some(Values::Owned(Vec::new())),
                    None => None,
                });
            }
            grads.push(per_var);
        }
        Ok(Self {
            layout,
            stop: c.stop,
            shards: c.shards,
            grads,
            received: vec![false; layout.vars.len()],
        })
    }

    /// Adds this rank's part of `range` into `seg` (the words `range` of the buffer, holding
    /// the sum of the ranks before this one, or zeros on the first). The header must be folded
    /// before any gradient (segments in order).
    pub fn fold(&mut self, range: Range<usize>, seg: &mut [f32]) {
        let h = self.layout.header_len();
        if range.start < h {
            debug_assert_eq!(range, 0..h, "the header is one segment");
            self.fold_header(seg);
        } else {
            self.fold_grads(range, seg);
        }
    }

    fn fold_header(&mut self, words: &mut [f32]) {
        let l = self.layout;
        for (slot, bit) in [(SLOT_INT, STOP_INTERRUPT), (SLOT_TERM, STOP_TERMINATE)] {
            if self.stop & bit != 0 {
                put_f64(words, slot, 1.0);
            }
        }
        let mut sum = |slot: usize, f: &dyn Fn(&Shard) -> f64| {
            let mut acc = get_f64(words, slot);
            for s in self.shards {
                acc += f(s);
            }
            put_f64(words, slot, acc);
        };
        sum(SLOT_RECON, &|s| s.recon);
        sum(SLOT_OBJECTIVE, &|s| s.objective);
        for u in 0..l.kl_units {
            sum(SLOT_KL + u, &|s| s.kl_units.get(u).copied().unwrap_or(0.0));
        }
        for v in 0..l.vars.len() {
            let slot = l.presence_slot(v);
            let before = get_f64(words, slot) != 0.0;
            self.received[v] = before;
            if before || self.grads.iter().any(|g| g[v].is_some()) {
                put_f64(words, slot, 1.0);
            }
        }
    }

    fn fold_grads(&self, range: Range<usize>, seg: &mut [f32]) {
        for (v, (_, var, off)) in self.layout.vars.iter().enumerate() {
            let (a, b) = (*off, off + var.elem_count());
            let (lo, hi) = (a.max(range.start), b.min(range.end));
            if lo >= hi {
                continue;
            }
            let out = &mut seg[lo - range.start..hi - range.start];
            let mut present = self.received[v];
            for g in &self.grads {
                if let Some(values) = &g[v] {
                    let src = &values.slice()[lo - a..hi - a];
                    if present {
                        add(out, src);
                    } else {
                        out.copy_from_slice(src);
                        present = true;
                    }
                }
            }
        }
    }

    /// [`Folder::fold`] of the gradients of `range` split over `threads` (the header first,
    /// on the calling thread).
    pub fn fold_parallel(&mut self, range: Range<usize>, seg: &mut [f32], threads: usize) {
        let h = self.layout.header_len();
        if range.start < h || threads <= 1 || seg.len() < 1 << 16 {
            return self.fold(range, seg);
        }
        let pieces = par::split(seg.len(), threads);
        let this = &*self;
        par::for_parts_mut(seg, &pieces, |i, out| {
            let p = &pieces[i];
            this.fold_grads(range.start + p.start..range.start + p.end, out);
        });
    }
}

fn add(out: &mut [f32], src: &[f32]) {
    for (o, &s) in out.iter_mut().zip(src) {
        *o += s;
    }
}

/// The gradient of each variable for one update: views into the one flat buffer the shards
/// were folded into, or the gradients summed where they are ([`Local`] on another device or of
/// a single shard).
#[derive(Debug, Default)]
pub struct Gradients {
    by_name: BTreeMap<String, Tensor>,
}

impl Gradients {
    /// The gradient of the variable `name`, if it has one.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.by_name.get(name)
    }

    /// The variables with a gradient and their gradients, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Tensor)> {
        self.by_name.iter()
    }
}

/// What a step's reduction gives every rank.
#[derive(Debug)]
pub struct Reduced {
    pub grads: Gradients,
    /// Reconstruction term summed over the batch.
    pub recon: f64,
    /// KL of each latent unit summed over the batch.
    pub kl_units: Vec<f64>,
    /// The objective, per example of the batch.
    pub objective: f64,
    /// The union of the signals the ranks had seen ([`STOP_INTERRUPT`], [`STOP_TERMINATE`]).
    pub stop: u8,
}

impl Reduced {
    /// Reads a reduced buffer; the gradients become views of it on `device`.
    pub fn from_flat(layout: &Layout, words: Vec<f32>, device: &Device) -> Result<Self> {
        let header = Self::header(layout, &words);
        let present: Vec<bool> = (0..layout.vars.len())
            .map(|v| get_f64(&words, layout.presence_slot(v)) != 0.0)
            .collect();
        let n = words.len();
        let mut flat = Tensor::from_vec(words, n, &Device::Cpu)?;
        if !device.is_cpu() {
            flat = flat.to_device(device)?;
        }
        let mut by_name = BTreeMap::new();
        for ((name, var, off), p) in layout.vars.iter().zip(present) {
            if p {
                let view = flat
                    .narrow(0, *off, var.elem_count())?
                    .reshape(var.shape())?;
                by_name.insert(name.clone(), view);
            }
        }
        Ok(Self {
            grads: Gradients { by_name },
            ..header
        })
    }

    /// The scalars of a reduced header (no gradients).
    fn header(layout: &Layout, words: &[f32]) -> Self {
        let mut stop = 0;
        if get_f64(words, SLOT_INT) != 0.0 {
            stop |= STOP_INTERRUPT;
        }
        if get_f64(words, SLOT_TERM) != 0.0 {
            stop |= STOP_TERMINATE;
        }
        Self {
            grads: Gradients::default(),
            recon: get_f64(words, SLOT_RECON),
            kl_units: (0..layout.kl_units)
                .map(|u| get_f64(words, SLOT_KL + u))
                .collect(),
            objective: get_f64(words, SLOT_OBJECTIVE),
            stop,
        }
    }
}

/// The collective operations of training: the reduction of a step, and what the ranks must
/// agree on besides (free bits' KL, rank 0's decisions, errors).
pub trait Reduce {
    /// This process's rank (0 in one process).
    fn rank(&self) -> usize {
        0
    }

    /// Processes taking part (1 in one process).
    fn ranks(&self) -> usize {
        1
    }

    /// Threads this rank folds its part of the buffer with.
    fn set_threads(&mut self, _threads: usize) {}

    /// The sum over every shard of every rank, in shard order, on every rank.
    fn reduce(&mut self, layout: &Layout, mine: &Contribution, device: &Device) -> Result<Reduced>;

    /// The element-wise left fold, in shard order over all ranks, of `mine` (this rank's shards'
    /// vectors, each of length `len`), starting from zeros.
    fn sum_shards(&mut self, mine: &[Vec<f64>], len: usize) -> Result<Vec<f64>>;

    /// Rank 0's `bytes` on every rank.
    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()>;

    /// Whether every rank succeeded: when one failed, every rank gets
    /// [`TrainError::Agreed`] with the first failing rank's message.
    fn agree(&mut self, mine: std::result::Result<(), String>) -> Result<()>;
}

/// The reduction in one process: the shards' left fold, over the process's threads.
#[derive(Debug, Clone, Copy)]
pub struct Local {
    pub threads: usize,
}

impl Default for Local {
    fn default() -> Self {
        Self { threads: 1 }
    }
}

impl Reduce for Local {
    fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    fn reduce(&mut self, layout: &Layout, mine: &Contribution, device: &Device) -> Result<Reduced> {
        if !device.is_cpu() || mine.shards.len() == 1 {
            return reduce_in_place(layout, mine);
        }
        let mut words = vec![0f32; layout.len()];
        let mut folder = Folder::new(layout, mine)?;
        let h = layout.header_len();
        let (head, grads) = words.split_at_mut(h);
        folder.fold(0..h, head);
        folder.fold_parallel(h..layout.len(), grads, self.threads);
        drop(folder);
        Reduced::from_flat(layout, words, device)
    }

    fn sum_shards(&mut self, mine: &[Vec<f64>], len: usize) -> Result<Vec<f64>> {
        let mut acc = vec![0f64; len];
        for s in mine {
            acc.iter_mut().zip(s).for_each(|(a, b)| *a += b);
        }
        Ok(acc)
    }

    fn broadcast(&mut self, _bytes: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }

    fn agree(&mut self, mine: std::result::Result<(), String>) -> Result<()> {
        mine.map_err(|msg| TrainError::Agreed { rank: 0, msg })
    }
}

/// The local reduction where there is nothing to fold on the host: on another device (the
/// gradients stay there) or of a single shard (whose sum is itself). Each variable's shards are
/// summed where they are, in shard order ([`sum_gradients`]: one shard's gradient is its own
/// tensor, not a copy); the header is folded on the host. The same values as the flat fold.
fn reduce_in_place(layout: &Layout, mine: &Contribution) -> Result<Reduced> {
    let mut header = vec![0f32; layout.header_len()];
    let mut folder = Folder::with(layout, mine, false)?;
    folder.fold(0..layout.header_len(), &mut header);
    let mut reduced = Reduced::header(layout, &header);
    for (name, var, _) in &layout.vars {
        let gs: Vec<&Tensor> = mine
            .shards
            .iter()
            .filter_map(|s| s.grads.get(var.as_tensor()))
            .collect();
        if !gs.is_empty() {
            let g = sum_gradients(&gs, Kernels::Native)?
                .contiguous()?
                .reshape(var.shape())?;
            reduced.grads.by_name.insert(name.clone(), g);
        }
    }
    Ok(reduced)
}

/// Moves the segments of a chain reduction between ranks (MPI, or threads in the tests).
pub trait Link {
    fn rank(&self) -> usize;
    fn ranks(&self) -> usize;
    /// Receives the next segment from rank `from` into `buf`.
    fn recv(&mut self, from: usize, buf: &mut [f32]) -> Result<()>;
    /// Sends a segment to rank `to`.
    fn send(&mut self, to: usize, buf: &[f32]) -> Result<()>;
    /// `buf` of rank `root` on every rank.
    fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<()>;
}

/// The largest segment of the chain: 1 MiB of gradients.
pub const SEGMENT: usize = 1 << 18;

/// Words per segment of a chain of `ranks` over a buffer of `len` words: the buffer cut into
/// about as many segments as there are ranks (the chain's time is then about two transfers of
/// the buffer, its pipeline filling in one of them), between 16 KiB (below which the messages'
/// latency dominates) and 1 MiB.
pub fn segment_for(len: usize, ranks: usize) -> usize {
    (len / ranks.saturating_sub(1).max(1)).clamp(1 << 12, SEGMENT)
}

/// The reduction as a chain in rank order: rank r receives each segment of the partial sum of
/// ranks `0..r`, adds its own shards, and passes it on, segment after segment (so the ranks
/// work on different segments at once); the last rank broadcasts the total.
pub fn chain(
    link: &mut dyn Link,
    layout: &Layout,
    mine: &Contribution,
    threads: usize,
    segment: usize,
) -> Result<Vec<f32>> {
    let (rank, ranks) = (link.rank(), link.ranks());
    let mut words = vec![0f32; layout.len()];
    let mut folder = Folder::new(layout, mine)?;
    // Seconds receiving (waiting for the ranks before included), adding, sending (waiting for
    // the next rank to take it included), broadcasting.
    let mut times = [0f64; 4];
    let mut clock = std::time::Instant::now();
    let mut lap = |i: usize, times: &mut [f64; 4]| {
        times[i] += clock.elapsed().as_secs_f64();
        clock = std::time::Instant::now();
    };
    for r in layout.segments(segment) {
        let seg = &mut words[r.clone()];
        if rank > 0 {
            link.recv(rank - 1, seg)?;
        }
        lap(0, &mut times);
        folder.fold_parallel(r, seg, threads);
        lap(1, &mut times);
        if rank + 1 < ranks {
            link.send(rank + 1, seg)?;
        }
        lap(2, &mut times);
    }
    drop(folder);
    link.broadcast(ranks - 1, &mut words)?;
    lap(3, &mut times);
    let ms = times.map(|t| t * 1e3);
    tracing::debug!(
        "rank {rank}: receive {:.2} ms, add {:.2} ms, send {:.2} ms, broadcast {:.2} ms",
        ms[0],
        ms[1],
        ms[2],
        ms[3]
    );
    Ok(words)
}

/// [`Reduce::sum_shards`] as a chain: the vectors' f64 values carried in pairs of words.
pub fn chain_sum(link: &mut dyn Link, mine: &[Vec<f64>], len: usize) -> Result<Vec<f64>> {
    let (rank, ranks) = (link.rank(), link.ranks());
    let mut words = vec![0f32; 2 * len];
    if rank > 0 {
        link.recv(rank - 1, &mut words)?;
    }
    for i in 0..len {
        let mut acc = get_f64(&words, i);
        for s in mine {
            acc += s.get(i).copied().unwrap_or(0.0);
        }
        put_f64(&mut words, i, acc);
    }
    if rank + 1 < ranks {
        link.send(rank + 1, &words)?;
    }
    link.broadcast(ranks - 1, &mut words)?;
    Ok((0..len).map(|i| get_f64(&words, i)).collect())
}

/// The shards of a batch of `n` examples for `ranks` ranks of `threads` threads: every shard
/// of the batch (as one process of `ranks × threads` threads splits it) and the indices of
/// this rank's (possibly none, when the batch has fewer examples than shards).
pub fn shards_of(
    n: usize,
    ranks: usize,
    rank: usize,
    threads: usize,
) -> (Vec<Range<usize>>, Range<usize>) {
    let all = par::split(n, ranks * threads);
    let a = (rank * threads).min(all.len());
    let b = ((rank + 1) * threads).min(all.len());
    (all, a..b)
}
