//! The load benchmark harness.

fn main() {}
