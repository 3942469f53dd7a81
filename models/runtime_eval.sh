#!/usr/bin/env bash
# Scores the Rust runtime's samplers on the shipped dual-scale models: KL(data || samples) in bits
# (k = 5, max norm; all 100k reference points against 10,000 generated points), for
#   - ddpm with 100 steps (the published evaluation), from N(0, I) and from the data moments;
#   - ddim, dpmpp-2m and unipc at 5, 10 and 20 steps (= NFE), from both starting distributions;
#   - adaptive at three tolerances (its NFE, rejected steps included, is reported).
# Writes a markdown table to stdout. Usage: models/runtime_eval.sh [BINARY] > table.md
# BINARY defaults to target/release/dualscale (built if missing).
# INITS="data" or DDPM=0 in the environment skip the N(0, I) rows or the ddpm column (quicker).
source "$(dirname "$0")/eval_setup.sh"

kl() { # dataset init sampler steps [extra flags...] -> "KL NFE"
  local ds=$1 init=$2 sampler=$3 steps=$4; shift 4
  "$bin" generate --model "models/$ds-dualscale.onnx" --sampler "$sampler" ${steps:+--steps "$steps"} \
    --init "$init" --count 10000 --seed 0 --out "$out" --name run --overwrite "$@" >/dev/null
  local nfe
  nfe=$(grep -o '"nfe": [0-9]*' "$out/run.json" | head -1 | grep -o '[0-9]*$')
  printf '%s %s' "$("$bin" eval "$out/run.npy" --reference "models/data/$ds.npy")" "$nfe"
}

echo "| dataset | start | ddpm 100 | ddim 5 | ddim 10 | ddim 20 | dpmpp-2m 5 | dpmpp-2m 10 | dpmpp-2m 20 | unipc 5 | unipc 10 | unipc 20 | adaptive rtol 0.5 (NFE) | adaptive rtol 0.2 (NFE) | adaptive rtol 0.05 (NFE) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for ds in circle dino line moons; do
  for init in ${INITS:-unit data}; do
    row="| $ds | $init"
    if [ "${DDPM:-1}" = 1 ]; then read -r v _ <<<"$(kl "$ds" "$init" ddpm 100)"; else v=-; fi
    row="$row | $v"
    for sampler in ddim dpmpp-2m unipc; do
      for steps in 5 10 20; do
        read -r v _ <<<"$(kl "$ds" "$init" "$sampler" "$steps")"; row="$row | $v"
      done
    done
    for rtol in ${RTOLS:-0.5 0.2 0.05}; do
      read -r v n <<<"$(kl "$ds" "$init" adaptive "" --rtol "$rtol")"; row="$row | $v ($n)"
    done
    echo "$row |"
  done
done
