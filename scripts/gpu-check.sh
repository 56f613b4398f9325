#!/usr/bin/env bash
# The one-run GPU check (docs/cuda.md): runs the `gpu` tests and the GPU benchmark on a machine
# with an NVIDIA GPU and writes a report into a folder.
#
#   scripts/gpu-check.sh --prepare        on the build machine (Debian, bitfleet's dependencies):
#                                         builds the CUDA tests and bitfleet-bench-gpu and stages
#                                         them, with bitfleet itself and the shared libraries
#                                         a bare CUDA machine lacks (abseil, spdlog, gRPC,
#                                         protobuf, ...), as one gzipped tarball in
#                                         build-gpu-check/carry (ignored by git; ~66 MiB
#                                         stripped, ~20 MiB packed: the device tool carries
#                                         at most 64 MiB).
#   scripts/gpu-check.sh OUT_DIR          on the GPU machine: runs the staged set (or, where
#                                         bitfleet's dependencies are installed, builds it first),
#                                         and writes OUT_DIR/summary.json, OUT_DIR/table.txt,
#                                         OUT_DIR/bench.jsonl and OUT_DIR/run.log; with bitfleet
#                                         staged also the CUDA runner's end-to-end figures
#                                         (runner_decode.json and runner_serve_*.json: `bench
#                                         decode`, and `bench serve` against `serve --device
#                                         cuda`, with a worker process and --in-process;
#                                         runner_eval_*.json: the served model's perplexity
#                                         against `eval -m`'s on the CPU).
#
# The GPU machine needs the NVIDIA driver, and libnccl.so.2 for the NCCL test (found in the
# CUDA toolkit, the system paths or PyTorch's nvidia-nccl wheel); nothing is downloaded. The
# whole run took 75 s on an H200 (limit: 8 minutes). Exit status: 0 when every test
# passed and the benchmark ran, 1 otherwise (the report is written either way).
#
# Environment: BITFLEET_GPU_PROFILE=1 (also time every kernel of the decode steps with ncu: adds
# about a minute), BITFLEET_GPU_MATVEC_STUDY=1 (the mat-vec's own streaming rate on matrices far
# larger than a 2B model's, with ncu sections: about half a minute), BITFLEET_GPU_CARRY (staged folder, default build-gpu-check/carry),
# BITFLEET_GPU_ARCHS (CUDA architectures for --prepare, default 90: H100/H200; "80;90" for A100
# too), BITFLEET_GPU_BENCH_ARGS (extra bitfleet-bench-gpu options).
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
carry=${BITFLEET_GPU_CARRY:-build-gpu-check/carry}
targets=(gpu_kernels_test gpu_model_runner_test gpu_kv_storage_test gpu_nccl_test cuda_host_test bitfleet-bench-gpu
         worker_runner_factory_test e2e_engine_commands_test bitfleet)

# In a subshell, so its `set -e` stays inside.
prepare() (
  build="build-gpu-check"
  set -e
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITFLEET_CUDA=ON -DBITFLEET_MPI=OFF \
    -DBITFLEET_CUDA_ARCHITECTURES="${BITFLEET_GPU_ARCHS:-90}" >/dev/null
  cmake --build "$build" -j"${BITFLEET_JOBS:-$(nproc)}" --target "${targets[@]}"
  stage="$build/stage"  # packed into $carry at the end
  rm -rf "$carry" "$stage"
  mkdir -p "$stage/bin" "$stage/lib"
  for t in "${targets[@]}"; do
    f=$(find "$build/tests" "$build/bin" -maxdepth 1 -type f -name "$t" 2>/dev/null | head -1)
    if [[ -z $f ]]; then
      echo "gpu-check: $t was not built (no NCCL?); the check will report it missing" >&2
      continue
    fi
    cp "$f" "$stage/bin/"
    # Bitfleet's Debian libraries (abseil, spdlog, gRPC, protobuf, ...); glibc, libstdc++ and
    # the CUDA/NCCL libraries stay the target's.
    ldd "$f" | awk '/=> \// {print $3}' |
      grep -vE '/(libc|libm|libdl|libpthread|librt|libstdc\+\+|libgcc_s|libcuda|libcudart|libnccl|ld-linux[^/]*)\.so' |
      xargs -r -I{} cp -L -n {} "$stage/lib/" || true
  done
  # Symbols only, and packed: the carry must stay under the device tool's 64 MiB.
  strip --strip-unneeded "$stage"/bin/* "$stage"/lib/* 2>/dev/null || true
  # The real model of the runner test (stories260K, ~1 MiB; never committed), when it is here.
  shared=${BITFLEET_SHARED_DIR:-../shared}
  if [[ -f $shared/models/stories260K/stories260K.bin ]]; then
    mkdir -p "$stage/shared/models"
    cp -r "$shared/models/stories260K" "$stage/shared/models/"
    chmod -R u+w "$stage/shared"  # the source is read-only; the next --prepare deletes the copy
  fi
  {
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l) changed files"
    echo "built: $(date -u +%FT%TZ) on $(uname -srm)"
    echo "nvcc: $(nvcc --version 2>/dev/null | tail -1 || /usr/local/cuda/bin/nvcc --version | tail -1)"
    echo "archs: ${BITFLEET_GPU_ARCHS:-90}"
  } >"$stage/manifest.txt"
  mkdir -p "$carry"
  tar -C "$stage" -czf "$carry/bundle.tar.gz" .
  cp "$stage/manifest.txt" "$carry/"
  echo "gpu-check: $(du -sh "$stage" | cut -f1) staged, $(du -sh "$carry" | cut -f1) to carry"
  echo "gpu-check: staged in $carry; on the GPU machine carry it and run: scripts/gpu-check.sh OUT_DIR"
)

if [[ ${1:-} == --prepare ]]; then
  prepare
  exit $?
fi
if [[ $# -ne 1 ]]; then
  echo "usage: scripts/gpu-check.sh --prepare | scripts/gpu-check.sh OUT_DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
out=$(cd "$out" && pwd)
log=$out/run.log
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
: >"$log"
say() { echo "$*" | tee -a "$log"; }
start=$(date +%s)

unpack() { [[ -f $carry/bundle.tar.gz ]] && tar -C "$carry" -xzf "$carry/bundle.tar.gz"; }
if [[ ! -x $carry/bin/gpu_kernels_test ]] && ! unpack && [[ -f $carry/bundle.tar.gz ]]; then
  say "gpu-check: $carry/bundle.tar.gz did not unpack"
fi
if [[ ! -x $carry/bin/gpu_kernels_test ]]; then
  say "gpu-check: no staged binaries in $carry: building them here"
  if ! { prepare && unpack; } >>"$log" 2>&1; then
    say "gpu-check: the build failed (a bare GPU machine lacks bitfleet's libraries: run"
    say "  scripts/gpu-check.sh --prepare on the build machine and carry $carry)"
  fi
fi
[[ -f $carry/manifest.txt ]] && sed 's/^/carry: /' "$carry/manifest.txt" | tee -a "$log"

# Shared libraries: the carried ones, then NCCL wherever it lives on this machine.
lib_path=$root/$carry/lib
nccl_dir=""
for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/lib/x86_64-linux-gnu; do
  [[ -e $d/libnccl.so.2 ]] && nccl_dir=$d && break
done
if [[ -z $nccl_dir ]] && command -v python3 >/dev/null; then
  nccl_dir=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
  [[ -e $nccl_dir/libnccl.so.2 ]] || nccl_dir=""
fi
[[ -n $nccl_dir ]] && lib_path=$lib_path:$nccl_dir
export LD_LIBRARY_PATH=$lib_path${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
[[ -d $carry/shared ]] && export BITFLEET_SHARED_DIR=$root/$carry/shared
say "libnccl.so.2: ${nccl_dir:-not found}"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem --format=csv,noheader 2>&1 |
  sed 's/^/gpu: /' | tee -a "$log"

# Tests: each binary with a time limit; gtest writes its JSON report into $work.
declare -A limits=([gpu_kernels_test]=300 [gpu_model_runner_test]=240 [gpu_kv_storage_test]=60 [gpu_nccl_test]=120
                  [cuda_host_test]=60 [worker_runner_factory_test]=60 [e2e_engine_commands_test]=120)
tests=(gpu_kernels_test gpu_model_runner_test gpu_kv_storage_test gpu_nccl_test cuda_host_test)
# With bitfleet itself staged: CreateRunner on the device, and `bitfleet run --device cuda`
# telling stories260K's known greedy story (tests/e2e/engine_commands_test.cc).
if [[ -x $carry/bin/bitfleet ]]; then
  tests+=(worker_runner_factory_test e2e_engine_commands_test)
  export BITFLEET_BIN=$root/$carry/bin/bitfleet
fi
status=0
for t in "${tests[@]}"; do
  bin=$carry/bin/$t
  if [[ ! -x $bin ]]; then
    say "test $t: MISSING"
    echo "missing" >"$work/$t.rc"
    status=1
    continue
  fi
  missing=$(ldd "$bin" 2>&1 | grep "not found" | awk '{print $1}' | tr '\n' ' ')
  [[ -n $missing ]] && say "test $t: unresolved libraries: $missing"
  t0=$(date +%s)
  timeout "${limits[$t]}" "$bin" --gtest_output="json:$work/$t.json" >>"$log" 2>&1
  rc=$?
  echo "$rc" >"$work/$t.rc"
  say "test $t: exit $rc ($(( $(date +%s) - t0 )) s)"
  [[ $rc -ne 0 ]] && status=1
done

# Benchmark: JSON lines.
bench=$carry/bin/bitfleet-bench-gpu
if [[ -x $bench ]]; then
  t0=$(date +%s)
  # shellcheck disable=SC2086
  # Every single-token mat-vec kernel (matmul_launch.h MatVecKernel) at batch 1 and in the layer
  # stream; the figures below are the library default's (general).
  timeout 300 "$bench" ${BITFLEET_GPU_BENCH_ARGS:---matvec-kernels general,lean,tc} >"$out/bench.jsonl" 2>>"$log"
  rc=$?
  say "bench: exit $rc ($(( $(date +%s) - t0 )) s)"
  [[ $rc -ne 0 ]] && status=1
else
  say "bench: MISSING"
  status=1
fi

# Optional (BITFLEET_GPU_PROFILE=1): every kernel of the decode steps at batch 1 and 32, timed
# by ncu one at a time (clocks left alone), for the per-kernel table of the summary.
ncu_bin=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
if [[ -n ${BITFLEET_GPU_PROFILE:-} && -x $bench && -n $ncu_bin ]]; then
  for b in 1 32; do
    t0=$(date +%s)
    timeout 150 "$ncu_bin" --clock-control none --metrics gpu__time_duration.sum --csv --launch-count 1500 \
      "$bench" --types "" --layer-types "" --decode-batch "$b" --decode-fused-norms 0,1 --reps 1 \
      >"$work/ncu_b$b.csv" 2>>"$log"
    say "profile batch $b: exit $? ($(( $(date +%s) - t0 )) s)"
  done
fi

# Optional (BITFLEET_GPU_MATVEC_STUDY=1): the single-token mat-vec's own streaming rate
# (docs/cuda.md, "The mat-vec kernel's own streaming rate"): a 2B matrix and a 141 MB one of each
# type, then ncu's view (throughput, memory, stall reasons, occupancy) of the big TQ2_0 mat-vec.
if [[ -n ${BITFLEET_GPU_MATVEC_STUDY:-} && -x $bench ]]; then
  t0=$(date +%s)
  timeout 150 "$bench" --types tq2_0,q4_0,q4_1,q8_0 --shapes 13824x2560,221184x2560 --batch 1 \
    --matvec-kernels general,lean,tc --layer-types "" --decode-types "" >"$out/matvec_study.jsonl" 2>>"$log"
  say "matvec study: exit $? ($(( $(date +%s) - t0 )) s)"
  if [[ -n $ncu_bin ]]; then
    timeout 120 "$ncu_bin" --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section Occupancy -k regex:QuantMatVec --launch-skip 3 --launch-count 1 \
      "$bench" --types tq2_0 --shapes 221184x2560 --batch 1 --layer-types "" --decode-types "" --reps 1 \
      >"$out/matvec_ncu.txt" 2>>"$log"
    say "matvec ncu: exit $?"
    timeout 120 "$ncu_bin" --clock-control none --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section WarpStateStats --section Occupancy -k regex:QuantMatVecTensorCore --launch-skip 3 --launch-count 1 \
      "$bench" --types tq2_0 --shapes 221184x2560 --batch 1 --matvec-kernels tc --layer-types "" \
      --decode-types "" --reps 1 >"$out/matvec_ncu_tc.txt" 2>>"$log"
    say "matvec ncu (tc): exit $?"
  fi
fi

# The CUDA runner end to end (with bitfleet staged): one sequence (`bench decode --device cuda`)
# and the serving path (`serve --device cuda`, `bench serve` at concurrency 1 and 16) on the
# `small` synthetic BitNet model, the model of the CPU serving figures (docs/perf.md).
if [[ -x $carry/bin/bitfleet ]]; then
  bf=$carry/bin/bitfleet
  t0=$(date +%s)
  if timeout 120 "$bf" synth --arch bitnet --preset small --seed 1 -o "$work/small.gguf" >>"$log" 2>&1; then
    timeout 120 "$bf" --log-level warn bench decode --device cuda -m "$work/small.gguf" --prompt 128 --gen 64 \
      >"$out/runner_decode.json" 2>>"$log" || { say "runner: bench decode failed"; status=1; }
    # The same without the fused norm kernels (BITFLEET_CUDA_FUSED_NORMS=0), for their effect.
    BITFLEET_CUDA_FUSED_NORMS=0 timeout 120 "$bf" --log-level warn bench decode --device cuda -m "$work/small.gguf" \
      --prompt 128 --gen 64 >"$out/runner_decode_unfused.json" 2>>"$log" || { say "runner: bench decode (unfused) failed"; status=1; }
    # And with RoPE + KV write fused (BITFLEET_CUDA_FUSED_ROPE_KV=1, off by default until measured).
    BITFLEET_CUDA_FUSED_ROPE_KV=1 timeout 120 "$bf" --log-level warn bench decode --device cuda \
      -m "$work/small.gguf" --prompt 128 --gen 64 >"$out/runner_decode_rope_kv.json" 2>>"$log" \
      || { say "runner: bench decode (fused rope + kv) failed"; status=1; }
    # name, concurrency, requests, prompt, generated, shared prefix[, bench flags]: the CPU
    # figures' settings (docs/perf.md), longer generations, and the prefix cache's TTFT (cold,
    # then hits), with 76 and with 16 tokens after the shared 1024 (what a hit costs besides its
    # own prefill); then c16 with every request asking for logprobs (their host-side cost).
    specs=("c1 1 32 128 64 0" "c16 16 256 128 64 0" "c1_gen256 1 8 128 256 0" "c16_gen256 16 64 128 256 0"
           "prefix 1 8 1100 16 1024" "prefix16 1 8 1040 16 1024" "c16_logprobs 16 256 128 64 0 --logprobs=5")
    # serve_specs PORT SUFFIX SERVE_FLAGS... -- SPEC...: one serve, then `bench serve` per spec
    # into runner_serve_NAME$SUFFIX.json.
    serve_specs() {
      local port=$1 suffix=$2 flags=() spec name c n prompt gen prefix extra serve_pid
      shift 2
      while [[ $1 != -- ]]; do flags+=("$1"); shift; done
      shift
      timeout 300 "$bf" serve --device cuda --tp 1 -m "$work/small.gguf" --port "$port" ${flags[@]+"${flags[@]}"} \
        >>"$log" 2>&1 &
      serve_pid=$!
      for spec in "$@"; do
        read -r name c n prompt gen prefix extra <<<"$spec"
        # shellcheck disable=SC2086  # $extra: zero or more bench flags without spaces
        timeout 120 "$bf" --log-level warn bench serve --target "127.0.0.1:$port" --wait-ready 60 -c "$c" -n "$n" \
          --prompt-len "$prompt" --gen-len "$gen" --shared-prefix "$prefix" $extra \
          >"$out/runner_serve_$name$suffix.json" \
          2>>"$log" || { say "runner: bench serve $name$suffix failed"; status=1; }
      done
      kill -INT "$serve_pid" 2>/dev/null
      wait "$serve_pid" || { say "runner: serve$suffix exited $?"; status=1; }
    }
    serve_specs 50151 "" -- "${specs[@]}"
    # The same model run by serve itself (--in-process: no worker process, no control stream).
    serve_specs 50153 _inproc --in-process -- "${specs[0]}" "${specs[1]}" "${specs[2]}" "${specs[4]}" "${specs[5]}"
    # And that with speculative decoding (drafts by prompt lookup; the synthetic model's greedy
    # text falls into loops, which drafts guess): whether a GPU step with 5 tokens per sequence
    # costs as little as its weight reads suggest. The chance threshold is lowered for a GPU.
    serve_specs 50157 _inproc_spec --in-process --speculative-tokens 4 --speculative-min-chance 0.05 -- \
      "${specs[0]}" "${specs[2]}"
    # And that with RoPE + KV write fused (off by default until measured): its effect on serving.
    BITFLEET_CUDA_FUSED_ROPE_KV=1 serve_specs 50154 _inproc_ropekv --in-process -- "${specs[0]}" "${specs[1]}" \
      "${specs[4]}"
    # And with the hand-offs polling 2 ms before sleeping (core/spin_wait.h; off by default): how
    # much of the serving path is the kernel waking sleeping threads on this many-core machine.
    BITFLEET_SPIN_WAIT_US=2000 serve_specs 50155 _inproc_spin --in-process -- "${specs[0]}" "${specs[1]}" \
      "${specs[4]}"
    # The served model's perplexity (`eval --target`: prompt log probabilities computed by the CUDA
    # worker) against the file's on the CPU (`eval -m`): the same chunks, so the two agree up to
    # the kernels' rounding. Into runner_eval_served.json and runner_eval_cpu.json.
    text=$root/tests/e2e/data/quality_text.txt
    timeout 120 "$bf" serve --device cuda --tp 1 -m "$work/small.gguf" --port 50156 >>"$log" 2>&1 &
    serve_pid=$!
    timeout 120 "$bf" --log-level warn eval --target 127.0.0.1:50156 --wait-ready 60 --text "$text" -c 256 --chunks 8 \
      >"$out/runner_eval_served.json" 2>>"$log" || { say "runner: eval --target failed"; status=1; }
    kill -INT "$serve_pid" 2>/dev/null
    wait "$serve_pid" || { say "runner: serve (eval) exited $?"; status=1; }
    timeout 180 "$bf" --log-level warn eval -m "$work/small.gguf" --text "$text" -c 256 --chunks 8 \
      >"$out/runner_eval_cpu.json" 2>>"$log" || { say "runner: eval -m failed"; status=1; }
    # Where a prefix-cache hit's TTFT goes: the same prefix spec against a serve at debug level,
    # whose API logs each request's first-token timeline and whose worker logs each step's model
    # time (the figures above come from the serve at the default level); with workers, then
    # --in-process, into prefix_timeline$SUFFIX.txt.
    for mode in workers in_process; do
      suffix=$([[ $mode == in_process ]] && echo _inproc)
      # shellcheck disable=SC2046  # unquoted: no argument at all for the workers mode
      timeout 120 "$bf" --log-level debug serve --device cuda --tp 1 -m "$work/small.gguf" --port 50152 \
        $([[ $mode == in_process ]] && echo --in-process) >"$work/serve_debug$suffix.log" 2>&1 &
      serve_pid=$!
      timeout 60 "$bf" --log-level warn bench serve --target 127.0.0.1:50152 --wait-ready 60 -c 1 -n 8 \
        --prompt-len 1100 --gen-len 16 --shared-prefix 1024 >"$out/runner_serve_prefix_debug$suffix.json" \
        2>>"$log" || say "runner: debug-level prefix run ($mode) failed"
      kill -INT "$serve_pid" 2>/dev/null
      wait "$serve_pid"
      grep -E "first token written|step [0-9]+: .* tokens" "$work/serve_debug$suffix.log" \
        >"$out/prefix_timeline$suffix.txt"
    done
  else
    say "runner: synth failed"
    status=1
  fi
  say "runner: exit $status ($(( $(date +%s) - t0 )) s)"
fi

# Summary: tests per binary, the headline figures against their targets, and a short table.
python3 - "$work" "$out" "$(( $(date +%s) - start ))" <<'EOF' 2>>"$log" || say "summary: python3 failed; raw files only"
import json, os, sys
work, out, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
summary = {"seconds": seconds, "tests": {}, "bench": [], "figures": {}}
for name in ["gpu_kernels_test", "gpu_model_runner_test", "gpu_kv_storage_test", "gpu_nccl_test", "cuda_host_test",
             "worker_runner_factory_test", "e2e_engine_commands_test"]:
    if not os.path.exists(os.path.join(work, name + ".rc")) and name.startswith(("worker_", "e2e_")):
        continue  # bitfleet was not staged
    entry = {"exit": open(os.path.join(work, name + ".rc")).read().strip() if os.path.exists(os.path.join(work, name + ".rc")) else "not run"}
    path = os.path.join(work, name + ".json")
    if os.path.exists(path):
        doc = json.load(open(path))
        entry.update({k: doc.get(k) for k in ("tests", "failures", "disabled", "errors", "time")})
        entry["failed"] = [s["name"] + "." + t["name"] for s in doc.get("testsuites", []) for t in s.get("testsuite", []) if t.get("failures")]
        entry["skipped"] = [s["name"] + "." + t["name"] for s in doc.get("testsuites", []) for t in s.get("testsuite", []) if t.get("result") == "SKIPPED"]
    summary["tests"][name] = entry
bench_path = os.path.join(out, "bench.jsonl")
if os.path.exists(bench_path):
    for line in open(bench_path):
        line = line.strip()
        if line.startswith("{"):
            summary["bench"].append(json.loads(line))
b = summary["bench"]
dev = next((r for r in b if r["kernel"] == "device"), {})
f = summary["figures"]
f["device"] = dev.get("name")
f["copy_gb_s"] = dev.get("copy_gb_s")
def layer(t, fused):
    # The library's default settings; other --matvec-options entries are comparisons.
    # The default kernel (general); --matvec-kernels entries of the others are comparisons.
    return next((r for r in b if r["kernel"] == "matvec_2b_layers" and r["type"] == t and r["fused"] == fused
                 and r.get("options", "default") == "default" and r.get("matvec_kernel", "general") == "general"),
                None)
for t, target, key in [("tq2_0", 0.75, "ternary"), ("q4_0", 0.70, "int4")]:
    for fused in (True, False):
        r = layer(t, fused)
        if r:
            f[f"{key}_matvec_2b_{'fused' if fused else 'separate'}_fraction"] = r["roofline_fraction"]
    best = max([r["roofline_fraction"] for r in (layer(t, True), layer(t, False)) if r] or [0])
    f[f"{key}_matvec_target"] = target
    f[f"{key}_matvec_meets_target"] = best >= target
for r in b:
    if r["kernel"] == "decode_step":
        tag = f"decode_b{r['batch']}" + ("_fused_norms" if r.get("fused_norms") else "")
        f[f"{tag}_tok_s"] = r["tok_s"]
        f[f"{tag}_roofline_tok_s"] = r["roofline_tok_s"]
f["all_tests_passed"] = all(v.get("exit") == "0" for v in summary["tests"].values())
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)

rows = [f"device: {dev.get('name')}  copy {dev.get('copy_gb_s', 0):.0f} GB/s  run {seconds} s", ""]
for name, e in summary["tests"].items():
    rows.append(f"{name:22s} exit {e['exit']:>4s}  tests {e.get('tests')}  failures {e.get('failures', 0) or 0}  "
                + (f"FAILED: {', '.join(e['failed'][:4])}" if e.get("failed") else ""))
# The CUDA runner's tensor-parallel agreement lines (CudaTensorParallelTest prints one per model).
tp_lines = [l.strip() for l in open(os.path.join(out, "run.log"), errors="replace")
            if l.startswith("[gpu] ") and (" TP=" in l or "NCCL of one rank" in l)]
summary["tensor_parallel"] = tp_lines
if tp_lines:
    rows += ["", "CUDA runner, tensor parallel against TP=1 (ranks as threads on one device):"]
    rows += ["  " + l[len("[gpu] "):] for l in tp_lines]
rows += ["", f"{'matmul':10s} {'shape':>11s} {'batch':>5s} {'path':16s} {'us':>8s} {'GB/s':>7s} {'of copy':>7s}"]
for r in b:
    if r["kernel"] == "matmul":
        rows.append(f"{r['type']:10s} {str(r['rows'])+'x'+str(r['cols']):>11s} {r['batch']:5d} {r['path']:16s} "
                    f"{r['us_per_call']:8.2f} {r['packed_gb_s']:7.0f} {r['roofline_fraction']:7.2f}")
rows.append("")
for r in b:
    if r["kernel"] == "matvec_2b_layers":
        rows.append(f"2B layer stream {r['type']:6s} {'fused' if r['fused'] else 'separate':8s} {r['ms']:7.3f} ms "
                    f"{r['packed_gb_s']:6.0f} GB/s = {r['roofline_fraction']:.2f} of copy  "
                    + ("[chain: one cooperative launch, grid barriers]" if r.get("options") == "chain" else
                       f"[{r.get('matvec_kernel', 'general')} {r.get('options', 'default')}: pdl "
                       f"{r.get('dependent_launch')} prefetch {r.get('prefetch')} blocks {r.get('prefetch_blocks')}]"))
for r in b:
    if r["kernel"] == "decode_step":
        rows.append(f"decode large {r['type']} head {r['head_type']} batch {r['batch']:2d} ctx {r['context']}"
                    f"{' fused norms' if r.get('fused_norms') else ''}: "
                    f"{r['step_ms_graph']:.3f} ms/step graph ({r['step_ms_no_graph']:.3f} plain), {r['tok_s']:.0f} tok/s, "
                    f"roofline {r['roofline_tok_s']:.0f} tok/s ({r['roofline_fraction']:.2f})")
path = os.path.join(out, "matvec_study.jsonl")
if os.path.exists(path):
    study = [json.loads(l) for l in open(path) if l.startswith("{")]
    summary["matvec_study"] = study
    rows += ["", "mat-vec study (one token; fraction of copy bandwidth):"]
    for r in study:
        if r["kernel"] == "matmul":
            rows.append(f"  {r['type']:6s} {r['rows']:>6d}x{r['cols']:<5d} {r.get('matvec_kernel', 'general'):7s} "
                        f"{r['us_per_call']:9.2f} us  {r['roofline_fraction']:.3f}")
runner = {}
# The serve runs of the runner section: file suffix, and how serve ran.
serve_modes = (("", "workers"), ("_inproc", "--in-process"), ("_inproc_ropekv", "--in-process, fused RoPE+KV"),
               ("_inproc_spin", "--in-process, spin 2 ms"), ("_inproc_spec", "--in-process, speculative 4"))
serve_names = ["runner_serve_" + n + sfx for sfx, _ in serve_modes
               for n in ("c1", "c16", "c1_gen256", "c16_gen256", "prefix", "prefix16", "c16_logprobs")]
for name in ["runner_decode", "runner_decode_unfused", "runner_decode_rope_kv", "runner_eval_served",
             "runner_eval_cpu"] + serve_names:
    path = os.path.join(out, name + ".json")
    try:
        runner[name] = json.loads(open(path).read())
    except (OSError, ValueError):
        pass
if runner:
    summary["runner"] = runner
    d = runner.get("runner_decode", {})
    rows += ["", f"runner, small bitnet, --device cuda: prompt {d.get('prompt_tok_s', 0):.0f} tok/s, "
             f"decode {d.get('gen_tok_s', 0):.0f} tok/s ({d.get('kernel', '?')})"]
    u = runner.get("runner_decode_unfused", {})
    if u:
        rows.append(f"  without fused norms: prompt {u.get('prompt_tok_s', 0):.0f} tok/s, decode {u.get('gen_tok_s', 0):.0f} tok/s")
    rk = runner.get("runner_decode_rope_kv", {})
    if rk:
        rows.append(f"  with RoPE + KV write fused: prompt {rk.get('prompt_tok_s', 0):.0f} tok/s, "
                    f"decode {rk.get('gen_tok_s', 0):.0f} tok/s")
    for sfx, how in serve_modes:
        for name in ("c1", "c16", "c1_gen256", "c16_gen256", "c16_logprobs"):
            r = runner.get(f"runner_serve_{name}{sfx}", {})
            if r:
                rows.append(f"  serve ({how}) {name:11s} (prompt {r.get('prompt_len')}, gen {r.get('gen_len')}, "
                            f"{r.get('requests')} requests): {r.get('output_tok_s', 0):.0f} output tok/s, "
                            f"TTFT p50 {r.get('ttft_p50_ms', 0):.1f} ms, ITL p50 {r.get('itl_p50_ms', 0):.2f} ms")
        for g in ("", "_gen256"):
            one, sixteen = runner.get(f"runner_serve_c1{g}{sfx}", {}), runner.get(f"runner_serve_c16{g}{sfx}", {})
            if one.get("output_tok_s") and sixteen.get("output_tok_s"):
                rows.append(f"  ({how}) c=16 / c=1 output tok/s{g}: "
                            f"{sixteen['output_tok_s'] / one['output_tok_s']:.2f}x")
    served, cpu = runner.get("runner_eval_served", {}), runner.get("runner_eval_cpu", {})
    if served.get("nll_mean") is not None and cpu.get("nll_mean") is not None:
        rows.append(f"  perplexity, {served.get('scored_tokens')} tokens: served by the CUDA worker "
                    f"{served['perplexity']:.4f} ({served.get('prompt_tokens_per_s', 0):.0f} prompt tok/s), "
                    f"eval -m on the CPU {cpu['perplexity']:.4f}; mean NLL differs by "
                    f"{abs(served['nll_mean'] - cpu['nll_mean']):.2e}")
    for sfx, how in serve_modes:  # timelines exist for workers and --in-process
        tl_path = os.path.join(out, f"prefix_timeline{sfx}.txt")
        if not os.path.exists(tl_path):
            continue
        import re, statistics
        parts = {k: [] for k in ("written", "parse", "submit", "headers", "scheduler and workers", "write")}
        steps = []
        for line in open(tl_path):
            m = re.search(r"first token written (\d+) us .*parse (\d+), submit (\d+), headers (\d+), scheduler and "
                          r"workers (\d+), write (\d+) us \((\d+) prompt tokens, (\d+) cached\)", line)
            if m and int(m.group(8)) > 0:
                for k, g in zip(parts, range(1, 7)):
                    parts[k].append(int(m.group(g)))
            m = re.search(r"step \d+: 1 sequences, (\d+) tokens, .*model ([0-9.]+) ms", line)
            if m and int(m.group(1)) == 76:
                steps.append(float(m.group(2)))
        if parts["written"]:
            med = {k: statistics.median(v) for k, v in parts.items()}
            summary[f"prefix_hit_timeline_us{sfx}"] = med
            rows.append(f"  ({how}) cache hit, server side (median us): "
                        + ", ".join(f"{k} {v:.0f}" for k, v in med.items())
                        + (f"; the hit's 76-token step {statistics.median(steps):.3f} ms (model)" if steps else ""))
    for (sfx, how), name in ((mode, name) for mode in serve_modes for name in ("prefix", "prefix16")):
        p = runner.get(f"runner_serve_{name}{sfx}", {})
        if p.get("ttft_cache_hit_p50_ms"):
            cold = p.get("ttft_cold_p50_ms", 0)  # 0: every request hit (the prefix was cached before)
            rows.append(f"  ({how}) 1024-token shared prefix, prompt {p.get('prompt_len')}: TTFT "
                        + (f"cold {cold:.2f} ms, " if cold else "")
                        + f"cache hit {p['ttft_cache_hit_p50_ms']:.2f} ms"
                        + (f" ({cold / p['ttft_cache_hit_p50_ms']:.2f}x)" if cold else ""))
rows.append("")
rows.append(f"targets: ternary mat-vec >= 0.75 of copy: {f.get('ternary_matvec_meets_target')}, "
            f"int4 >= 0.70: {f.get('int4_matvec_meets_target')}, all tests passed: {f['all_tests_passed']}")
# Per-kernel decode profile (BITFLEET_GPU_PROFILE): ncu durations summed by kernel name over the
# profiled launches, per decode step (a step ends with one arg-max).
import csv, collections
for b in (1, 32):
    path = os.path.join(work, f"ncu_b{b}.csv")
    if not os.path.exists(path):
        continue
    lines = [l for l in open(path) if l.startswith('"')]
    by_name = collections.defaultdict(lambda: [0, 0.0])
    for rec in csv.DictReader(lines):
        if rec.get("Metric Name") != "gpu__time_duration.sum":
            continue
        name = rec["Kernel Name"].split("(")[0]
        for noise in ("void ", "bitfleet::kernels::cuda::", "<unnamed>::", "unnamed>::", "(anonymous namespace)::"):
            name = name.replace(noise, "")
        name = name[-60:]
        scale = {"ns": 1e-3, "us": 1.0, "usecond": 1.0, "nsecond": 1e-3, "ms": 1e3, "msecond": 1e3}.get(rec.get("Metric Unit", "ns"), 1e-3)
        by_name[name][0] += 1
        by_name[name][1] += float(rec["Metric Value"].replace(",", "")) * scale
    steps = max(1, sum(v[0] for k, v in by_name.items() if "ArgMax" in k))
    summary.setdefault("profile", {})[f"batch{b}"] = {k: {"launches": v[0], "us": v[1]} for k, v in by_name.items()}
    rows += ["", f"ncu, decode batch {b}: {steps} steps profiled (isolated kernels, cold caches), µs per step"]
    for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:14]:
        rows.append(f"  {k:60s} {v[0] / steps:6.1f} launches {v[1] / steps:9.1f} us")
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=1)
open(os.path.join(out, "table.txt"), "w").write("\n".join(rows) + "\n")
print("\n".join(rows))
EOF
say "gpu-check: report in $out ($(( $(date +%s) - start )) s)"
exit $status
