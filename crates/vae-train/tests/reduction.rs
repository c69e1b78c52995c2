//! The reduction across ranks gives the bytes of one process: ranks simulated by threads that
//! pass the chain's segments over channels (the same `reduce::chain` MPI runs) train to the
//! same weights as one process whose threads run the same shards, for any split of the shards
//! into ranks and threads, with free bits (a collective of its own) and clipping on.

// Test code may unwrap and expect: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc::{channel, Receiver, Sender};

use vae_core::candle_core::Device;
use vae_core::Preset;
use vae_train::config::{RunConfig, TrainConfig};
use vae_train::reduce::{self, Contribution, Layout, Link, Reduce, Reduced};
use vae_train::step::Trainer;
use vae_train::{Result, TrainError};

/// One simulated rank: a channel from every rank to every rank.
struct Rank {
    rank: usize,
    ranks: usize,
    to: Vec<Sender<Vec<f32>>>,
    from: Vec<Receiver<Vec<f32>>>,
    segment: usize,
    threads: usize,
}

fn ranks(n: usize, segment: usize) -> Vec<Rank> {
    let mut senders: Vec<Vec<Option<Sender<Vec<f32>>>>> = (0..n).map(|_| vec![None; n]).collect();
    let mut receivers: Vec<Vec<Option<Receiver<Vec<f32>>>>> =
        (0..n).map(|_| (0..n).map(|_| None).collect()).collect();
    for (a, row) in senders.iter_mut().enumerate() {
        for (b, slot) in row.iter_mut().enumerate() {
            let (tx, rx) = channel();
            *slot = Some(tx);
            receivers[b][a] = Some(rx);
        }
    }
    senders
        .into_iter()
        .zip(receivers)
        .enumerate()
        .map(|(rank, (to, from))| Rank {
            rank,
            ranks: n,
            to: to.into_iter().map(Option::unwrap).collect(),
            from: from.into_iter().map(Option::unwrap).collect(),
            segment,
            threads: 1,
        })
        .collect()
}

impl Link for Rank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn ranks(&self) -> usize {
        self.ranks
    }
    fn recv(&mut self, from: usize, buf: &mut [f32]) -> Result<()> {
        let v = self.from[from].recv().unwrap();
        assert_eq!(v.len(), buf.len(), "segments of different lengths");
        buf.copy_from_slice(&v);
        Ok(())
    }
    fn send(&mut self, to: usize, buf: &[f32]) -> Result<()> {
        self.to[to].send(buf.to_vec()).unwrap();
        Ok(())
    }
    fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<()> {
        if self.rank == root {
            for r in (0..self.ranks).filter(|&r| r != root) {
                self.to[r].send(buf.to_vec()).unwrap();
            }
            Ok(())
        } else {
            self.recv(root, buf)
        }
    }
}

impl Reduce for Rank {
    fn rank(&self) -> usize {
        self.rank
    }
    fn ranks(&self) -> usize {
        self.ranks
    }
    fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }
    fn reduce(&mut self, layout: &Layout, mine: &Contribution, device: &Device) -> Result<Reduced> {
        let (threads, segment) = (self.threads, self.segment);
        let words = reduce::chain(self, layout, mine, threads, segment)?;
        Reduced::from_flat(layout, words, device)
    }
    fn sum_shards(&mut self, mine: &[Vec<f64>], len: usize) -> Result<Vec<f64>> {
        reduce::chain_sum(self, mine, len)
    }
    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        let mut words: Vec<f32> = bytes.iter().map(|&b| b as f32).collect();
        let mut len = [words.len() as f32];
        Link::broadcast(self, 0, &mut len)?;
        words.resize(len[0] as usize, 0.0);
        Link::broadcast(self, 0, &mut words)?;
        *bytes = words.iter().map(|&w| w as u8).collect();
        Ok(())
    }
    fn agree(&mut self, mine: std::result::Result<(), String>) -> Result<()> {
        mine.map_err(|msg| TrainError::Agreed {
            rank: self.rank,
            msg,
        })
    }
}

fn config(preset: Preset, threads: usize, free_bits: f64, clip: Option<f64>) -> RunConfig {
    let splits = vae_data::resolve::load_sample().unwrap();
    let mut train = TrainConfig::preset(preset);
    train.threads = threads;
    train.objective.free_bits = free_bits;
    train.grad_clip = clip;
    RunConfig {
        model: preset.model(splits.train.shape),
        data: vae_data::DataConfig::default(),
        train,
    }
}

/// The losses, gradient norms and weights after `steps` steps of batch `batch` on `n_ranks` simulated ranks of
/// `threads` threads each (every rank's weights, which must be equal).
#[allow(clippy::too_many_arguments)]
fn train(
    preset: Preset,
    n_ranks: usize,
    threads: usize,
    steps: usize,
    batch: usize,
    free_bits: f64,
    clip: Option<f64>,
    segment: usize,
) -> Vec<Vec<u8>> {
    let splits = vae_data::resolve::load_sample().unwrap();
    let order = vae_data::epoch_order(splits.train.len(), 0, 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = ranks(n_ranks, segment)
            .into_iter()
            .map(|mut rank| {
                let (splits, order) = (&splits, &order);
                s.spawn(move || {
                    let cfg = config(preset, threads, free_bits, clip);
                    let mut t = Trainer::new(cfg, Device::Cpu).unwrap();
                    let mut buf = Vec::new();
                    // The last batch is smaller than the shards are many: some ranks get none.
                    let sizes = (0..steps).map(|i| if i + 1 == steps { 3 } else { batch });
                    let mut at = 0;
                    // The losses and gradient norms (the metrics) must match too.
                    let mut bytes = Vec::new();
                    for n in sizes {
                        let chunk = &order[at..at + n];
                        at += n;
                        let loss = t
                            .train_step_in(&mut rank, &splits.train, chunk, 1.0, &mut buf, 0)
                            .unwrap();
                        for v in [loss.neg_elbo, loss.objective, loss.grad_norm] {
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    for (_, var) in t.opt.variables() {
                        for v in var
                            .as_tensor()
                            .flatten_all()
                            .unwrap()
                            .to_vec1::<f32>()
                            .unwrap()
                        {
                            bytes.extend_from_slice(&v.to_le_bytes());
                        }
                    }
                    bytes
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_of_threads_give_the_bytes_of_one_process() {
    for (preset, steps, free_bits, clip) in [
        (Preset::PytorchExample, 6, 0.0, None),
        // Free bits need the whole batch's KL before the backward passes; a clip below the
        // gradient norm makes the update depend on the norm's last bit.
        (Preset::PytorchExample, 6, 0.5, Some(1.0)),
        (Preset::Conv, 3, 0.0, None),
    ] {
        let one = train(preset, 1, 4, steps, 64, free_bits, clip, reduce::SEGMENT);
        let init = train(preset, 1, 4, 0, 64, free_bits, clip, reduce::SEGMENT);
        assert_ne!(one, init, "{preset:?}: the steps changed nothing");
        for (n_ranks, threads, segment) in [(2, 2, 1000), (4, 1, 4096), (3, 1, reduce::SEGMENT)] {
            let many = train(
                preset, n_ranks, threads, steps, 64, free_bits, clip, segment,
            );
            for (r, w) in many.iter().enumerate() {
                if n_ranks * threads == 4 {
                    assert!(
                        *w == one[0],
                        "{preset:?}: rank {r} of {n_ranks} x {threads} threads differs from 1 x 4"
                    );
                } else {
                    assert!(*w == many[0], "{preset:?}: the ranks disagree");
                }
            }
            if n_ranks * threads != 4 {
                let same = train(
                    preset,
                    1,
                    n_ranks * threads,
                    steps,
                    64,
                    free_bits,
                    clip,
                    segment,
                );
                assert!(
                    many[0] == same[0],
                    "{preset:?}: {n_ranks} ranks differ from {} threads",
                    n_ranks * threads
                );
            }
        }
    }
}
