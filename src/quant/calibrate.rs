//! Calibration for static int8 quantization: the input range that loses least.
//!
//! A layer's inputs over a calibration set go into a histogram over their whole range; the
//! range kept is the one whose quantization error over that histogram is least: the rounding
//! error of the values inside it (`scale² / 12` each) plus the clipping error of those beyond
//! it (their squared distance to its ends). The whole range of a set with a few extreme values
//! is coarse for all the others; this trades those few for everyone's resolution, as PyTorch's
//! `HistogramObserver` does (with an exhaustive search over the histogram's edges here, where
//! PyTorch shrinks the range greedily).

/// Bins of a calibration histogram (as PyTorch's `HistogramObserver`).
pub(crate) const BINS: usize = 2048;

/// Counts of values over `[lo, hi]` (`lo ≤ 0 ≤ hi`) in [`BINS`] equal bins.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    lo: f64,
    hi: f64,
    counts: Vec<u64>,
}

impl Histogram {
    /// An empty histogram over `[min(lo, 0), max(hi, 0)]`.
    pub fn new(lo: f32, hi: f32) -> Histogram {
        Histogram {
            lo: f64::from(lo.min(0.0)),
            hi: f64::from(hi.max(0.0)),
            counts: vec![0; BINS],
        }
    }

    /// Counts `values`; those outside the histogram's range count in its end bins.
    pub fn add(&mut self, values: impl Iterator<Item = f32>) {
        let width = self.hi - self.lo;
        if width <= 0.0 {
            self.counts[0] += values.count() as u64;
            return;
        }
        let per = BINS as f64 / width;
        for v in values {
            let bin = ((f64::from(v) - self.lo) * per) as usize; // saturates below 0
            self.counts[bin.min(BINS - 1)] += 1;
        }
    }

    /// The range `[a, b]`, with `a ≤ 0 ≤ b` on the histogram's bin edges, whose quantization
    /// error to `levels + 1` codes over the counted values is least.
    pub fn best_range(&self, levels: u8) -> [f32; 2] {
        let width = (self.hi - self.lo) / BINS as f64;
        if width <= 0.0 {
            return [self.lo as f32, self.hi as f32];
        }
        let edge = |i: usize| self.lo + i as f64 * width;
        // Prefix sums of n, n·c and n·c² over the bins (c: a bin's centre), so that each
        // candidate's error takes a few operations.
        let mut prefix = vec![[0f64; 3]; BINS + 1];
        for (i, &n) in self.counts.iter().enumerate() {
            let (n, c) = (n as f64, edge(i) + width / 2.0);
            let [p0, p1, p2] = prefix[i];
            prefix[i + 1] = [p0 + n, p1 + n * c, p2 + n * c * c];
        }
        let sum = |from: usize, to: usize| {
            let ([a0, a1, a2], [b0, b1, b2]) = (prefix[from], prefix[to]);
            [b0 - a0, b1 - a1, b2 - a2]
        };
        // Σ n (x − c)² over bins `from..to`.
        let squares = |from: usize, to: usize, x: f64| {
            let [n, nc, ncc] = sum(from, to);
            (x * x).mul_add(n, ncc) - 2.0 * x * nc
        };
        // The edges that hold 0 on each side: `a = edge(s)` with `s ≤ zero`, `b = edge(e)` with
        // `e ≥ zero_hi`.
        let zero = ((-self.lo / width).floor() as usize).min(BINS);
        let zero_hi = ((-self.lo / width).ceil() as usize).min(BINS);
        let steps = f64::from(levels);
        let mut best = (f64::INFINITY, 0, BINS);
        for s in 0..=zero {
            let a = edge(s).min(0.0);
            let below = squares(0, s, a);
            for e in zero_hi.max(s + 1)..=BINS {
                let b = edge(e).max(0.0);
                let scale = (b - a) / steps;
                let [inside, ..] = sum(s, e);
                let error = below + squares(e, BINS, b) + inside * scale * scale / 12.0;
                if error < best.0 {
                    best = (error, s, e);
                }
            }
        }
        let (_, s, e) = best;
        [edge(s).min(0.0) as f32, edge(e).max(0.0) as f32]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_extreme_value_is_clipped_as_far_as_the_error_says() {
        // A million values spread over [0, 1] and `n` at 100. With the range [0, b], clipping
        // costs n (100 − b)², rounding about 10⁶ (b / 255)² / 12 (the values in [0, 1] are few
        // against that), least at b = 100 n / (n + 10⁶ / (12 · 255²)).
        for n in [1usize, 100] {
            let mut h = Histogram::new(0.0, 100.0);
            h.add((0..1_000_000).map(|i| i as f32 / 1_000_000.0));
            h.add(std::iter::repeat_n(100.0, n));
            let [a, b] = h.best_range(255);
            let n = n as f64;
            let want = 100.0 * n / (n + 1e6 / (12.0 * 255.0 * 255.0));
            assert_eq!(a, 0.0);
            // Within a bin or two of the continuous optimum.
            assert!((f64::from(b) - want).abs() < 0.1, "{b} against {want}");
        }
        // Without the outliers the whole range is kept.
        let mut h = Histogram::new(0.0, 1.0);
        h.add((0..10_000).map(|i| i as f32 / 10_000.0));
        let [a, b] = h.best_range(255);
        assert_eq!(a, 0.0);
        assert!(b > 0.99, "{b}");
    }

    #[test]
    fn the_range_holds_zero_and_a_flat_histogram_keeps_its_ends() {
        let mut h = Histogram::new(-3.0, 1.0);
        h.add((0..4_000).map(|i| i as f32 / 1_000.0 - 3.0));
        let [a, b] = h.best_range(255);
        assert!(a <= 0.0 && b >= 0.0);
        assert!(a < -2.9 && b > 0.99, "[{a}, {b}]");
        // All positive: 0 stays inside all the same.
        let mut h = Histogram::new(2.0, 5.0);
        h.add((0..1_000).map(|i| 2.0 + i as f32 / 333.0));
        let [a, b] = h.best_range(255);
        assert_eq!(a, 0.0);
        assert!(b > 4.9, "{b}");
        // Nothing but zeros.
        let mut h = Histogram::new(0.0, 0.0);
        h.add(std::iter::repeat_n(0.0, 50));
        assert_eq!(h.best_range(255), [0.0, 0.0]);
    }
}
