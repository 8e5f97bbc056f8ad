#!/usr/bin/env bash
# Builds smtpbox for appliances: a stripped, static, panic=unwind binary per
# target, with std rebuilt for size on nightly (README "Building for an
# appliance").
#
#   scripts/cross.sh [TARGET...]       # default: all five musl targets
#
# Targets: x86_64-unknown-linux-musl aarch64-unknown-linux-musl
#          armv7-unknown-linux-musleabihf mips-unknown-linux-musl
#          mipsel-unknown-linux-musl, and x86_64-unknown-linux-gnu (the
#          glibc dynamic binary built the same way, for comparison).
#
# Installs what is missing: the nightly toolchain with rust-src (std is
# built from source, so no prebuilt std per target is needed: armv7's
# download fails and the MIPS targets are tier 3), zig from the Python
# package index (C compiler for ring, linker and musl libc for every
# target) and cargo-zigbuild. Builds the server and examples/unwind (the
# unwinding check .ci/run runs under qemu) with the `appliance` profile.
# Prints one line per target: TARGET PATH SIZE.
set -euo pipefail
cd "$(dirname "$0")/.."

all=(x86_64-unknown-linux-musl aarch64-unknown-linux-musl
  armv7-unknown-linux-musleabihf mips-unknown-linux-musl
  mipsel-unknown-linux-musl)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

say() { echo "cross.sh: $*" >&2; }

# Tools, installed only when missing.
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  say "installing the nightly toolchain"
  rustup toolchain install nightly --profile minimal --component rust-src
fi
sysroot=$(rustup run nightly rustc --print sysroot)
if [ ! -d "$sysroot/lib/rustlib/src/rust/library" ]; then
  say "adding rust-src to nightly"
  rustup component add rust-src --toolchain nightly
fi
# llvm-objcopy, which knows every target's ELF (Debian's objcopy is x86 only).
objcopy="$sysroot/lib/rustlib/$(rustup run nightly rustc -vV | sed -n 's/^host: //p')/bin/llvm-objcopy"
if [ ! -x "$objcopy" ]; then
  say "adding llvm-tools to nightly"
  rustup component add llvm-tools --toolchain nightly
fi
needs_zig=0
for t in "${targets[@]}"; do
  case "$t" in *-musl*) needs_zig=1 ;; esac
done
if [ $needs_zig = 1 ]; then
  if ! command -v zig >/dev/null 2>&1 && ! python3 -m ziglang version >/dev/null 2>&1; then
    say "installing zig (pip install ziglang)"
    python3 -m pip install --quiet ziglang 2>/dev/null ||
      python3 -m pip install --quiet --break-system-packages ziglang
  fi
  if ! cargo zigbuild --help >/dev/null 2>&1; then
    say "installing cargo-zigbuild"
    cargo install --locked cargo-zigbuild
  fi
fi

for t in "${targets[@]}"; do
  # panic=unwind is kept (Cargo.toml): a panic ends one session, not the
  # server. std is rebuilt with the same opt-level "z", fat LTO and
  # optimize_for_size.
  flags=(-Z build-std=std,panic_unwind -Z build-std-features=optimize_for_size)
  # A panic inside a Drop impl aborts instead of unwinding on (none of
  # smtpbox's drops can panic; one during an unwind aborts anyway): fewer
  # landing pads, 28 KB less on x86_64. Session panics still unwind.
  # Panic messages keep their text but not their file:line:col (36 KB).
  # Derived Debug impls print the type or variant name only, not their
  # fields: nothing smtpbox logs or replies goes through one (its `{:?}`
  # are of strings and of rustls enums with hand-written Debug impls),
  # but rustls's own debug/trace records and a few of its error texts do.
  rustflags="-Z panic-in-drop=abort -Z location-detail=none -Z fmt-debug=shallow"
  # Unwind tables only for the functions a panic can pass through: the
  # compiler still gives one to every function that may unwind, and drops
  # them for those it proves cannot (nounwind). 21 KB less on x86_64;
  # examples/unwind checks that a session-like panic still unwinds.
  rustflags="$rustflags -C force-unwind-tables=no"
  # ring's C code without unwind tables: it never calls back into
  # Rust, so no panic unwinds through it. Its assembly keeps its CFI.
  cflags="-fno-asynchronous-unwind-tables -fno-unwind-tables"
  case "$t" in
    # Thumb-2, as Android builds armv7: every ARMv7-A core runs it, and
    # the code is 30% smaller than ARM's 4-byte encoding (957 KB -> 698 KB
    # binary). rustc calls thumb-mode an unstable feature (a warning); the
    # armv7 Android targets have it on by default. ring's assembly picks
    # its own instruction set and interworks.
    armv7-*)
      rustflags="$rustflags -C target-feature=+thumb-mode"
      cflags="$cflags -mthumb"
      ;;
  esac
  export "CFLAGS_${t//-/_}=$cflags"
  case "$t" in
    *-musl*)
      # musl targets link statically by default; zig brings musl's start
      # files and libc for targets without a prebuilt std.
      rustflags="$rustflags -C link-self-contained=no"
      build=(zigbuild)
      ;;
    *-linux-gnu)
      # Relative relocations packed (DT_RELR, glibc 2.36 and later; the
      # binary needs the build machine's glibc anyway): .rela.dyn goes
      # from 31 KB to under 1 KB.
      rustflags="$rustflags -C link-arg=-Wl,-z,pack-relative-relocs"
      build=(build)
      ;;
    *) say "unknown target $t"; exit 2 ;;
  esac
  case "$t" in
    # A static PIE crashes on MIPS (under qemu, before the first log line);
    # a plain static executable works.
    mips*) rustflags="$rustflags -C relocation-model=static" ;;
  esac
  say "building $t"
  # RUSTFLAGS apply to the target only (--target is given), not build scripts.
  RUSTFLAGS="$rustflags" cargo +nightly "${build[@]}" --profile appliance \
    --target "$t" "${flags[@]}" --bin smtpbox --example unwind
  bin="target/$t/appliance/smtpbox"
  case "$t" in
    # LLVM writes a .pdr (procedure descriptors, ~140 KB) on 32-bit MIPS:
    # not loaded, only read by old debuggers, and strip keeps it.
    mips*)
      for f in "$bin" "target/$t/appliance/examples/unwind"; do
        "$objcopy" --remove-section=.pdr "$f"
      done
      ;;
  esac
  case "$t" in
    *-musl*)
      # Static means no interpreter, whatever the linker did.
      if readelf -l "$bin" | grep -q 'Requesting program interpreter'; then
        say "$bin is not static"
        exit 1
      fi
      ;;
  esac
  echo "$t $bin $(stat -c %s "$bin")"
done
