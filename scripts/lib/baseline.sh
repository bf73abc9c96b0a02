# Sourced by scripts/bench and scripts/bench-instructions: builds the `bridgehead` binary of an
# earlier commit once, in a temporary git worktree, and caches it under target/bench-baseline/.
#
#   baseline_binary REV   # prints the binary's path; needs ROOT (the checkout) and a `die` function

baseline_binary() {
  local rev=$1 commit bin src
  commit=$(git -C "$ROOT" rev-parse --short "${rev}^{commit}") || die "$rev is not a commit"
  bin=$ROOT/target/bench-baseline/bridgehead-$commit
  if [ ! -x "$bin" ]; then
    src=$ROOT/target/bench-baseline/src-$commit
    rm -rf "$src"
    git -C "$ROOT" worktree prune
    git -C "$ROOT" worktree add --detach "$src" "$commit" >/dev/null
    echo "bench: cargo build --release -p bridgehead at $commit (baseline)" >&2
    (cd "$src" && CARGO_TARGET_DIR=$ROOT/target/bench-baseline/target cargo build --release -p bridgehead >&2) ||
      die "the baseline at $commit does not build"
    cp "$ROOT/target/bench-baseline/target/release/bridgehead" "$bin"
    git -C "$ROOT" worktree remove --force "$src"
  fi
  echo "$bin"
}
