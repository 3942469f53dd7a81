#!/bin/sh
# The image models' background chain: data, then for each architecture its seeds' training (about
# 85 minutes each, checkpointed every 250 steps), export of the seed-0 model and evaluation.
# The two architectures run side by side, one process and one torch thread each (niceness 10).
# Rerun the same command after a kill: finished stages are skipped, training resumes from its
# last checkpoint. Each stage is its own process, so code that changed since the chain started is
# picked up by the next stage.
# Each architecture's log: models/train/runs/images/chain-{arch}.log.
#   nohup sh models/train/run_images.sh > /tmp/image-train.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 1
py="nice -n 10 python models/train/make_images.py"
$py data || exit 1
chain() {
    arch=$1
    for seed in 0 1 2; do
        $py train --arch "$arch" --seed $seed || return 1
        if [ $seed = 0 ]; then
            $py export --arch "$arch" || echo "run_images.sh: export of $arch failed"
        fi
        $py eval --arch "$arch" --seed $seed || echo "run_images.sh: eval of $arch seed $seed failed"
    done
}
logs=models/train/runs/images
chain dualscale > $logs/chain-dualscale.log 2>&1 &
chain baseline > $logs/chain-baseline.log 2>&1 &
wait
$py fd-check || echo "run_images.sh: fd-check failed"
echo "run_images.sh: all stages done"
