#!/usr/bin/env bash
# A sweep over many machines as a Slurm array job: every array task runs `midm batch` on its
# own shard of the same manifest (entry j goes to task j % N), so the tasks need no
# coordination; the results land in one shared output folder. Resubmitting (or requeueing a
# failed task) skips the results already there.
#
#   sbatch --array=0-15 scripts/slurm-batch.sh pairs.csv /shared/out
#
# The number of shards is the array's size (SLURM_ARRAY_TASK_COUNT); each task writes the contact
# sheet of its shard, OUT_DIR/sheet-shard<i>of<N>.png. MIDM=path/to/midm overrides the binary
# (default: the release build of this source tree); extra arguments go to `midm batch`
# (e.g. --seed 0 --model DIR --ddim-steps 12).
#SBATCH --job-name=midm-batch
#SBATCH --cpus-per-task=2
#SBATCH --mem=4G
#SBATCH --time=04:00:00
#SBATCH --output=midm-batch-%A_%a.log
set -euo pipefail
manifest=${1:?usage: sbatch --array=0-N scripts/slurm-batch.sh MANIFEST OUT_DIR [midm batch flags]}
out=${2:?usage: sbatch --array=0-N scripts/slurm-batch.sh MANIFEST OUT_DIR [midm batch flags]}
shift 2
midm=${MIDM:-"$(dirname "$0")/../target/release/midm"}
i=${SLURM_ARRAY_TASK_ID:?run this as an array job: sbatch --array=0-N}
n=${SLURM_ARRAY_TASK_COUNT:?run this as an array job: sbatch --array=0-N}
# One rayon thread per allocated core.
export RAYON_NUM_THREADS=${SLURM_CPUS_PER_TASK:-2}
exec "$midm" batch "$manifest" --out "$out" --shard "$i/$n" --batch 8 "$@"
