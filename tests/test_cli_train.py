"""The trainer: the reference's folder names and checkpoint format, resuming, dry runs, accuracy."""
import os

import pytest
import torch

from helpers import train, trainer
from landscape.errors import UserError


def test_folder_name_matches_the_reference():
    args = trainer.build_parser().parse_args(["--model", "vgg9", "--batch_size", "8192", "--weight_decay", "0.0",
                                               "--save_epoch", "1"])
    assert trainer.name_save_folder(args) == "vgg9_sgd_lr=0.1_bs=8192_wd=0.0_mom=0.9_save_epoch=1"
    args = trainer.build_parser().parse_args(["--model", "resnet56", "--optimizer", "adam", "--lr", "0.001",
                                               "--lr_decay", "0.5", "--noaug", "--idx", "2"])
    assert trainer.name_save_folder(args) == \
        "resnet56_adam_lr=0.001_lr_decay=0.5_bs=128_wd=0.0005_mom=0.9_save_epoch=10_noaug_idx=2"


def test_checkpoints_every_epoch_from_zero(mlp_run):
    files = os.listdir(mlp_run)
    for e in range(0, 7):
        assert f"model_{e}.t7" in files and f"opt_state_{e}.t7" in files
    ckpt = torch.load(os.path.join(mlp_run, "model_6.t7"), weights_only=True)
    assert ckpt["epoch"] == 6 and 0 <= ckpt["acc"] <= 100
    opt = torch.load(os.path.join(mlp_run, "opt_state_6.t7"), weights_only=True)
    assert "optimizer" in opt and "state" in opt["optimizer"]
    lines = open(os.path.join(mlp_run, "log.out")).read().splitlines()
    assert lines[0].startswith("e: 0 loss:") and lines[-1].startswith("e: 6 loss:")


def test_save_epoch_schedule():
    assert trainer.checkpoint_epochs(25, 10) == [0, 1, 10, 20, 25]
    assert trainer.checkpoint_epochs(300, 100) == [0, 1, 100, 150, 200, 300]


def test_resume_continues_from_the_checkpoint(tmp_path, mlp_run):
    folder = train(tmp_path, "digits_mlp", epochs=8, batch_size=32,
                   extra=["--resume_model", os.path.join(mlp_run, "model_6.t7"),
                          "--resume_opt", os.path.join(mlp_run, "opt_state_6.t7")])
    files = os.listdir(folder)
    assert "model_7.t7" in files and "model_8.t7" in files and "model_0.t7" not in files


def test_digits_cnn_reaches_95_percent(tmp_path):
    folder = train(tmp_path, "digits_cnn", epochs=12, batch_size=64, lr=0.1, save_epoch=100)
    ckpt = torch.load(os.path.join(folder, "model_12.t7"), weights_only=True)
    assert ckpt["acc"] >= 95.0


def test_dry_run_writes_nothing(tmp_path, capsys):
    save = tmp_path / "nets"
    assert trainer.main(["--dataset", "digits", "--model", "digits_cnn", "--epochs", "5", "--save", str(save),
                         "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "would write" in out and "Nothing was trained" in out
    assert not save.exists()


def test_label_corruption_writes_safe_label_files(tmp_path):
    folder = train(tmp_path, "digits_mlp", epochs=1, extra=["--label_corrupt_prob", "0.5"])
    labels = torch.load(os.path.join(folder, "trainloader.dat"), weights_only=True)["targets"]
    import dataloader
    true = dataloader.load_tensors("digits").train_y
    frac = (labels != true).float().mean().item()
    assert 0.3 < frac < 0.6  # half are redrawn, a tenth of those land on the true class


def test_bad_flags_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="label_corrupt_prob"):
        trainer.main(["--dataset", "digits", "--label_corrupt_prob", "2", "--save", str(tmp_path)])
    with pytest.raises(UserError, match="does not exist"):
        trainer.main(["--dataset", "digits", "--resume_model", "/nope.t7", "--save", str(tmp_path)])
