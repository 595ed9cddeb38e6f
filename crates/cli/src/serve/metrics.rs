//! `GET /metrics`: the server's counters and the engine's latency histograms (time to first
//! token, time per output token) in Prometheus' text format.

use std::fmt::Write as _;

use ferrolm_engine::Histogram;

/// Appends `h` as the histogram `name` with its help line.
pub fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    let mut cumulative = 0;
    for (i, count) in h.counts().into_iter().enumerate() {
        cumulative += count;
        let le = Histogram::BOUNDS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), ToString::to_string);
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let sum = h.sum_seconds();
    let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
}

/// Appends a counter or gauge with its help line.
pub fn scalar(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_the_sum_is_kept() {
        let h = Histogram::default();
        for s in [0.0005, 0.02, 0.02, 3.0, 100.0] {
            h.observe(s);
        }
        let mut out = String::new();
        histogram(&mut out, "t", "help", &h);
        assert!(out.contains("# TYPE t histogram"));
        assert!(out.contains("t_bucket{le=\"0.001\"} 1\n"));
        assert!(out.contains("t_bucket{le=\"0.025\"} 3\n"));
        assert!(out.contains("t_bucket{le=\"2.5\"} 3\n"));
        assert!(out.contains("t_bucket{le=\"5\"} 4\n"));
        assert!(out.contains("t_bucket{le=\"+Inf\"} 5\n"));
        assert!(out.contains("t_count 5\n"));
        assert!(out.contains("t_sum 103.0405\n"), "{out}");
    }
}
