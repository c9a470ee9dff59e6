#!/bin/bash
# augment — seva-augment against the peer (torchvision on PIL, one image at
# a time: ../shared/bench/torch_augment.py) on the same 64 JPEGs, real-size
# (640 on the long side, at least 336 on the short one): mocov2 (crops to
# 336) and diffusion with space=pixel. Prints images/s of each and the ratio.
# SEVA_BENCH_THREADS sets seva-augment's -j (default: all cores; the peer's
# torch has 2 threads, its PIL work runs on one).
set -eu
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
PEER=${SEVA_SHARED:-$(cd .. && pwd)/shared}/bench/torch_augment.py
J=${SEVA_BENCH_THREADS:-0}
T=$(mktemp -d "${TMPDIR:-/tmp}/seva-bench.XXXXXX")
trap 'rm -rf "$T"' EXIT

# Photographs from python3-skimage's data folder when installed, else
# generated scenes (smooth gradients, shapes and grain).
$PY - "$T/img" <<'PYEOF'
import glob, os, sys
import numpy as np
from PIL import Image, ImageDraw, ImageFilter
out = sys.argv[1]
os.makedirs(out)
rng = np.random.default_rng(0)
photos = []
try:
    import skimage
    d = os.path.join(os.path.dirname(skimage.__file__), "data")
    for n in ("astronaut.png", "chelsea.png", "coffee.png", "motorcycle_left.png",
              "motorcycle_right.png", "rocket.jpg", "hubble_deep_field.jpg", "retina.jpg",
              "ihc.png", "color.png", "camera.png", "brick.png", "grass.png", "gravel.png",
              "moon.png", "coins.png", "cell.png", "phantom.png"):
        try:
            photos.append(Image.open(os.path.join(d, n)).convert("RGB"))
        except Exception:
            pass
except ImportError:
    pass
def generated(i):
    w, h = 640, 480
    y, x = np.mgrid[0:h, 0:w]
    a = np.stack([128 + 100 * np.sin(x / (40 + i) + i), 128 + 100 * np.cos(y / (30 + i)),
                  (x + y + 7 * i) % 256], -1)
    im = Image.fromarray(a.astype(np.uint8), "RGB")
    dr = ImageDraw.Draw(im)
    for k in range(12):
        x0, y0 = rng.integers(0, w - 80), rng.integers(0, h - 80)
        dr.ellipse([x0, y0, x0 + rng.integers(20, 200), y0 + rng.integers(20, 200)],
                   fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    im = im.filter(ImageFilter.GaussianBlur(1.5))
    g = rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(np.asarray(im) + g, 0, 255).astype(np.uint8), "RGB")
for i in range(64):
    if photos:
        im = photos[i % len(photos)]
        # A different crop of the photo each time, 640 on the long side.
        w, h = im.size
        cw, ch = int(w * rng.uniform(0.75, 1)), int(h * rng.uniform(0.75, 1))
        x0, y0 = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        im = im.crop((x0, y0, x0 + cw, y0 + ch))
        s = 640 / max(im.size)
        im = im.resize((max(336, round(im.width * s)), max(336, round(im.height * s))), Image.BICUBIC)
    else:
        im = generated(i)
    im.save(os.path.join(out, "%06d.jpg" % i), quality=90)
print("images: %s" % ("skimage photographs" if photos else "generated"), file=sys.stderr)
PYEOF
tar -C "$T/img" -cf "$T/in.tar" $(cd "$T/img" && ls)

run_seva() { # RECIPE: prints seconds
	local s e
	s=$(date +%s.%N)
	seva-augment -q -j "$J" -r "$1" -o "$T/out.mp" "$T/in.tar"
	e=$(date +%s.%N)
	echo "$e - $s" | bc -l
}
for kind in mocov2 diffusion; do
	recipe=$kind
	[ $kind = diffusion ] && recipe=diffusion:t=500:space=pixel
	run_seva "$recipe" >/dev/null # warm the page cache
	sec=$(run_seva "$recipe")
	peer=$($PY "$PEER" $kind "$T/img" 336)
	psec=$(echo "$peer" | jq .seconds)
	printf '%-10s seva-augment -j %s: %6.1f images/s   torchvision: %6.1f images/s   ratio %.2fx\n' \
		$kind "$J" "$(echo "64 / $sec" | bc -l)" "$(echo "64 / $psec" | bc -l)" \
		"$(echo "$psec / $sec" | bc -l)"
done
