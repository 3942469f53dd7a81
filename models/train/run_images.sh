#!/bin/sh
# The image models' background chain: data, then each run's training (about 85 minutes each,
# checkpointed every 250 steps), export of the seed-0 models and evaluation, in priority order.
# Rerun the same command after a kill: finished stages are skipped, training resumes from its
# last checkpoint. Each stage is its own process (niceness 10, one torch thread), so code that
# changed since the chain started is picked up by the next stage. Runs one stage at a time.
#   nohup sh models/train/run_images.sh > /tmp/image-train.log 2>&1 &
cd "$(dirname "$0")/../.." || exit 1
py="nice -n 10 python models/train/make_images.py"
$py data || exit 1
for seed in 0 1; do
    for arch in dualscale baseline; do
        $py train --arch $arch --seed $seed || exit 1
        if [ $seed = 0 ]; then
            $py export --arch $arch || echo "run_images.sh: export of $arch failed"
        fi
        $py eval --arch $arch --seed $seed || echo "run_images.sh: eval of $arch seed $seed failed"
    done
done
$py fd-check || echo "run_images.sh: fd-check failed"
echo "run_images.sh: all stages done"
