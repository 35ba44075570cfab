//! A long simulator campaign: `cargo run -p tests --release --bin sim -- [--seeds N] [--from S] [--steps K]`.
//! Prints progress and the first failure with its seed.

use std::time::Instant;

use tests::sim::{Options, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut seeds, mut from, mut steps) = (10_000u64, 0u64, 400usize);
    while let Some(flag) = args.next() {
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (flag.as_str(), value) {
            ("--seeds", Some(v)) => seeds = v,
            ("--from", Some(v)) => from = v,
            ("--steps", Some(v)) => steps = v as usize,
            _ => {
                eprintln!("usage: sim [--seeds N] [--from S] [--steps K]");
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    let (mut writes, mut syncs, mut crashes, mut evicted) = (0, 0, 0, 0);
    for seed in from..from + seeds {
        match run(Options { seed, steps }) {
            Ok(report) => {
                writes += report.writes;
                syncs += report.syncs_completed;
                crashes += report.crashes;
                evicted += report.evicted;
            }
            Err(failure) => {
                eprintln!("{failure}");
                std::process::exit(1);
            }
        }
        let done = seed - from + 1;
        if done % 500 == 0 {
            println!("{done} seeds in {:.0?}", started.elapsed());
        }
    }
    println!(
        "{seeds} seeds ({from}..{}) of {steps} steps passed in {:.1?}: {writes} writes, {syncs} completed syncs, {crashes} crashes, {evicted} evicted",
        from + seeds,
        started.elapsed()
    );
}
