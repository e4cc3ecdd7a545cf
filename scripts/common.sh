# Sourced by scripts/setup, scripts/lock and scripts/check-latest: where things are, which Python, how to
# get uv, and where the CPU build of torch comes from. Not a command of its own.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCKS="$ROOT/scripts/locks"
TORCH_VERSION="$(sed -n 's/^torch==\([0-9.]*\).*/\1/p' "$LOCKS/torch-cpu.in")"
# The locks are resolved for this interpreter and platform (CI's): CPython 3.11 on Linux x86-64.
LOCK_PYTHON="3.11"
LOCK_PLATFORM="x86_64-manylinux_2_28"
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"

log() { printf '[alignloop setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { printf 'alignloop setup: %s\n' "$*" >&2; exit 1; }

# uv, pinned in scripts/locks/uv.txt, installed with pip's hash checking into a small tool venv.
UV_HOME="${ALIGNLOOP_UV_HOME:-$ROOT/.venv-tools}"
UV="$UV_HOME/bin/uv"
ensure_uv() {
  local want
  want="$(sed -n 's/^uv==\([^ \\]*\).*/\1/p' "$LOCKS/uv.txt")"
  if [ -x "$UV" ] && [ "$("$UV" --version | cut -d' ' -f2)" = "$want" ]; then
    return
  fi
  log "installing uv $want (the installer every locked environment is made with) into ${UV_HOME#"$ROOT"/}"
  "$PYTHON" -m venv "$UV_HOME"
  # pip's own warnings about the machine's configuration (unreadable extra indexes) are noise here
  "$UV_HOME/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$LOCKS/uv.txt" \
    2>"$UV_HOME/pip.log" || { cat "$UV_HOME/pip.log" >&2; die "could not install uv (log above)"; }
}

# Where uv finds torch's CPU build: a folder of wheels that pip is configured with (find-links) when it
# holds the locked file, else PyTorch's CPU index. Prints uv options, one per line. $1 = "alone" to install
# torch by itself (the index replaces PyPI), "beside" to resolve it with everything else.
torch_cpu_source() {
  local dirs dir
  dirs="${PIP_FIND_LINKS:-} $("$PYTHON" -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p")"
  for dir in $dirs; do
    dir="${dir#file://}"
    if compgen -G "$dir/torch-$TORCH_VERSION+cpu-*.whl" >/dev/null; then
      printf -- '--find-links\n%s\n' "$dir"
      return
    fi
  done
  if [ "${1:-alone}" = alone ]; then
    printf -- '--index-url\nhttps://download.pytorch.org/whl/cpu\n'
  else
    printf -- '--extra-index-url\nhttps://download.pytorch.org/whl/cpu\n--index-strategy\nunsafe-best-match\n'
  fi
}

# The project lock this machine uses: the CUDA build of torch where nvidia-smi finds a GPU, else the CPU build.
project_lock() {
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "$LOCKS/project-cuda.txt"
  else
    echo "$LOCKS/project-cpu.txt"
  fi
}

# Whether this interpreter and platform are the ones the locks were resolved for.
lock_fits() {
  "$PYTHON" - "$LOCK_PYTHON" <<'EOF'
import platform, sys
want = sys.argv[1]
ok = f"{sys.version_info[0]}.{sys.version_info[1]}" == want and sys.platform == "linux" and platform.machine() == "x86_64"
sys.exit(0 if ok else 1)
EOF
}

# A fingerprint of files: the setup of an environment is redone when its lock (or pyproject.toml) changes.
fingerprint() { cat "$@" | sha256sum | cut -c1-16; }

# sync_locked VENV LOCK...: make VENV hold exactly what the locks list (hash-checked), then check it.
sync_locked() {
  local venv="$1"; shift
  if [ ! -x "$venv/bin/python" ]; then
    "$UV" venv --quiet --python "$PYTHON" "$venv"
  fi
  "$UV" pip sync --quiet --python "$venv/bin/python" --require-hashes "$@"
}

verify_locked() {
  local venv="$1"; shift
  "$venv/bin/python" "$ROOT/scripts/locks.py" verify "$@" \
    || die "${venv#"$ROOT"/} does not match its lock (above); delete it and run bash scripts/setup again"
}
