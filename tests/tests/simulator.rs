//! The simulator's seeds, in CI. `SIM_SEED=<n>` runs one seed (a replay);
//! `SIM_SEEDS=<n>` changes how many run (default 200).

use engine::backend::BackendKind;
use tests::sim::{Options, morango_144, run};

const STEPS: usize = 400;

#[test]
fn every_seed_is_safe_and_converges() {
    if let Ok(seed) = std::env::var("SIM_SEED") {
        let seed: u64 = seed.parse().expect("SIM_SEED is a number");
        match run(Options { seed, steps: STEPS }) {
            Ok(report) => println!("{report:?}"),
            Err(failure) => panic!("{failure}"),
        }
        return;
    }
    let seeds: u64 = std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
    let mut totals = tests::sim::Report::default();
    for seed in 0..seeds {
        match run(Options { seed, steps: STEPS }) {
            Ok(report) => {
                totals.writes += report.writes;
                totals.syncs_completed += report.syncs_completed;
                totals.syncs_failed += report.syncs_failed;
                totals.dropped += report.dropped;
                totals.duplicated += report.duplicated;
                totals.crashes += report.crashes;
                totals.evicted += report.evicted;
                totals.conflicts += report.conflicts;
                for (k, v) in report.failures {
                    *totals.failures.entry(k).or_default() += v;
                }
            }
            Err(failure) => panic!("{failure}"),
        }
    }
    println!("{seeds} seeds: {totals:?}");
    // The faults must actually happen, or the seeds prove nothing.
    assert!(totals.dropped > 0 && totals.duplicated > 0 && totals.crashes > 0 && totals.syncs_failed > 0);
    assert!(totals.syncs_completed > seeds && totals.conflicts > 0);
    // Write-only nodes evicted what the central acknowledged.
    assert!(totals.evicted > 0);
}

#[test]
fn morango_issue_144_single_user_data_reaches_a_third_device() {
    for kind in [BackendKind::Redb, BackendKind::Sled] {
        if let Err(e) = morango_144(kind) {
            panic!("{kind:?}: {e}");
        }
    }
}
