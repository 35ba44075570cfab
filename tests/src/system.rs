//! The machine the tests run on: whether they run as root, and Debian
//! packages installed when missing (as root only, as on CI).

use std::process::{Command, Stdio};

pub fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Installs `packages` with apt-get, for `what`; fails the test when that
/// is not possible, saying what to install by hand.
pub fn apt_install(packages: &[&str], what: &str) {
    let by_hand = format!("{what} needs {}: apt-get install {}", packages.join(" and "), packages.join(" "));
    assert!(is_root(), "{by_hand}");
    let mut install = vec!["install", "-y", "-q"];
    install.extend_from_slice(packages);
    for args in [&["update", "-q"][..], &install[..]] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .expect("run apt-get");
        assert!(status.success(), "apt-get {args:?} failed: {by_hand}");
    }
}
