//! `loadgen wake`: how late a thread that sleeps on this machine wakes up.
//!
//! Every hop of a request that finds its process asleep waits for that process to be woken:
//! on the VMs we measure on, for the host to run a halted virtual core again. That wait is a
//! property of the host, not of the services, and it differs from host to host by an order of
//! magnitude at the tail. Measured on the idle machine before the scenarios, it says how much of
//! a run's tail any request would pay there (docs/PERFORMANCE.md, "Session 32").

use crate::driver::{Latency, latency, new_histogram, precise_sleeps, record};
use std::time::{Duration, Instant};

/// Sleeps `samples` times for `interval` each and returns how late each sleep ended, as
/// percentiles. Its sleeps are precise as the driver's clock's are ([`precise_sleeps`]), so that
/// what is measured is the machine's wake-up rather than the kernel's permitted slack.
pub fn lateness(interval: Duration, samples: usize) -> anyhow::Result<Latency> {
    anyhow::ensure!(
        !interval.is_zero() && samples > 0,
        "the interval and the number of samples must be positive"
    );
    precise_sleeps();
    let mut histogram = new_histogram()?;
    for _ in 0..samples {
        let deadline = Instant::now() + interval;
        std::thread::sleep(interval);
        record(
            &mut histogram,
            Instant::now().saturating_duration_since(deadline),
        )?;
    }
    Ok(latency(&histogram))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_measured_is_the_lateness_not_the_sleep() {
        // Had the sleep itself been counted, every sample would be at least 20 ms.
        let late = lateness(Duration::from_millis(20), 5).unwrap();
        assert!(late.p50 < 20.0, "{late:?}");
        assert!(late.max >= late.p50 && late.p50 >= 0.0, "{late:?}");
    }

    #[test]
    fn nothing_to_measure_is_refused() {
        assert!(lateness(Duration::ZERO, 10).is_err());
        assert!(lateness(Duration::from_millis(1), 0).is_err());
    }
}
