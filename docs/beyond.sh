#!/usr/bin/env bash
# The README's "Beyond the reference" figures, each made by the command the README shows next to it,
# on the checkpoints of a finished demo run (./demo.sh). docs/make_readme_figures.py runs this.
# Usage: docs/beyond.sh [demo_out]      (python: the one on PATH, e.g. .venv/bin)
set -euo pipefail
D=${1:-demo_out}
M=$(ls -d "$D"/trained_nets/*_bs=16_*/ | sed "s:/$::")     # digits_cnn trained with batch 16
L=$(ls -d "$D"/trained_nets/*_bs=1024_*/ | sed "s:/$::")   # ... and with batch 1024
FLAGS="--dataset digits --model digits_cnn --batch_size 2048"
LEVELS="--vmin 0.05 --vmax 6 --vlevel 0.3"

# 1. Top eigenpairs, trace and spectral density of the large-batch minimiser
python plot_hessian_eigen.py $FLAGS --model_file $L/model_60.t7 --at_center --top_k 5 --esd --esd_probes 10 \
  --out $D/hessian_large.h5 --format png

# 2. The loss along the two sharpest directions: the Hessian's top two eigenvectors (unit length)
python plot_surface.py $FLAGS --model_file $L/model_60.t7 --xdir hessian --ydir hessian --x=-1:1:31 --y=-1:1:31 \
  --surf_file $D/hessian_dirs_large.h5 --plot --vmin 0.05 --vmax 2.5 --vlevel 0.15 --format png

# 3. The plane through the two minimisers and the batch-16 run's epoch 1, orthogonalised, the three marked
python plot_surface.py $FLAGS --model_file $M/model_60.t7 --model_file2 $L/model_60.t7 --model_file3 $M/model_1.t7 \
  --dir_type states --orthogonalize --x=-0.2:1.2:36 --y=-0.15:0.5:27 --surf_file $D/plane.h5 --plot \
  --vmin 0.05 --vmax 2.5 --vlevel 0.15 --format png

# 4. Paths from the batch-16 minimiser to the batch-1024 one through the batch-16 run's epoch 20
for T in polychain bezier; do
  python plot_surface.py $FLAGS --path_files $M/model_60.t7 $M/model_20.t7 $L/model_60.t7 --path_type $T \
    --dir_type states --x=0:1:41 --surf_file $D/path_$T.h5
done
python plot_1D.py --surf_file $D/path_polychain.h5 $D/path_bezier.h5 --labels polychain bezier --loss_max 3 --format png

# 5. One random direction moving only the fully connected layers (--params), against all layers
python plot_surface.py $FLAGS --model_file $L/model_60.t7 --x=-1:1:51 --xnorm filter --xignore biasbn --params '^fc' \
  --surf_file $D/fc_only_large.h5
python plot_1D.py --surf_file $D/random_1d_large.h5 $D/fc_only_large.h5 --labels "all layers" "fc layers only" \
  --loss_max 3 --format png

# 6. Two optimisers' minimisers on one set of axes
python plot_1D.py --surf_file $D/random_1d_small.h5 $D/random_1d_large.h5 --labels "batch 16" "batch 1024" \
  --loss_max 3 --format png
python plot_2D.py --surf_file $D/random_2d_small.h5 $D/random_2d_large.h5 --labels "batch 16" "batch 1024" $LEVELS \
  --format png
python plot_2D.py --surf_file $D/random_2d_small.h5 $D/random_2d_large.h5 --labels "batch 16" "batch 1024" --html

# 7. The GGN of the large-batch minimiser: its spectral density over the Hessian's (step 1), and per layer
python plot_hessian_eigen.py $FLAGS --model_file $L/model_60.t7 --at_center --curvature ggn --esd --esd_probes 10 \
  --per_layer --out $D/ggn_large.h5 --format png
python plot_1D.py --esd_file $D/hessian_large.h5 $D/ggn_large.h5 --labels Hessian GGN --format png
for C in hessian ggn; do     # the same run after one epoch, far from a minimum
  python plot_hessian_eigen.py $FLAGS --model_file $L/model_1.t7 --at_center --curvature $C --esd --esd_probes 10 \
    --trace_samples 10 --out $D/${C}_epoch1.h5 --format png
done
python plot_1D.py --esd_file $D/hessian_epoch1.h5 $D/ggn_epoch1.h5 --labels Hessian GGN --format png
