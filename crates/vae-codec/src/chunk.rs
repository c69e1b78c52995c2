//! A chunk's stored stack ([`Chunk`]) and the plan its first images follow ([`Plan`]): which
//! latent groups each image codes, at which precision, while the stack has too few bits to pay
//! for all of them (see [`crate::driver`]).

/// One chunk's compressed stack. `seed_prefix` leading words of the seed were never touched
/// and are left out of `words`: the stack is `seed_words(..)[..seed_prefix] ++ words`.
/// `levels[j]` is the index (in the chunk) of the first image that takes step `j` of the
/// chunk's [`Plan`] (the chunk's length where none does): image `i` takes the steps `j` with
/// `levels[j] <= i`, the first ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub seed_prefix: u32,
    pub levels: Vec<u32>,
    pub words: Vec<u32>,
}

impl Chunk {
    /// Bytes the chunk takes in a payload: its counts (u32 seed prefix, u32 word count, u16
    /// level count), its levels ([`Chunk::level_bytes`]) and its words.
    pub fn stored_bytes(&self) -> usize {
        10 + self.level_bytes().len() + 4 * self.words.len()
    }

    /// The levels as stored: each one's difference from the one before (the first from 0),
    /// LEB128 (7 bits a byte, low first, the high bit set on all but the last byte). Levels
    /// that fall are not representable and come out as 0 differences.
    pub fn level_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.levels.len());
        let mut last = 0u32;
        for &l in &self.levels {
            let mut d = l.saturating_sub(last);
            last = l;
            loop {
                let b = (d & 0x7f) as u8;
                d >>= 7;
                if d == 0 {
                    out.push(b);
                    break;
                }
                out.push(b | 0x80);
            }
        }
        out
    }

    /// The steps of the plan image `i` of the chunk takes.
    pub fn steps_of(&self, i: usize) -> usize {
        self.levels.iter().filter(|&&l| l as usize <= i).count()
    }
}

/// The precisions a group's bins go through while a chunk warms up, below `latent_bits`.
const WARM_UP_BITS: [u32; 3] = [3, 6, 10];

/// How a chunk warms up: the steps, each raising one latent group to a precision (bits of its
/// bins), in the order images take them. All groups top first at 3 bits, then at 6, then 10,
/// then `latent_bits` (of the sequences tried on an 8-epoch hierarchical model of
/// Fashion-MNIST, from 1-2-4-8 to 3-6, this one coded closest to the −ELBO).
#[derive(Debug, Clone)]
pub struct Plan {
    dims: Vec<usize>,
    steps: Vec<(usize, u32)>,
}

impl Plan {
    pub fn new(dims: &[usize], latent_bits: u32) -> Plan {
        let mut steps = Vec::new();
        for b in WARM_UP_BITS
            .into_iter()
            .filter(|&b| b < latent_bits)
            .chain([latent_bits])
        {
            steps.extend((0..dims.len()).map(|g| (g, b)));
        }
        Plan {
            dims: dims.to_vec(),
            steps,
        }
    }

    /// The number of steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// Whether the plan has no step (a model without latent groups).
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Each group's precision after the first `k` steps: 0 where no step has reached it (the
    /// group at its prior means).
    pub fn precisions(&self, k: usize) -> Vec<u32> {
        let mut out = vec![0; self.dims.len()];
        for &(g, b) in &self.steps[..k.min(self.steps.len())] {
            out[g] = b;
        }
        out
    }

    /// How many steps the next image of a chunk takes: the most whose pops (at most `b` bits
    /// per value at precision `b`) the bits its predecessors left on the stack (`avail`) pay
    /// for; never fewer than the image before (`at_least`), and at least the first step (the
    /// top group at 3 bits, from the seed for a chunk's first image: a few bits that bring the
    /// image much of the way from its prior means to its posterior).
    pub fn affordable(&self, avail: f64, at_least: usize) -> usize {
        // The coder's state words are not the images' bits.
        let mut budget = avail - 64.0;
        let mut bits = vec![0u32; self.dims.len()];
        let mut k = 0;
        for &(g, b) in &self.steps {
            budget -= (self.dims[g] as u64 * u64::from(b - bits[g])) as f64;
            if budget < 0.0 {
                break;
            }
            bits[g] = b;
            k += 1;
        }
        k.max(at_least).max(1).min(self.steps.len())
    }
}
