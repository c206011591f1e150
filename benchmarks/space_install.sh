#!/usr/bin/env bash
# What a Hugging Face Space installs, resolved with pip's dry run (`pip install --dry-run --report`),
# and how long the README's install takes here, before and after a change to the requirements.
#
#   bash benchmarks/space_install.sh [BEFORE_REV] [ROUNDS]
#   WHEELS=DIR bash benchmarks/space_install.sh 8e742e7 3     (DIR holds torch 2.13.0+cpu's wheel)
#
# 1. requirements.txt alone, resolved from PyPI as a clean machine would (--isolated: no local
#    wheel folders or config): the torch it picks and its nvidia-* packages, with download sizes.
# 2. pre-requirements.txt, as the Space installs it first, with PyTorch's CPU index. Where
#    download.pytorch.org cannot be reached, WHEELS names a folder holding the same file,
#    torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl, and a local index serving it stands in
#    for PyTorch's (--retries 0 makes the unreachable one fail at once).
# 3. requirements.txt once that torch is installed: what else the Space installs.
# 4. The README's install command in fresh virtual environments, BEFORE_REV's requirements and the
#    working tree's alternating (each first in every other round), ROUNDS times each (pip's cache
#    warm), in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
before=${1:-HEAD}
rounds=${2:-2}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export PIP_DISABLE_PIP_VERSION_CHECK=1
python3 -m venv "$work/resolver"
pip="$work/resolver/bin/pip"

summary() {  # summary REPORT.json: packages, torch's version, nvidia-* count, download size
  "$work/resolver/bin/python" - "$1" <<'PY'
import json, sys, urllib.request
report = json.load(open(sys.argv[1]))["install"]
names = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in report}
size = 0
for item in report:
    url = item["download_info"]["url"]
    if url.startswith("https://files.pythonhosted.org/"):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        request = urllib.request.Request(f"https://pypi.org/simple/{name}/",
                                         headers={"Accept": "application/vnd.pypi.simple.v1+json"})  # PEP 691
        with urllib.request.urlopen(request, timeout=30) as r:
            size += next((f.get("size") or 0 for f in json.load(r)["files"] if f["url"] == url), 0)
    elif url.startswith("https://download.pytorch.org/"):  # PyTorch's CPU index: the file's own length
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=30) as r:
            size += int(r.headers.get("Content-Length") or 0)
    elif url.startswith("file://"):
        import os
        size += os.path.getsize(urllib.request.url2pathname(url[len("file://"):]))
nvidia = sorted(n for n in names if n.startswith("nvidia"))
print(f"  {len(names)} packages to install; torch: {names.get('torch', 'already installed')}; "
      f"nvidia-* packages: {len(nvidia)}; download size {size / 1e9:.2f} GB")
PY
}

echo "1. requirements.txt from PyPI, clean:"
"$pip" install --isolated --quiet --dry-run --ignore-installed --report "$work/1.json" -r requirements.txt 2>/dev/null
summary "$work/1.json"

echo "2. pre-requirements.txt (the Space's first install):"
if [ -n "${WHEELS:-}" ]; then  # a local index serving the CPU wheel stands in for PyTorch's
  index="$work/index/whl/cpu/torch"
  mkdir -p "$index"
  wheel=$(ls "$WHEELS"/torch-2.13.0+cpu-*.whl | head -1)
  printf '<a href="file://%s">%s</a>\n' "$wheel" "$(basename "$wheel")" > "$index/index.html"
  cpu_index="file://$work/index/whl/cpu"
  torch_cpu=("$wheel")
else
  cpu_index=https://download.pytorch.org/whl/cpu
  torch_cpu=(--index-url "$cpu_index" torch==2.13.0+cpu)
fi
"$pip" install --isolated --retries 0 --quiet --dry-run --ignore-installed --report "$work/2.json" \
  --extra-index-url "$cpu_index" -r pre-requirements.txt 2>/dev/null
summary "$work/2.json"

echo "3. requirements.txt after it (torch 2.13.0+cpu installed):"
"$pip" install --isolated --quiet --no-deps "${torch_cpu[@]}" 2>/dev/null
"$pip" install --isolated --quiet --dry-run --report "$work/3.json" -r requirements.txt 2>/dev/null
summary "$work/3.json"

echo "4. README install (pip install -r requirements.txt -r requirements-dev.txt) in a fresh venv, seconds:"
git show "$before:requirements.txt" > "$work/before-requirements.txt"
for round in $(seq "$rounds"); do
  order="before after"
  [ $((round % 2)) -eq 0 ] && order="after before"  # each side goes first as often: the second install of a pair
  for which in $order; do                          # runs while the first one's files are still being written out
    req=requirements.txt
    [ "$which" = before ] && req="$work/before-requirements.txt"
    rm -rf "$work/venv" && python3 -m venv "$work/venv"
    start=$(date +%s.%N)
    "$work/venv/bin/pip" install --quiet -r "$req" -r requirements-dev.txt 2> "$work/pip.log" || { cat "$work/pip.log"; exit 1; }
    echo "  round $round, $which ($([ "$which" = before ] && echo "$before" || echo "working tree")): $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.1f')"
  done
done
