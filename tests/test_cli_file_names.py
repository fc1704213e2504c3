"""The names of the files a run reads and writes: direction files of checkpoints in unrelated folders,
and one file refused as both the surface and the direction file."""
import pytest



@pytest.mark.parametrize("file2,name", [
    ("/tmp/rv/copy2.t7", "m1_model_2.t7__tmp_rv_copy2.t7_weights.h5"),
    ("../rv/copy2.t7", "m1_model_2.t7_.._rv_copy2.t7_weights.h5"),
    ("m2/deeper/copy2.t7", "m1_model_2.t7_m2_deeper_copy2.t7_weights.h5"),
    ("m2/copy2.t7", "m1_model_2.t7_m2_copy2.t7_weights.h5"),          # the reference's own case, unchanged
])
def test_a_model_file2_in_an_unrelated_folder_is_named_without_folders_of_its_own(file2, name):
    from landscape.cli import plot_surface
    from landscape.compat import net_plotter as directions   # the reference's name_direction_file(args)
    cfg = plot_surface.parse_config(["--model_file", "m1/model_2.t7", "--model_file2", file2, "--x=0:1:3"])
    assert directions.name_direction_file(cfg) == name


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_interpolation_to_a_checkpoint_in_an_unrelated_folder_runs(mlp_ckpt, tmp_path, monkeypatch, where):
    import shutil
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    work = tmp_path / "work"
    (work / "m1").mkdir(parents=True)
    shutil.copy(mlp_ckpt, work / "m1" / "model_2.t7")
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(mlp_ckpt, tmp_path / "elsewhere" / "copy2.t7")
    monkeypatch.chdir(work)
    file2 = str(tmp_path / "elsewhere" / "copy2.t7") if where == "absolute" else "../elsewhere/copy2.t7"
    rc = run_cli(plot_surface.main, ["--dataset", "digits", "--model", "digits_mlp", "--model_file", "m1/model_2.t7",
                                     "--model_file2", file2, "--x=0:1:3"])
    assert rc == 0
    made = sorted(p.name for p in work.iterdir() if p.suffix == ".h5")
    assert len(made) == 2 and all(p.startswith("m1_model_2.t7_") for p in made)


def test_cli_refuses_one_file_for_the_surface_and_the_directions(mlp_ckpt, in_tmp, capsys):
    from landscape.cli import plot_surface
    from landscape.errors import run_cli
    base = ["--dataset", "digits", "--model", "digits_mlp", "--model_file", mlp_ckpt, "--x=-1:1:3", "--xnorm", "filter"]
    for extra in (["--regenerate_directions", "--save_directions", "x.h5", "--surf_file", "x.h5"],
                  ["--save_directions", "x.h5", "--surf_file", "x.h5"], ["--dir_file", "x.h5", "--surf_file", "x.h5"]):
        assert run_cli(plot_surface.main, base + extra) == 2
        err = capsys.readouterr().err
        assert "same file 'x.h5'" in err and len(err.strip().splitlines()) == 1
        assert list(in_tmp.iterdir()) == []
