//! Training across processes on MPI (feature `mpi`): each rank of `mpirun -np N vae-train`
//! holds the whole model and runs its own shards of every batch; the reduction is a chain in
//! rank order over MPI's point-to-point messages and a broadcast ([`crate::reduce::chain`]), so
//! the sum is the one process's left fold in shard order, whatever MPI library runs it.

use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use vae_core::candle_core::Device;

use crate::reduce::{self, Contribution, Layout, Link, Reduce, Reduced};
use crate::{Result, TrainError};

/// Whether this process was started by an MPI launcher (`mpirun`/`mpiexec` of OpenMPI, MPICH
/// or Intel MPI, or Slurm's `srun` with PMI/PMIx).
pub fn launched() -> bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// The ranks of `MPI_COMM_WORLD`.
pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    threads: usize,
}

impl Mpi {
    /// Initialises MPI (calls from the main thread only). The returned universe finalises MPI
    /// when dropped: keep it until the end of `main`.
    pub fn init() -> Option<(Universe, Self)> {
        // A rank waiting in the reduction polls; OpenMPI then spins on its core unless told to
        // yield it, which on a machine with more work than cores (its own threads, another
        // rank, other jobs) takes the core the others need: on 2 loaded cores, 2 ranks spent
        // 2.5 to 3 times as long in an epoch's reductions spinning as yielding
        // (docs/DISTRIBUTED.md). A user's own setting wins. (Read from the environment by
        // MPI_Init, before any thread exists.)
        const YIELD: &str = "OMPI_MCA_mpi_yield_when_idle";
        if std::env::var_os(YIELD).is_none() {
            std::env::set_var(YIELD, "1");
        }
        let (universe, _) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        // The ranks on this node, for the GPU of each.
        let local_rank = world.split_shared(world.rank()).rank() as usize;
        Some((
            universe,
            Self {
                world,
                rank,
                size,
                local_rank,
                threads: 1,
            },
        ))
    }

    /// This rank's index among the ranks of its node.
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// Ends every rank of the job at once with `code` (`MPI_Abort`).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }

    /// Waits for every rank.
    pub fn barrier(&self) {
        self.world.barrier();
    }
}

impl Link for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.size
    }

    fn recv(&mut self, from: usize, buf: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(from as i32).receive_into(buf);
        Ok(())
    }

    fn send(&mut self, to: usize, buf: &[f32]) -> Result<()> {
        self.world.process_at_rank(to as i32).send(buf);
        Ok(())
    }

    fn broadcast(&mut self, root: usize, buf: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(root as i32).broadcast_into(buf);
        Ok(())
    }
}

impl Reduce for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn ranks(&self) -> usize {
        self.size
    }

    fn set_threads(&mut self, threads: usize) {
        self.threads = threads;
    }

    fn reduce(&mut self, layout: &Layout, mine: &Contribution, device: &Device) -> Result<Reduced> {
        let threads = self.threads;
        let segment = reduce::segment_for(layout.len(), self.size);
        let words = reduce::chain(self, layout, mine, threads, segment)?;
        Reduced::from_flat(layout, words, device)
    }

    fn sum_shards(&mut self, mine: &[Vec<f64>], len: usize) -> Result<Vec<f64>> {
        reduce::chain_sum(self, mine, len)
    }

    fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<()> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        bytes.resize(len as usize, 0);
        root.broadcast_into(&mut bytes[..]);
        Ok(())
    }

    fn agree(&mut self, mine: std::result::Result<(), String>) -> Result<()> {
        let failed = i32::from(mine.is_err());
        let mut all = vec![0i32; self.size];
        self.world.all_gather_into(&failed, &mut all[..]);
        let Some(first) = all.iter().position(|&f| f != 0) else {
            return Ok(());
        };
        let mut msg = match (&mine, first == self.rank) {
            (Err(m), true) => m.clone().into_bytes(),
            _ => Vec::new(),
        };
        let root = self.world.process_at_rank(first as i32);
        let mut len = msg.len() as u64;
        root.broadcast_into(&mut len);
        msg.resize(len as usize, 0);
        root.broadcast_into(&mut msg[..]);
        Err(TrainError::Agreed {
            rank: first,
            msg: String::from_utf8_lossy(&msg).into_owned(),
        })
    }
}
