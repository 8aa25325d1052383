#!/usr/bin/env bash
# make bench: the network alone, chexd vs PyTorch vs ONNX Runtime on the same
# weights (the demo model) and the same input, batch 1 and 8, T threads.
# Figures, never pass/fail. Results go to stdout and into docs/PERFORMANCE.md
# (between the bench markers).
#
#   chexd  bin/chex bench (in-process timing, 3 warm-ups then BENCH_RUNS runs);
#          chexd-direct: the same with CHEXD_WINOGRAD=0 (no Winograd 3x3 path)
#          chexd-int8: the same with --precision int8 (int8 convolutions); its
#          worst probability difference to fp32 is measured on real radiographs
#          (../shared/data/xrays if present, else tests/data) with chex classify
#   torch  Debian python3-torch 1.13: eager, and jit.trace+optimize_for_inference
#   ort    npm onnxruntime-node (installed under $BUILD/ort with --ignore-scripts),
#          model exported by tools/export_onnx.py, all graph optimisations
# The machine is shared and noisy, so the peers run in BENCH_ROUNDS alternating
# rounds (chexd, ort, torch, chexd, ...) and each figure is the median of the
# round medians. The fp32 FMA peak is measured by a small loop in the same run.
# Environment: BENCH_THREADS (default: number of CPUs), BENCH_RUNS (per round,
# default 10), BENCH_ROUNDS (default 3), BENCH_SKIP (e.g. "torch-jit ort chexd-direct").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BUILD:=build}" "${BIN:=bin}" "${MODELS:=models}" "${PY:=/usr/bin/python3}"
T=${BENCH_THREADS:-$(nproc)}
RUNS=${BENCH_RUNS:-10}
ROUNDS=${BENCH_ROUNDS:-3}
SKIP=${BENCH_SKIP:-}
MODEL=$MODELS/chexnet-demo.safetensors
W=$BUILD/bench-model
mkdir -p "$W"
skipped() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }

# --- tools: FMA peak loop, stage-split driver, ONNX model, ORT ---
cat > "$W/fma_peak.c" <<'EOF'
/* fp32 FMA peak of T threads: 12 independent FMA chains per thread, each in
 * its own register (an array would be spilled and measure store forwarding). */
#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>
#define CHAINS(T, FMA, SET)                                                              \
    volatile float seed = 0.5f;                                                          \
    T a0 = SET(seed), a1 = SET(seed * 2), a2 = SET(seed * 3), a3 = SET(seed * 4),        \
      a4 = SET(seed * 5), a5 = SET(seed * 6), a6 = SET(seed * 7), a7 = SET(seed * 8),    \
      a8 = SET(seed * 9), a9 = SET(seed * 10), a10 = SET(seed * 11), a11 = SET(seed * 12); \
    const T b = SET(0.999f), c = SET(0.001f);                                            \
    for (long i = 0; i < it; i++) {                                                      \
        a0 = FMA(a0, b, c), a1 = FMA(a1, b, c), a2 = FMA(a2, b, c), a3 = FMA(a3, b, c);  \
        a4 = FMA(a4, b, c), a5 = FMA(a5, b, c), a6 = FMA(a6, b, c), a7 = FMA(a7, b, c);  \
        a8 = FMA(a8, b, c), a9 = FMA(a9, b, c), a10 = FMA(a10, b, c), a11 = FMA(a11, b, c); \
    }
__attribute__((target("avx512f"))) static double run512(long it)
{
    CHAINS(__m512, _mm512_fmadd_ps, _mm512_set1_ps)
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static double run256(long it)
{
    CHAINS(__m256, _mm256_fmadd_ps, _mm256_set1_ps)
    __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)),
                             _mm256_add_ps(_mm256_add_ps(a4, a5), _mm256_add_ps(a6, a7)));
    s = _mm256_add_ps(s, _mm256_add_ps(_mm256_add_ps(a8, a9), _mm256_add_ps(a10, a11)));
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0];
}
int main(int argc, char **argv)
{
    int w512 = argc > 1 && !strcmp(argv[1], "avx512");
    const long it = 50000000;
    double best = 0, sink = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = omp_get_wtime();
#pragma omp parallel reduction(+ : sink)
        sink += w512 ? run512(it) : run256(it);
        double g = omp_get_max_threads() * it * 12.0 * (w512 ? 32 : 16) / (omp_get_wtime() - t0) / 1e9;
        if (g > best) best = g;
    }
    printf("%.1f %g\n", best, sink > 0 ? 0.0 : 1.0);
    return 0;
}
EOF
${CC:-cc} -O2 -fopenmp "$W/fma_peak.c" -o "$W/fma_peak"
source tests/reference/build_driver.sh
build_ref_driver "$W/ref_driver"
ISA=$("$W/ref_driver" --isas | head -1)
PEAK=$(OMP_NUM_THREADS=$T "$W/fma_peak" "$ISA" | cut -d' ' -f1)

"$PY" -c "import numpy as np; np.random.seed(7); \
np.random.randn(8, 3, 224, 224).astype(np.float32).tofile('$W/input8.f32')"
if ! skipped ort; then
  if [ ! -e "$W/ort/node_modules/onnxruntime-node/package.json" ]; then
    mkdir -p "$W/ort"
    (cd "$W/ort" && npm install --silent --ignore-scripts --no-audit --no-fund onnxruntime-node \
      >/dev/null 2>&1) || { echo "bench: npm install onnxruntime-node failed: ORT skipped"; SKIP="$SKIP ort"; }
  fi
  [ -e "$W/model.onnx" ] && [ "$W/model.onnx" -nt "$MODEL" ] ||
    "$PY" tools/export_onnx.py "$MODEL" "$W/model.onnx" >/dev/null 2>&1 ||
    { echo "bench: ONNX export failed: ORT skipped"; SKIP="$SKIP ort"; }
fi
cat > "$W/ort_bench.js" <<'EOF'
// node ort_bench.js MODEL INPUT.f32 BATCH RUNS THREADS -> one JSON line
const ort = require(process.cwd() + '/node_modules/onnxruntime-node');
const fs = require('fs');
(async () => {
  const [model, input, batch, runs, threads] = process.argv.slice(2);
  const n = +batch, per = 3 * 224 * 224;
  const buf = fs.readFileSync(input);
  const all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
  const data = new Float32Array(n * per);
  for (let i = 0; i < n; i++) data.set(all.subarray((i % 8) * per, (i % 8 + 1) * per), i * per);
  const s = await ort.InferenceSession.create(model, {
    graphOptimizationLevel: 'all', intraOpNumThreads: +threads, interOpNumThreads: 1,
    executionMode: 'sequential'});
  const feeds = {input: new ort.Tensor('float32', data, [n, 3, 224, 224])};
  for (let i = 0; i < 3; i++) await s.run(feeds);
  const ms = [];
  for (let i = 0; i < +runs; i++) {
    const t0 = process.hrtime.bigint();
    await s.run(feeds);
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const med = ms.length % 2 ? ms[(ms.length - 1) / 2] : (ms[ms.length / 2 - 1] + ms[ms.length / 2]) / 2;
  console.log(JSON.stringify({median_ms: med, p90_ms: ms[Math.ceil(0.9 * ms.length) - 1],
    peak_rss_mb: process.resourceUsage().maxRSS / 1024}));
})().catch(e => { console.error(e); process.exit(1); });
EOF
cat > "$W/torch_bench.py" <<'EOF'
# torch_bench.py MODEL INPUT.f32 BATCH RUNS THREADS eager|jit -> one JSON line
import json, resource, sys, time
import numpy as np, torch
sys.path.insert(0, "tests/reference")
import chexref
model_path, inp, batch, runs, threads, mode = sys.argv[1:]
batch, runs = int(batch), int(runs)
torch.set_num_threads(int(threads))
model, _ = chexref.torch_model(model_path)
x = np.fromfile(inp, dtype=np.float32).reshape(8, 3, 224, 224)
x = torch.from_numpy(np.ascontiguousarray(x[np.arange(batch) % 8]))
with torch.no_grad():
    if mode == "jit":
        model = torch.jit.optimize_for_inference(torch.jit.trace(model, x))
    for _ in range(3):
        torch.sigmoid(model(x))
    ms = []
    for _ in range(runs):
        t0 = time.perf_counter()
        torch.sigmoid(model(x))
        ms.append((time.perf_counter() - t0) * 1e3)
ms.sort()
print(json.dumps({"median_ms": float(np.median(ms)), "p90_ms": ms[int(np.ceil(0.9 * runs)) - 1],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
EOF

# --- alternating rounds ---
: > "$W/results.jsonl"
peers="chexd"
skipped chexd-int8 || peers="$peers chexd-int8"
skipped chexd-direct || peers="$peers chexd-direct"
skipped ort || peers="$peers ort"
skipped torch || peers="$peers torch"
skipped torch-jit || peers="$peers torch-jit"
for b in 1 8; do
  for r in $(seq "$ROUNDS"); do
    for p in $peers; do
      case $p in
        chexd) out=$("$BIN/chex" bench --model "$MODEL" --batch "$b" --runs "$RUNS" --threads "$T") ;;
        chexd-int8) out=$("$BIN/chex" bench --model "$MODEL" --batch "$b" --runs "$RUNS" \
          --threads "$T" --precision int8 --image tests/data/siim-pneumothorax-sample.dcm) ;;
        chexd-direct) out=$(CHEXD_WINOGRAD=0 "$BIN/chex" bench --model "$MODEL" --batch "$b" \
          --runs "$RUNS" --threads "$T") ;;
        ort) out=$(cd "$W/ort" && node ../ort_bench.js ../model.onnx ../input8.f32 "$b" "$RUNS" "$T") ;;
        torch) out=$("$PY" "$W/torch_bench.py" "$MODEL" "$W/input8.f32" "$b" "$RUNS" "$T" eager) ;;
        torch-jit) out=$("$PY" "$W/torch_bench.py" "$MODEL" "$W/input8.f32" "$b" "$RUNS" "$T" jit) ;;
      esac
      echo "{\"peer\":\"$p\",\"batch\":$b,\"round\":$r,\"r\":$out}" >> "$W/results.jsonl"
      echo "  batch $b round $r $p: $out"
    done
  done
done
# int8 accuracy: every probability of every real radiograph, int8 vs fp32.
XR=../shared/data/xrays
[ -d "$XR" ] || XR=tests/data
mapfile -t xr < <(find "$XR" -maxdepth 1 -type f \( -name '*.png' -o -name '*.jpg' -o -name '*.dcm' \) | LC_ALL=C sort)
: > "$W/int8diff.json"
if ! skipped chexd-int8; then
  "$BIN/chex" classify --model "$MODEL" "${xr[@]}" > "$W/cls32.jsonl" || true
  "$BIN/chex" classify --model "$MODEL" --precision int8 "${xr[@]}" > "$W/cls8.jsonl" || true
  "$PY" - "$W" > "$W/int8diff.json" <<'PY'
import json, sys
w = sys.argv[1]
rd = lambda f: [json.loads(l) for l in open(f"{w}/{f}")]
worst, tot, n = 0.0, 0.0, 0
for a, b in zip(rd("cls32.jsonl"), rd("cls8.jsonl")):
    if "predictions" not in a or "predictions" not in b:
        continue
    for x, y in zip(a["predictions"], b["predictions"]):
        d = abs(x["probability"] - y["probability"])
        worst, tot, n = max(worst, d), tot + d, n + 1
print(json.dumps({"images": n // 14 if n else 0, "worst": worst, "mean": tot / n if n else 0}))
PY
fi
# Per-stage split of chexd (medians of 30 forwards after warm-up).
for b in 1 8; do
  OMP_NUM_THREADS=$T "$W/ref_driver" "$MODEL" "$W/input8.f32" "$b" "$W/stages$b" --runs 30 \
    > "$W/stages$b.json"
done

"$PY" - "$W" "$T" "$PEAK" "$ISA" "$MODEL" <<'EOF'
import json, os, platform, statistics, subprocess, sys, time
w, threads, peak, isa, model = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
rows = [json.loads(l) for l in open(os.path.join(w, "results.jsonl"))]
gflop = 5.666  # DenseNet-121 at 224, multiply-add = 2 FLOP (PyTorch's count)
stages = {b: json.load(open(os.path.join(w, f"stages{b}.json"))) for b in (1, 8)}
gflop = stages[1].get("gflop", gflop)
def agg(peer, b):
    rs = [r["r"] for r in rows if r["peer"] == peer and r["batch"] == b]
    if not rs:
        return None
    return {"median_ms": statistics.median(r["median_ms"] for r in rs),
            "p90_ms": statistics.median(r["p90_ms"] for r in rs),
            "rss": max(r["peak_rss_mb"] for r in rs), "rounds": len(rs)}
peers = [p for p in ("chexd", "chexd-int8", "chexd-direct", "ort", "torch", "torch-jit")
         if agg(p, 1)]
cpu = "unknown CPU"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
out = []
out.append(f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, commit {rev}: {cpu}, "
           f"{os.cpu_count()} CPUs, {threads} threads, chexd ISA {isa}; measured fp32 FMA peak "
           f"{peak:.0f} GFLOP/s ({threads} threads, {isa}); DenseNet-121 = {gflop:.3f} GFLOP/image.")
out.append("")
out.append("| system | batch-1 median (p90) | batch-1 GFLOP/s | % of peak | batch-8 median | "
           "batch-8 img/s | chexd / peer (b1 latency) | chexd / peer (b8 throughput) | peak RSS |")
out.append("|---|---|---|---|---|---|---|---|---|")
base1, base8 = agg("chexd", 1), agg("chexd", 8)
for p in peers:
    a1, a8 = agg(p, 1), agg(p, 8)
    g1 = gflop / (a1["median_ms"] / 1e3)
    ips8 = 8 / (a8["median_ms"] / 1e3)
    r1 = base1["median_ms"] / a1["median_ms"]
    r8 = ips8 and (8 / (base8["median_ms"] / 1e3)) / ips8
    out.append(f"| {p} | {a1['median_ms']:.1f} ms ({a1['p90_ms']:.1f}) | {g1:.0f} | "
               f"{100 * g1 / peak:.0f} % | {a8['median_ms']:.1f} ms | {ips8:.1f} | "
               f"{r1:.2f}x | {r8:.2f}x | {max(a1['rss'], a8['rss']):.0f} MB |")
out.append("")
out.append(f"Medians of {base1['rounds']} alternating rounds. \"chexd / peer (b1 latency)\" is "
           "chexd's latency divided by the peer's (below 1: chexd faster); \"(b8 throughput)\" "
           "is chexd's images/s divided by the peer's (above 1: chexd faster). chexd is fp32.")
i8, o1 = agg("chexd-int8", 1), agg("ort", 1)
if i8:
    dd = open(os.path.join(w, "int8diff.json")).read().strip()
    dd = json.loads(dd) if dd else {}
    rs = [r["r"] for r in rows if r["peer"] == "chexd-int8"]
    bench_d = max(r.get("max_prob_diff_fp32", 0.0) for r in rs)
    line = (f"int8 (chexd-int8): batch-1 {i8['median_ms']:.1f} ms = "
            + (f"{i8['median_ms'] / o1['median_ms']:.2f}x ONNX Runtime's fp32 latency; "
               if o1 else "")
            + f"worst probability difference to chexd fp32 {bench_d:.4f} on the bench's "
            "radiograph (a DICOM outside the calibration set)")
    if dd.get("images"):
        line += (f", {dd['worst']:.4f} (mean {dd['mean']:.4f}) over {dd['images']} real "
                 "radiographs (chex classify, every label)")
    out.append("")
    out.append(line + ".")
out.append("")
out.append("chexd per-stage split (median ms of 30 forwards, ref_driver):")
out.append("")
names = list(stages[1]["stage_ms"].keys())
out.append("| stage | " + " | ".join(names) + " | total |")
out.append("|---|" + "---|" * (len(names) + 1))
for b in (1, 8):
    sm = stages[b]["stage_ms"]
    tot = sum(sm.values())
    out.append(f"| batch {b} ms | " + " | ".join(f"{sm[n]:.2f}" for n in names) + f" | {tot:.1f} |")
    out.append(f"| batch {b} % | " + " | ".join(f"{100 * sm[n] / tot:.0f}" for n in names) + " | 100 |")
text = "\n".join(out)
print()
print(text)
doc = "docs/PERFORMANCE.md"
begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
if os.path.exists(doc):
    d = open(doc).read()
    if begin in d and end in d:
        d = d[:d.index(begin) + len(begin)] + "\n" + text + "\n" + d[d.index(end):]
        open(doc, "w").write(d)
        print(f"\n(written into {doc})")
EOF
