"""Directions: filter normalisation, biasbn, states, targets, seeds and the reference's file names."""
import pytest
import torch

import h5_util
import net_plotter
import plot_surface
from helpers import load_net


def cfg(*args):
    return plot_surface.parse_config(["--model_file", "M/model_10.t7", *args])


def test_filter_normalised_direction_has_the_weights_filter_norms(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    space = net_plotter.direction_space(net, "weights")
    d = net_plotter.random_direction(space, "filter", "biasbn", torch.Generator().manual_seed(0))
    for (name, w), di in zip(space, d):
        if w.dim() > 1:
            torch.testing.assert_close(di.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5, atol=1e-6)
        else:
            assert torch.count_nonzero(di) == 0, name  # biasbn zeroes every entry of dim <= 1


def test_without_ignore_small_entries_copy_the_weights(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    space = net_plotter.direction_space(net, "weights")
    d = net_plotter.random_direction(space, "filter", "", torch.Generator().manual_seed(0))
    for (_, w), di in zip(space, d):
        if w.dim() <= 1:
            assert torch.equal(di, w)


@pytest.mark.parametrize("norm", ["layer", "weight", "dfilter", "dlayer"])
def test_other_normalisations(cnn_ckpt, norm):
    net = load_net("digits_cnn", cnn_ckpt)
    space = net_plotter.direction_space(net, "weights")
    raw = [torch.randn(w.shape, generator=torch.Generator().manual_seed(0)) for _, w in space]
    d = net_plotter.random_direction(space, norm, "biasbn", torch.Generator().manual_seed(0))
    w, r, di = space[0][1], raw[0], d[0]  # conv1.weight, drawn first from the same seed
    expected = {"layer": r * w.norm() / r.norm(), "weight": r * w,
                "dfilter": r / (r.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10), "dlayer": r / r.norm()}[norm]
    torch.testing.assert_close(di, expected)


def test_states_direction_moves_bn_statistics_but_never_integers(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    space = net_plotter.direction_space(net, "states")
    names = [n for n, _ in space]
    assert "bn1.running_mean" in names and "bn1.num_batches_tracked" in names
    d = net_plotter.random_direction(space, "filter", "", torch.Generator().manual_seed(0))
    setter = net_plotter.PointSetter(net, [d], "states", "cpu")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    setter.set([0.5])
    after = net.state_dict()
    assert not torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])
    torch.testing.assert_close(after["bn1.running_var"], before["bn1.running_var"] * 1.5)  # d = w, x = 0.5
    assert torch.equal(after["bn1.num_batches_tracked"], before["bn1.num_batches_tracked"])
    setter.restore()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())


def test_weights_direction_leaves_bn_statistics_alone(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    space = net_plotter.direction_space(net, "weights")
    assert all("running" not in n for n, _ in space)


def test_target_direction_is_model2_minus_model1(cnn_run):
    a = load_net("digits_cnn", f"{cnn_run}/model_2.t7")
    b = load_net("digits_cnn", f"{cnn_run}/model_4.t7")
    d = net_plotter.target_direction(net_plotter.direction_space(a, "states"), net_plotter.direction_space(b, "states"))
    for (k, va), vb, dk in zip(a.state_dict().items(), b.state_dict().values(), d):
        if va.is_floating_point():
            torch.testing.assert_close(dk, vb - va)
        else:
            assert torch.count_nonzero(dk) == 0


def test_same_seed_gives_identical_direction_files(in_tmp, cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    c = plot_surface.parse_config(["--model_file", cnn_ckpt, "--y=-1:1:3", "--xnorm", "filter", "--ynorm", "filter",
                                   "--xignore", "biasbn", "--yignore", "biasbn"])
    files = []
    for name in ("a.h5", "b.h5"):
        h5_util.write_direction_file(name, net_plotter.create_directions(c, net, None), {})
        files.append(h5_util.read_direction_file(name))
    for da, db in zip(*files):
        assert all(torch.equal(x, y) for x, y in zip(da, db))
    assert not all(torch.equal(x, y) for x, y in zip(files[0][0], files[0][1]))  # x and y differ
    c.seed = 124
    other = net_plotter.create_directions(c, net, None)
    assert not torch.equal(other[0][0], files[0][0][0])


def test_same_dir_uses_x_for_y(cnn_ckpt):
    net = load_net("digits_cnn", cnn_ckpt)
    c = plot_surface.parse_config(["--model_file", cnn_ckpt, "--y=-1:1:3", "--xnorm", "filter", "--same_dir"])
    x, y = net_plotter.create_directions(c, net, None)
    assert all(torch.equal(a, b) for a, b in zip(x, y))


def test_unnormalised_direction_warns(cnn_ckpt, capsys):
    net = load_net("digits_cnn", cnn_ckpt)
    net_plotter.create_directions(cfg(), net, None)
    assert "not normalised" in capsys.readouterr().err


# The names the reference's name_direction_file gives for the README's command lines.
VGG_A = "cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=128_wd=0.0_save_epoch=1/model_300.t7"
VGG_B = "cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=8192_wd=0.0_save_epoch=1/model_300.t7"
RES = "cifar10/trained_nets/resnet56_sgd_lr=0.1_bs=128_wd=0.0005/model_300.t7"


@pytest.mark.parametrize("args,dir_name,surf_name", [
    (["--model_file", VGG_A, "--model_file2", VGG_B, "--x=-0.5:1.5:401", "--dir_type", "states"],
     "cifar10/trained_nets/vgg9_sgd_lr=0.1_bs=128_wd=0.0_save_epoch=1_model_300.t7_"
     "vgg9_sgd_lr=0.1_bs=8192_wd=0.0_save_epoch=1_model_300.t7_states.h5",
     "_[-0.5,1.5,401].h5"),
    (["--model_file", VGG_A, "--x=-1:1:51", "--xnorm", "filter", "--xignore", "biasbn"],
     VGG_A + "_weights_xignore=biasbn_xnorm=filter.h5", "_[-1.0,1.0,51].h5"),
    (["--model_file", RES, "--x=-1:1:51", "--y=-1:1:51", "--xnorm", "filter", "--xignore", "biasbn",
      "--ynorm", "filter", "--yignore", "biasbn"],
     RES + "_weights_xignore=biasbn_xnorm=filter_yignore=biasbn_ynorm=filter.h5", "_[-1.0,1.0,51]x[-1.0,1.0,51].h5"),
    (["--model_file", "a/m.t7", "--model_file2", "a/n.t7", "--x=0:1:3", "--idx", "2", "--raw_data",
      "--data_split", "4", "--split_idx", "1"],
     "a/m.t7_n.t7_weights_idx=2.h5", "_[0.0,1.0,3]_rawdata_datasplit=4_splitidx=1.h5"),
])
def test_default_names_match_the_reference(args, dir_name, surf_name):
    c = plot_surface.parse_config(args)
    assert net_plotter.name_direction_file(c) == dir_name
    assert plot_surface.name_surface_file(c, dir_name) == dir_name + surf_name


def test_fixed_reference_naming_bugs():
    c = plot_surface.parse_config(["--model_file", "a/m.t7", "--y=0:1:2", "--model_file3", "a/k.t7"])
    assert net_plotter.name_direction_file(c) == "a/m.t7_weights_k.t7.h5"
    c = plot_surface.parse_config(["--model_file", "A/m.t7", "--model_file2", "B/m.t7"])
    assert net_plotter.name_direction_file(c) == "A_m.t7_B_m.t7_weights.h5"


def test_reference_direction_file_layout(in_tmp, cnn_ckpt):
    import h5py
    net = load_net("digits_cnn", cnn_ckpt)
    c = plot_surface.parse_config(["--model_file", cnn_ckpt, "--y=-1:1:3", "--xnorm", "filter"])
    h5_util.write_direction_file("d.h5", net_plotter.create_directions(c, net, None), {})
    with h5py.File("d.h5", "r") as f:
        assert set(f) == {"xdirection", "ydirection"}
        n = len(list(net.parameters()))
        assert sorted(f["xdirection"], key=int) == [str(i) for i in range(n)]
        for i, p in enumerate(net.parameters()):
            assert f["xdirection"][str(i)].shape == p.shape
