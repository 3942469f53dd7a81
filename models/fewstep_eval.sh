#!/usr/bin/env bash
# Scores the few-step models with the Rust runtime: KL(data || samples) in bits (k = 5, max norm;
# the 100,000 reference points against 10,000 generated points) over seeds 0, 1, 2, for each
# dataset with a shipped `DS-dualscale-fewstep` model:
#   - the shipped teacher `DS-dualscale` with ancestral DDPM, 100 steps (the target's reference);
#   - the few-step model with its own default (its manifest's `sampler` block: solver and list,
#     found by models/fewstep_lists.py), and the teacher with that same solver and list (what the
#     fine-tuning adds);
#   - the few-step model with DPM-Solver++(2M) on the log-SNR-uniform lists
#     (models/train/fewstep.py teacher_list(n, "logsnr")) at 1, 2, 4 and 8 NFE;
#   - for dino, the best 4-NFE list found and the distilled draft
#     models/fewstep/dino-dualscale-pd8 (DDIM on its list, its default).
# Every run starts from the data-moment Gaussian (`--init auto`). Writes a markdown table to stdout.
# Usage: models/fewstep_eval.sh [BINARY] > table.md   (BINARY defaults to target/release/dualscale)
source "$(dirname "$0")/eval_setup.sh"
declare -A lists=([1]="99" [2]="99,0" [4]="99,24,4,0" [8]="99,59,31,15,7,3,1,0")

row() { # dataset label NFE model-path [generate flags...] -> one table row over seeds 0-2
  local ds=$1 label=$2 nfe=$3 model=$4; shift 4
  local kls=()
  for seed in 0 1 2; do
    "$bin" generate --model "$model" --seed "$seed" --out "$out" --name run --overwrite "$@" >/dev/null
    kls+=("$("$bin" eval "$out/run.npy" --reference "$ds")")
  done
  printf '%s\n' "${kls[@]}" | awk -v ds="$ds" -v label="$label" -v nfe="$nfe" '
    { v[NR] = $1; s += $1; if (NR == 1 || $1 < lo) lo = $1; if (NR == 1 || $1 > hi) hi = $1 }
    END { printf "| %s | %s | %s | %.3f | %.3f | %.3f | %.3f | %.3f |\n", ds, label, nfe, v[1], v[2], v[3], s / NR, hi - lo }'
}

echo "| dataset | model, sampler | NFE | seed 0 | seed 1 | seed 2 | mean | range |"
echo "|---|---|---|---|---|---|---|---|"
for ds in dino moons circle line; do
  fast=models/$ds-dualscale-fewstep.onnx
  [ -f "$fast" ] || continue
  read -r kind list < <(python3 -c 'import json, sys; s = json.load(open(sys.argv[1]))["sampler"]; print(s["type"], ",".join(map(str, s["timesteps"])))' "${fast%.onnx}.json")
  nfe=$(tr ',' '\n' <<<"$list" | wc -l)
  row "$ds" "teacher, ddpm" 100 "models/$ds-dualscale.onnx" --sampler ddpm
  row "$ds" "fewstep, its default: $kind [$list]" "$nfe" "$fast"
  row "$ds" "teacher, $kind [$list]" "$nfe" "models/$ds-dualscale.onnx" --sampler "$kind" --timesteps "$list"
  for n in 1 2 4 8; do
    row "$ds" "fewstep, dpmpp-2m log-SNR" "$n" "$fast" --sampler dpmpp-2m --timesteps "${lists[$n]}"
  done
  if [ "$ds" = dino ]; then
    # The best 4-NFE list models/fewstep_lists.py found (--nfe 4), and the distilled draft.
    row "$ds" "fewstep, unipc [99,30,11,4]" 4 "$fast" --sampler unipc --timesteps 99,30,11,4
    row "$ds" "pd8 draft, ddim on its list" 8 models/fewstep/dino-dualscale-pd8.onnx
  fi
done
