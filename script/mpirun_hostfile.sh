#!/bin/bash
# A loss surface over the machines of a hostfile, with plain mpirun (no scheduler), that can be stopped
# and resumed:
#
#   HOSTFILE=hosts.txt NP=8 bash script/mpirun_hostfile.sh       # hosts.txt: "gpu01 slots=4" per line
#   NP=4 HOSTFILE= bash script/mpirun_hostfile.sh                # 4 ranks on this machine
#
# Run it from the loss-landscape checkout (or set LL_DIR), on a file system every host sees. Every part
# of the command is an environment variable with a default (section "what to compute"). Written for
# Open MPI's mpirun; for MPICH/Intel MPI use MPIRUN_FLAGS="-f $HOSTFILE -ppn 4" and HOSTFILE=.
#
# Stopping and resuming: send SIGTERM to this script (kill <its pid>; a scheduler's pre-emption does
# the same) or press Ctrl-C. The script passes SIGTERM on to mpirun, which passes it on to every rank;
# plot_surface.py then writes every computed point to the surface file and exits. (Open MPI's mpirun
# kills the ranks about 0.25 s after passing the signal on: enough to save the points here, and if a
# rank is cut short, at most the last --flush_seconds (5 s) of points are lost.) To resume, run the
# same command again: only the points still missing are computed, and the values are identical to
# those of an uninterrupted run. The script exits 0 when the grid is complete, 143 when it was stopped.

# ----------------------------------------------------------------------------- what to compute
LL_DIR=${LL_DIR:-.}                        # the loss-landscape checkout; relative paths are taken from it
HOSTFILE=${HOSTFILE-hostfile}              # Open MPI hostfile; set it empty (HOSTFILE=) for this machine only
NP=${NP:-4}                                # MPI ranks in all
RANKS_PER_NODE=${RANKS_PER_NODE:-4}        # ranks per host: one per GPU
DATASET=${DATASET:-cifar10}                # cifar10 (in cifar10/data) | digits | path/to/file.py:function
MODEL=${MODEL:-resnet56}
MODEL_FILE=${MODEL_FILE:-cifar10/trained_nets/resnet56_sgd_lr=0.1_bs=128_wd=0.0005_save_epoch=1/model_300.t7}
XRANGE=${XRANGE:--1:1:51}                  # xmin:xmax:xnum
YRANGE=${YRANGE--1:1:51}                   # ymin:ymax:ynum; set it empty (YRANGE=) for a 1D curve
DIRECTIONS=${DIRECTIONS:---dir_type weights --xnorm filter --xignore biasbn --ynorm filter --yignore biasbn}
DEVICE=${DEVICE---cuda}                    # set it empty (DEVICE=) to compute on the CPUs
EXTRA=${EXTRA---plot}                      # more flags, e.g. "--batch_size 1024 --eval_test --plot"
MPIRUN=${MPIRUN:-mpirun}
MPIRUN_FLAGS=${MPIRUN_FLAGS-${HOSTFILE:+--hostfile $HOSTFILE} --map-by ppr:$RANKS_PER_NODE:node}

# Torch CPU threads per rank: 0 lets the tool choose (the cores the rank may use, shared among the
# ranks of its node that may use the same cores). BLAS/OpenMP libraries get one thread unless set.
THREADS=${THREADS:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

cd "$LL_DIR" || { echo "error: LL_DIR=$LL_DIR is not a folder" >&2; exit 2; }

# ----------------------------------------------------------------------------- run, forwarding SIGTERM
terminated=0
run_pid=
forward_term() {
    terminated=1
    echo "$(date '+%F %T') stopping: asking the ranks to save their points and exit"
    [ -n "$run_pid" ] && kill -TERM "$run_pid" 2>/dev/null
}
trap forward_term TERM INT HUP   # a background job ignores Ctrl-C, so pass that on as SIGTERM too

if [ "$terminated" = 0 ]; then
    "$MPIRUN" -np "$NP" $MPIRUN_FLAGS -x OMP_NUM_THREADS python plot_surface.py --mpi $DEVICE \
        --dataset "$DATASET" --model "$MODEL" --model_file "$MODEL_FILE" --x="$XRANGE" ${YRANGE:+--y="$YRANGE"} \
        --threads "$THREADS" $DIRECTIONS $EXTRA &
    run_pid=$!
fi
# `wait` returns early when the trap runs; wait again until mpirun has really ended.
while [ -n "$run_pid" ] && kill -0 "$run_pid" 2>/dev/null; do
    wait "$run_pid"
done
rc=143
[ -n "$run_pid" ] && { wait "$run_pid"; rc=$?; }

if [ "$rc" = 0 ]; then
    echo "$(date '+%F %T') grid complete"
elif [ "$terminated" = 1 ] || [ "$rc" = 143 ]; then
    echo "$(date '+%F %T') stopped with the computed points saved; run the same command again to resume"
    rc=143
else
    echo "$(date '+%F %T') mpirun exited with $rc"
fi
exit "$rc"
