//! `ferry bench --quick` in CI, so the benchmark never rots: every scenario
//! runs at a tiny size on both backends and reports sane figures. No timing
//! is asserted (these machines are shared and noisy).

use std::process::Command;

#[test]
fn every_benchmark_scenario_runs_at_a_tiny_size() {
    let out = Command::new(tests::cli::ferry_binary())
        .args(["--json", "bench", "--quick"])
        .output()
        .expect("run ferry bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let figures: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect();
    for backend in ["redb", "sled"] {
        for scenario in
            ["initial", "no-op", "incremental", "bidirectional", "import", "3 devices at once", "load: 3 devices, 3 s"]
        {
            let f = figures
                .iter()
                .find(|f| f["backend"] == backend && f["scenario"] == scenario)
                .unwrap_or_else(|| panic!("no {scenario} figure for {backend}"));
            if scenario == "no-op" {
                assert_eq!(f["changes"], 0, "{f}");
                assert!(f["bytes_sent"].as_u64().expect("n") + f["bytes_received"].as_u64().expect("n") < 1024, "{f}");
            } else {
                assert!(f["changes"].as_u64().expect("n") > 0, "{f}");
            }
            if scenario == "initial" {
                assert!(f["bytes_per_record"].as_f64().expect("n") < 300.0, "{f}");
            }
            if scenario != "import" {
                assert!(f["peak_rss_kb"]["central"].as_u64().expect("n") > 0, "{f}");
            }
        }
    }
}
