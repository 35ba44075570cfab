//! The `ferry` binary. Thin: parse the command line, call into `node`.

fn main() {
    println!("ferry {}", env!("CARGO_PKG_VERSION"));
}
