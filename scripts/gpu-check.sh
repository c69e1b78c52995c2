#!/usr/bin/env bash
# Checks the CUDA binaries of `cargo xtask cuda-build` on a GPU machine that has no Rust
# toolchain and no network: the NVIDIA driver, and the CUDA 13 libraries of a PyTorch venv
# (its nvidia/*/lib folders, put on LD_LIBRARY_PATH here).
#
#   scripts/gpu-check.sh --bin-dir DIR --data-dir DIR --out DIR [--cpu-ref FILE] [options]
#
# --bin-dir    vae-train and vae-infer (or vae-train.xz and vae-infer.xz, unpacked into OUT/bin)
# --data-dir   the four Fashion-MNIST IDX files (gzipped or not)
# --out        where results go: OUT/gpu.json, OUT/GPU.md, OUT/logs, OUT/runs
# --cpu-ref    the OUT/gpu.json of a CPU run (below): the validation losses after the same
#              epochs, which the GPU's must match within 0.5%
# --venv       the PyTorch venv (default /opt/torch/.venv): libraries, Python, the PyTorch twin
# --device     cuda (default) or cpu
# --epochs     epochs per training run of pytorch-example and conv (default 3)
# --hvae-epochs   epochs of the hvae run (default 1)
# --hvae-data-dir the IDX files the hvae trains on (default --data-dir; the repository's
#              data/fashion-mnist-sample, 6,000 training images, keeps it within a short budget)
# --presets    comma-separated presets to train, each beside its PyTorch twin (default
#              pytorch-example,conv,hvae)
# --kernels    native (default) or composite: vae-train's --kernels (on the CPU, composite runs
#              the path a GPU runs, so a CPU reference of either path can be written)
# --steps      comma-separated subset of smi,train,infer,resume,torch,repeat (default all)
# --budget     seconds the whole check may take (default 450); each step's time limit is cut
#              to what is left, and a step with no time left is reported as not run
#
# Steps: nvidia-smi; `vae-train` of each preset (epoch seconds and validation loss from
# metrics.jsonl); `vae-infer evaluate` (100 importance samples, first
# 1000 test images), `sample` and `report` of the pytorch-example run; a run killed with
# SIGKILL after a mid-run checkpoint, resumed, and compared byte for byte (cmp) with the
# uninterrupted one; bench/torch_vae.py's twin of each preset on the same device (ours/PyTorch
# per preset); a repeat of the uninterrupted run
# (whether training on this device is deterministic at all). A failed step is recorded and
# the others still run; the exit status is 1 if any step failed or was not run.
#
# The CPU reference, on the CPU machine with the CPU binaries (`cargo build --release`):
#   scripts/gpu-check.sh --device cpu --steps train --bin-dir target/release \
#     --data-dir /usr/share/datasets/fashion-mnist --out /tmp/cpu-ref --budget 3600
# then pass --cpu-ref /tmp/cpu-ref/gpu.json on the GPU machine.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN_DIR="" DATA_DIR="" OUT="" CPU_REF="" VENV=/opt/torch/.venv DEVICE=cuda EPOCHS=3
STEPS=all BUDGET=450 HVAE_EPOCHS=1 HVAE_DATA_DIR="" PRESETS=pytorch-example,conv,hvae KERNELS=native
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --bin-dir | --data-dir | --out | --cpu-ref | --venv | --device | --epochs | --steps | --budget | \
      --hvae-epochs | --hvae-data-dir | --presets | --kernels)
      if (($# < 2)); then echo "gpu-check: $1 needs a value" >&2; exit 2; fi
      case $1 in
        --bin-dir) BIN_DIR=$2 ;; --data-dir) DATA_DIR=$2 ;; --out) OUT=$2 ;;
        --cpu-ref) CPU_REF=$2 ;; --venv) VENV=$2 ;; --device) DEVICE=$2 ;;
        --epochs) EPOCHS=$2 ;; --steps) STEPS=$2 ;; --budget) BUDGET=$2 ;;
        --hvae-epochs) HVAE_EPOCHS=$2 ;; --hvae-data-dir) HVAE_DATA_DIR=$2 ;;
        --presets) PRESETS=$2 ;; --kernels) KERNELS=$2 ;;
      esac
      shift 2 ;;
    *) echo "gpu-check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
for v in BIN_DIR DATA_DIR OUT; do
  if [[ -z ${!v} ]]; then echo "gpu-check: --$(tr '_A-Z' '-a-z' <<<"$v") is required" >&2; exit 2; fi
done
[[ $EPOCHS =~ ^[1-9][0-9]*$ ]] || { echo "gpu-check: --epochs $EPOCHS: a positive integer" >&2; exit 2; }
[[ $HVAE_EPOCHS =~ ^[1-9][0-9]*$ ]] || { echo "gpu-check: --hvae-epochs $HVAE_EPOCHS: a positive integer" >&2; exit 2; }
[[ $KERNELS == native || $KERNELS == composite ]] || { echo "gpu-check: --kernels $KERNELS: native or composite" >&2; exit 2; }
for p in ${PRESETS//,/ }; do
  case $p in pytorch-example | conv | hvae) ;; *) echo "gpu-check: --presets: unknown preset $p" >&2; exit 2 ;; esac
done
[[ $BUDGET =~ ^[1-9][0-9]*$ ]] || { echo "gpu-check: --budget $BUDGET: seconds" >&2; exit 2; }
[[ -z $CPU_REF || -f $CPU_REF ]] || { echo "gpu-check: --cpu-ref $CPU_REF: no such file" >&2; exit 2; }
[[ -d $DATA_DIR ]] || { echo "gpu-check: --data-dir $DATA_DIR: no such directory" >&2; exit 2; }

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
HVAE_DATA_DIR="${HVAE_DATA_DIR:-$DATA_DIR}"
[[ -d $HVAE_DATA_DIR ]] || { echo "gpu-check: --hvae-data-dir $HVAE_DATA_DIR: no such directory" >&2; exit 2; }
HVAE_DATA_DIR="$(cd "$HVAE_DATA_DIR" && pwd)"
LOGS="$OUT/logs"
RUNS="$OUT/runs"
rm -rf "${OUT:?}/logs" "${OUT:?}/runs" "${OUT:?}/bin" "${OUT:?}/infer"
mkdir -p "$LOGS" "$RUNS" "$OUT/infer"
STEPS_TSV="$OUT/steps.tsv"
: >"$STEPS_TSV"
DEADLINE=$((SECONDS + BUDGET))
FAILED=0

PY="$VENV/bin/python"
[[ -x $PY ]] || PY=python3

# name, status (ok | failed | skipped | no-time), seconds, note: one line of steps.tsv.
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4//$'\t'/ }" >>"$STEPS_TSV"
  echo "gpu-check: $1: $2 (${3}s)${4:+ $4}" >&2
  if [[ $2 == failed || $2 == no-time ]]; then FAILED=1; fi
}

want() { [[ $STEPS == all || ",$STEPS," == *",$1,"* ]]; }

# Seconds a step may take: its own limit, cut to what the budget has left (minus a margin for
# writing the results); 0 when nothing is left.
limit() {
  local left=$((DEADLINE - SECONDS - 20))
  if ((left < 5)); then echo 0; elif ((left < $1)); then echo "$left"; else echo "$1"; fi
}

# run NAME LIMIT CMD...: stdout into logs/NAME.out, stderr into logs/NAME.err, under timeout.
run() {
  local name=$1 t start rc=0
  t=$(limit "$2")
  shift 2
  if ((t == 0)); then record "$name" no-time 0 "budget spent"; return 1; fi
  start=$SECONDS
  timeout -k 5 "$t" "$@" >"$LOGS/$name.out" 2>"$LOGS/$name.err" || rc=$?
  if ((rc == 0)); then
    record "$name" ok $((SECONDS - start)) ""
  else
    local why="exit $rc"
    if ((rc == 124 || rc == 137)); then why="timed out after ${t}s"; fi
    record "$name" failed $((SECONDS - start)) "$why: $(tail -n 1 "$LOGS/$name.err" 2>/dev/null | cut -c1-300)"
  fi
  return "$rc"
}

# The binaries, unpacked if they came compressed.
bin() {
  local name=$1
  if [[ -x $BIN_DIR/$name ]]; then
    echo "$BIN_DIR/$name"
  elif [[ -f $BIN_DIR/$name.xz ]]; then
    mkdir -p "$OUT/bin"
    if [[ ! -x $OUT/bin/$name ]]; then
      "$PY" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
        "$BIN_DIR/$name.xz" "$OUT/bin/$name"
      chmod +x "$OUT/bin/$name"
    fi
    echo "$OUT/bin/$name"
  else
    return 1
  fi
}
TRAIN="" INFER=""
if TRAIN=$(bin vae-train) && INFER=$(bin vae-infer); then
  record binaries ok 0 "$TRAIN $INFER"
else
  record binaries failed 0 "no vae-train and vae-infer (or .xz) in $BIN_DIR"
fi

# The CUDA libraries of the venv's nvidia wheels; the driver's libcuda.so.1 is the system's.
libs=()
for d in "$VENV"/lib/python3*/site-packages/nvidia/*/lib; do
  if [[ -d $d ]]; then libs+=("$d"); fi
done
if ((${#libs[@]})); then
  LD_LIBRARY_PATH="$(IFS=:; echo "${libs[*]}")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  export LD_LIBRARY_PATH
fi
echo "${LD_LIBRARY_PATH:-}" >"$LOGS/ld_library_path.txt"
if [[ -n $TRAIN ]]; then
  missing=$( { ldd "$TRAIN"; ldd "$INFER"; } 2>&1 | grep 'not found' | sort -u | tr -s ' \t\n' ' ' || true)
  if [[ -n $missing ]]; then
    record libraries failed 0 "missing: $missing"
    TRAIN="" INFER=""
  else
    record libraries ok 0 ""
  fi
fi

if [[ $DEVICE == cpu ]]; then
  record smi skipped 0 "--device cpu"
elif want smi; then
  run smi 30 nvidia-smi || true
  timeout 30 nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv,noheader \
    >"$LOGS/gpu.csv" 2>/dev/null || true
fi

# Steps that need the pytorch-example run say so when it is missing.
needs_run() {
  if ! want "$1"; then return 1; fi
  if [[ -n $TRAIN && -f $PE/model.safetensors ]]; then return 0; fi
  record "$1" failed 0 "no trained pytorch-example run to work on"
  return 1
}

common=(--dataset fashion-mnist --device "$DEVICE" --seed 0 --quiet --kernels "$KERNELS")
pe_args=(--data-dir "$DATA_DIR" --epochs "$EPOCHS")
PE="$RUNS/pytorch-example"
# Per preset: its data, epochs and time limit (seconds) for vae and for its twin.
preset_args() {
  case $1 in
    hvae) echo "--data-dir $HVAE_DATA_DIR --epochs $HVAE_EPOCHS" ;;
    *) echo "--data-dir $DATA_DIR --epochs $EPOCHS" ;;
  esac
}
preset_limit() { case $1 in pytorch-example) echo 150 ;; *) echo 240 ;; esac; }
if [[ -n $TRAIN ]] && want train; then
  for p in ${PRESETS//,/ }; do
    # shellcheck disable=SC2046 # preset_args is word lists of paths without spaces
    run "train-$p" "$(preset_limit "$p")" "$TRAIN" --preset "$p" "${common[@]}" $(preset_args "$p") \
      --out "$RUNS/$p" || true
  done
fi

if needs_run infer; then
  run infer-evaluate 120 "$INFER" evaluate --run "$PE" --device "$DEVICE" --iw-samples 100 --limit 1000 --json || true
  run infer-sample 60 "$INFER" sample --run "$PE" --device "$DEVICE" --n 64 --out "$OUT/infer/samples.png" --json || true
fi

# Killed with SIGKILL once a checkpoint in the second epoch exists, then resumed; the weights
# must be the bytes of the uninterrupted run.
if needs_run resume; then
  KILLED="$RUNS/killed"
  # Batches per epoch: the step count after epoch 1 of the uninterrupted run.
  per_epoch=$("$PY" -c 'import json, sys; print(int(json.loads(open(sys.argv[1]).readline())["step"]))' \
    "$PE/metrics.jsonl" 2>/dev/null || echo 0)
  target=$((EPOCHS > 1 ? per_epoch + per_epoch / 2 : per_epoch / 2))
  every=$((per_epoch / 10 > 0 ? per_epoch / 10 : 1))
  t=$(limit 150)
  if ((per_epoch == 0)); then
    record resume-kill failed 0 "no step count in $PE/metrics.jsonl"
  elif ((t == 0)); then
    record resume-kill no-time 0 "budget spent"
  else
    start=$SECONDS
    "$TRAIN" --preset pytorch-example "${common[@]}" "${pe_args[@]}" --checkpoint-every "$every" --out "$KILLED" \
      >"$LOGS/resume-kill.out" 2>"$LOGS/resume-kill.err" &
    pid=$!
    step=0
    while kill -0 "$pid" 2>/dev/null && ((SECONDS - start < t)); do
      name=$(cat "$KILLED/checkpoints/latest" 2>/dev/null || true)
      if [[ $name =~ ^step-0*([0-9]+)$ ]]; then step=${BASH_REMATCH[1]}; fi
      if ((step >= target)); then break; fi
      sleep 0.02
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    if ((step >= target)); then
      record resume-kill ok $((SECONDS - start)) "SIGKILL after the checkpoint of step $step (of $((per_epoch * EPOCHS)))"
      if run resume-continue 150 "$TRAIN" --resume "$KILLED" --quiet; then
        if cmp -s "$PE/model.safetensors" "$KILLED/model.safetensors"; then
          record resume-identical ok 0 "byte-identical to the uninterrupted run"
        else
          record resume-identical failed 0 "model.safetensors differs from the uninterrupted run"
        fi
      fi
    else
      record resume-kill failed $((SECONDS - start)) "no checkpoint at step $target before the run ended or ran out of time (last: $step)"
    fi
  fi
fi

if want torch; then
  TWIN="$HERE/../bench/torch_vae.py"
  for p in ${PRESETS//,/ }; do
    # shellcheck disable=SC2046
    run "torch-$p" "$(preset_limit "$p")" "$PY" "$TWIN" --preset "$p" --device "$DEVICE" $(preset_args "$p") || true
  done
fi

if [[ -n $INFER && -f $PE/model.safetensors ]] && want infer; then
  run infer-report 180 "$INFER" report --run "$PE" --device "$DEVICE" --out "$OUT/infer/report.html" --json || true
fi

if needs_run repeat; then
  if run repeat-pytorch-example 150 "$TRAIN" --preset pytorch-example "${common[@]}" "${pe_args[@]}" --out "$RUNS/repeat"; then
    if cmp -s "$PE/model.safetensors" "$RUNS/repeat/model.safetensors"; then
      record repeat-identical ok 0 "two uninterrupted runs give the same bytes"
    else
      # Not a failure of vae: it says whether the resume comparison above can hold here.
      record repeat-identical ok 0 "two uninterrupted runs differ: training on this device is not bitwise deterministic"
    fi
  fi
fi

# gpu.json and GPU.md from what the steps left; comparisons with the CPU reference.
if ! "$PY" - "$OUT" "$DEVICE" "$EPOCHS" "$CPU_REF" "$DATA_DIR" "$PRESETS" "$KERNELS" <<'PYEOF'; then
import json, os, statistics, sys

out, device, epochs, cpu_ref, data_dir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
presets, kernels = sys.argv[6].split(","), sys.argv[7]
logs, runs = os.path.join(out, "logs"), os.path.join(out, "runs")
failed = False


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def json_lines(text):
    rows = []
    for line in text.splitlines():
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if isinstance(v, dict):
            rows.append(v)
    return rows


steps = []
for line in read(os.path.join(out, "steps.tsv")).splitlines():
    parts = line.split("\t")
    if len(parts) == 4:
        steps.append({"step": parts[0], "status": parts[1], "seconds": int(parts[2]), "note": parts[3]})

gpu = {}
csv = read(os.path.join(logs, "gpu.csv")).strip().splitlines()
if csv:
    fields = [f.strip() for f in csv[0].split(",")]
    gpu = dict(zip(["name", "driver", "memory", "compute_cap"], fields))
    gpu["count"] = len(csv)
for line in read(os.path.join(logs, "smi.out")).splitlines():
    if "CUDA Version:" in line:
        gpu["cuda_version"] = line.split("CUDA Version:")[1].split()[0].strip("|")


def summary(epoch_rows):
    rows = [r for r in epoch_rows if "epoch" in r and "val_loss" in r and "seconds" in r]
    if not rows:
        return None
    secs = [float(r["seconds"]) for r in rows]
    return {
        "epochs": len(rows),
        "seconds": secs,
        # The first epoch also pays for start-up (loading kernels, allocator warm-up).
        "median_seconds_after_first": statistics.median(secs[1:]) if len(secs) > 1 else secs[0],
        "val_loss": [float(r["val_loss"]) for r in rows],
        "final_val_loss": float(rows[-1]["val_loss"]),
    }


train = {}
for preset in presets:
    s = summary(json_lines(read(os.path.join(runs, preset, "metrics.jsonl"))))
    if s:
        train[preset] = s

ref, comparisons = {}, {}
if cpu_ref:
    try:
        ref = json.loads(read(cpu_ref)).get("train", {})
    except ValueError:
        print(f"gpu-check: --cpu-ref {cpu_ref}: not JSON", file=sys.stderr)
        failed = True
    for preset, r in ref.items():
        mine = train.get(preset)
        if mine is None or r.get("epochs") != mine["epochs"]:
            comparisons[preset] = {"ok": False, "why": "no run with the same number of epochs here"}
            failed = True
            continue
        rel = abs(mine["final_val_loss"] - r["final_val_loss"]) / abs(r["final_val_loss"])
        ok = rel <= 0.005
        failed |= not ok
        comparisons[preset] = {
            "ok": ok,
            "val_loss": mine["final_val_loss"],
            "cpu_val_loss": r["final_val_loss"],
            "relative_difference": rel,
            "seconds_per_epoch": mine["median_seconds_after_first"],
            "cpu_seconds_per_epoch": r["median_seconds_after_first"],
            "speedup": r["median_seconds_after_first"] / mine["median_seconds_after_first"],
        }

for preset, c in comparisons.items():
    note = (f"val loss {c['val_loss']:.3f} against the CPU's {c['cpu_val_loss']:.3f}: "
            f"{100 * c['relative_difference']:.3f}%" if "relative_difference" in c else c["why"])
    steps.append({"step": f"cpu-ref-{preset}", "status": "ok" if c["ok"] else "failed", "seconds": 0,
                  "note": note + ("" if c["ok"] else ", over 0.5%" if "relative_difference" in c else "")})

torch = {}
for preset in presets:
    t = summary(json_lines(read(os.path.join(logs, f"torch-{preset}.out"))))
    if t:
        if preset in train:
            t["ours_over_torch_seconds"] = (
                train[preset]["median_seconds_after_first"] / t["median_seconds_after_first"]
            )
        torch[preset] = t

infer = {}
for name in ["evaluate", "sample", "report"]:
    rows = json_lines(read(os.path.join(logs, f"infer-{name}.out")))
    if rows:
        infer[name] = rows[-1]

result = {
    "device": device,
    "epochs_per_run": epochs,
    "presets": presets,
    "kernels": kernels,
    "data_dir": data_dir,
    "gpu": gpu,
    "ld_library_path": read(os.path.join(logs, "ld_library_path.txt")).strip(),
    "train": train,
    "cpu_reference": comparisons,
    "torch": torch,
    "infer": infer,
    "steps": steps,
    "failed": failed or any(s["status"] in ("failed", "no-time") for s in steps),
}
with open(os.path.join(out, "gpu.json"), "w") as f:
    json.dump(result, f, indent=2)

f2 = lambda v, d=2: "" if v is None else f"{v:.{d}f}"
md = [f"# vae on {gpu.get('name', device)}", ""]
if gpu:
    md.append(f"GPU {gpu.get('name', '?')} (x{gpu.get('count', 1)}), driver {gpu.get('driver', '?')}, "
              f"CUDA {gpu.get('cuda_version', '?')} (driver), compute capability {gpu.get('compute_cap', '?')}.")
else:
    md.append(f"Device `{device}`; no nvidia-smi information.")
md += ["", f"## Training (`--kernels {kernels}`), {epochs} epochs of the Fashion-MNIST of `{data_dir}` "
       "(hvae: see its log's command), each preset's batch", "",
       "| run | s/epoch (median after the first) | first epoch s | val loss | CPU val loss | difference | speed-up over CPU | PyTorch s/epoch | ours/PyTorch |",
       "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
for preset, s in train.items():
    c = comparisons.get(preset, {})
    diff = f"{100 * c['relative_difference']:.3f}% ({'ok' if c['ok'] else 'over 0.5%'})" if "relative_difference" in c else ""
    md.append(f"| vae `{preset}` | {f2(s['median_seconds_after_first'])} | {f2(s['seconds'][0])} | "
              f"{f2(s['final_val_loss'])} | {f2(c.get('cpu_val_loss'))} | {diff} | {f2(c.get('speedup'))} | "
              f"{f2(torch.get(preset, {}).get('median_seconds_after_first'))} | "
              f"{f2(torch.get(preset, {}).get('ours_over_torch_seconds'))} |")
for preset, t in torch.items():
    md.append(f"| PyTorch `bench/torch_vae.py --preset {preset}` | {f2(t['median_seconds_after_first'])} | "
              f"{f2(t['seconds'][0])} | {f2(t['final_val_loss'])} | | | | | |")
if "evaluate" in infer:
    e = infer["evaluate"]
    md += ["", "## vae-infer", "",
           f"`evaluate --iw-samples 100 --limit 1000`: negative ELBO {f2(e.get('neg_elbo'))}, "
           f"NLL {f2(e.get('nll'))} nats ({e.get('examples')} examples)."]
md += ["", "## Steps", "", "| step | status | s | note |", "| --- | --- | --- | --- |"]
for s in steps:
    note = s["note"].replace("|", "\\|")
    md.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {note} |")
md += ["", f"Overall: {'FAILED' if result['failed'] else 'passed'}. Raw outputs: `logs/`, runs: `runs/`."]
with open(os.path.join(out, "GPU.md"), "w") as f:
    f.write("\n".join(md) + "\n")
sys.exit(1 if failed else 0)
PYEOF
  FAILED=1
fi

echo "gpu-check: wrote $OUT/gpu.json and $OUT/GPU.md" >&2
if ((FAILED)); then
  echo "gpu-check: FAILED (see $OUT/GPU.md)" >&2
  exit 1
fi
echo "gpu-check: passed" >&2
