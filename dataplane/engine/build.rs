//! Compiles the XDP steering program (`src/xdp/steer.bpf.c`) with clang into OUT_DIR, where
//! `xdp::STEER_OBJECT` embeds it with `include_bytes!`. Needs clang and libbpf's headers
//! (Debian: `apt-get install clang libbpf-dev`); `CLANG` overrides the compiler.

use std::{env, path::PathBuf, process::Command};

fn main() {
    let source = "src/xdp/steer.bpf.c";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    // The asm/ headers that linux/bpf.h pulls in live under the multiarch include directory.
    let multiarch = format!("-I/usr/include/{}-linux-gnu", env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default());

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror", &multiarch, "-c", source, "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|err| panic!("cannot run `{clang}` to compile {source}: {err}; install clang and libbpf-dev or set CLANG"));
    assert!(status.success(), "`{clang}` failed to compile {source} ({status}); see the messages above");
}
