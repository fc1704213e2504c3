# The reference implementation's command lines (tomgoldstein/loss-landscape, script/2d_contour_vgg9.sh),
# unchanged: they run as they are with this tool. Run from the repository root, with CIFAR-10 in
# cifar10/data (or append --download to a command) and the checkpoints in cifar10/trained_nets/
# (the folder names are those of the authors' pre-trained models; see script/README.md).
# ===========================================================
# 2d loss contours for VGG-9
# ===========================================================

# ------------------------------------------------------------
# SGD
#------------------------------------------------------------
mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=128_wd=0.0005_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=8192_wd=0.0005_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=128_wd=0.0_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=8192_wd=0.0_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

# ------------------------------------------------------------
# Adam
#------------------------------------------------------------
mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_adam_lr=0.001_bs=128_wd=0.0005_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_adam_lr=0.001_bs=8192_wd=0.0005_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_adam_lr=0.001_bs=128_wd=0.0_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter

mpirun -n 4 python plot_surface.py --x=-1:1:51 --y=-1:1:51 --model vgg9 \
--model_file cifar10/trained_nets/vgg9_adam_lr=0.001_bs=8192_wd=0.0_save_epoch=1/model_300.t7 \
--mpi --cuda --dir_type weights --xignore biasbn --xnorm filter --yignore biasbn --ynorm filter
