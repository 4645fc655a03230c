//! Sampling ranks with Zipf-like (power-law) weights.

use rand::Rng;

/// Ranks 0..n with weight (rank + 1)^-exponent.
pub struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    /// A sampler over `n` ranks.
    pub fn new(n: usize, exponent: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (0..n)
            .map(|rank| {
                total += ((rank + 1) as f64).powf(-exponent);
                total
            })
            .collect();
        Self { cumulative }
    }

    /// One rank.
    pub fn sample(&self, rng: &mut impl Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = rng.random::<f64>() * total;
        self.cumulative
            .partition_point(|c| *c < x)
            .min(self.cumulative.len().saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn low_ranks_are_drawn_far_more_often_and_every_rank_is_possible() {
        let zipf = Zipf::new(1000, 1.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut counts = vec![0u32; 1000];
        for _ in 0..100_000 {
            counts[zipf.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > 10 * counts[99].max(1));
        assert!(counts[500..].iter().sum::<u32>() > 0);
    }
}
