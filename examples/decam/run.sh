#!/usr/bin/env bash
# Worked example on real data: the 9 DECam exposures of ../shared/data/decam-testcase4.
#
#   bash examples/decam/run.sh OUT [--model MODEL] [--data DIR] [--catalogue FILE]
#
# 1. builds a galaxy catalogue from the exposures (build_catalogue.py: detection on their
#    stack, single-Sersic fits with lumos's renderer and the PSFEx PSF) -> OUT/catalogue.fits
#    (skipped with --catalogue FILE);
# 2. measures every exposure with `lumos measure --survey decam.toml` and its PSFEx model,
#    weight map and mask, with the network (MODEL, default the shipped lumos-decam) and with
#    forced aperture photometry -> OUT/lumos/*.fits, OUT/aperture/*.fits;
# 3. stacks them into OUT/lumos.fits and OUT/aperture.fits (one row per galaxy and exposure)
#    and prints D (Eq. 19) over same-band pairs (combine.py), then draws OUT/stamps.png and
#    OUT/pdfs.png (plots.py).
# Works from any directory. Python: $LUMOS_PYTHON if set, else the checkout's .venv (set up
# by the repository's run.sh when it is missing).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)

usage() { echo "usage: bash run.sh OUT [--model MODEL] [--data DIR] [--catalogue FILE]" >&2; exit 2; }
[ $# -ge 1 ] || usage
OUT=$1
shift
MODEL=$REPO/src/lumos/data/model/lumos-decam
DATA=$REPO/../shared/data/decam-testcase4
CATALOGUE=
while [ $# -gt 0 ]; do
    case "$1" in
        --model) MODEL=$2; shift 2 ;;
        --data) DATA=$2; shift 2 ;;
        --catalogue) CATALOGUE=$2; shift 2 ;;
        *) usage ;;
    esac
done
[ -d "$DATA/images" ] || { echo "run.sh: no DECam data in $DATA (give --data DIR)" >&2; exit 1; }

if [ -n "${LUMOS_PYTHON:-}" ]; then
    PY=$LUMOS_PYTHON
else
    [ -x "$REPO/.venv/bin/python" ] || bash "$REPO/run.sh" lumos --help > /dev/null
    PY=$REPO/.venv/bin/python
fi
lumos() { "$PY" -c "import sys; from lumos.cli import main; sys.exit(main())" "$@"; }

mkdir -p "$OUT/lumos" "$OUT/aperture"
if [ -z "$CATALOGUE" ]; then
    CATALOGUE=$OUT/catalogue.fits
    "$PY" -W ignore "$HERE/build_catalogue.py" "$DATA" "$CATALOGUE"
fi

"$PY" "$HERE/exposures.py" "$DATA" > "$OUT/exposures.tsv"
while IFS=$'\t' read -r image weight mask psf band zpt exptime; do
    name=$(basename "$image" .fits)
    common=("$image" "$CATALOGUE" --survey "$HERE/decam.toml" --psf "$psf"
            --weight "$weight" --mask "$mask" --workers 1)
    echo "run.sh: $name ($band)" >&2
    lumos measure "${common[@]}" --model "$MODEL" --prior population \
        --out "$OUT/lumos/$name.fits" 2> >(grep -v "WARNING\|RADECSYS\|datfix\|^$" >&2)
    lumos measure "${common[@]}" --method aperture \
        --out "$OUT/aperture/$name.fits" 2> >(grep -v "WARNING\|RADECSYS\|datfix\|^$" >&2)
done < "$OUT/exposures.tsv"

"$PY" "$HERE/combine.py" "$OUT"
"$PY" -W ignore "$HERE/plots.py" "$OUT" > /dev/null || echo "run.sh: plots skipped" >&2
