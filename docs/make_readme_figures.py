"""Regenerate the README's figures from a finished demo run (./demo.sh), at a web-friendly size.

    python docs/make_readme_figures.py [demo_out]

Copies one figure of each kind into docs/images (scaled to 900 px wide), runs docs/beyond.sh (the
"Beyond the reference" commands the README shows) and copies its figures, adds an eigenvalue-ratio
map (plot_hessian_eigen.py on an 11x11 grid around the large-batch minimiser), a screenshot of the
interactive viewer taken in headless Chromium, and the language model's contour plot when
examples/README.md's commands have made it.
"""
import glob
import os
import subprocess
import sys

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "docs", "images")
PICKS = {
    "interpolation_1d.png": "interpolation_small_to_large.h5_1d_loss_acc.png",
    "random_1d_small.png": "random_1d_small.h5_1d_loss_acc.png",
    "random_1d_large.png": "random_1d_large.h5_1d_loss_acc.png",
    "train_loss_1d.png": "random_1d_large.h5_1d_train_loss.png",
    "train_err_1d.png": "random_1d_large.h5_1d_train_err.png",
    "contour_small.png": "random_2d_small.h5_train_loss_2dcontour.png",
    "contour_large.png": "random_2d_large.h5_train_loss_2dcontour.png",
    "contourf_large.png": "random_2d_large.h5_train_loss_2dcontourf.png",
    "heat_large.png": "random_2d_large.h5_train_loss_2dheat.png",
    "surface_3d_large.png": "random_2d_large.h5_train_loss_3dsurface.png",
    "pca_trajectory.png": "pca_trajectory_small.proj.h5.png",
    "pca_contour_trajectory.png": "pca_trajectory_small.proj.h5_train_loss_2dcontour_proj.png",
    "curve_vs_line.png": "path_straight_line.h5_1d_overlay_train_loss.png",
    "curve_plane.png": "curve_plane.h5_train_loss_2dcontourf.png",
}
BEYOND = {  # made by docs/beyond.sh, the commands the README shows next to them
    "esd_large.png": "hessian_large.h5_esd.png",
    "hessian_dirs_large.png": "hessian_dirs_large.h5_train_loss_2dcontour.png",
    "plane.png": "plane.h5_train_loss_2dcontourf.png",
    "paths.png": "path_polychain.h5_1d_overlay_train_loss.png",
    "params_fc.png": "random_1d_large.h5_1d_overlay_train_loss.png",
    "overlay_1d.png": "random_1d_small.h5_1d_overlay_train_loss.png",
    "compare_2d.png": "random_2d_small.h5_train_loss_2dcontour_compare.png",
    "esd_hessian_ggn.png": "hessian_large.h5_esd_overlay.png",
    "esd_hessian_ggn_epoch1.png": "hessian_epoch1.h5_esd_overlay.png",
    "per_layer_ggn.png": "ggn_large.h5_per_layer.png",
}


def shrink(src, dst, width=900):
    img = Image.open(src).convert("RGB")
    img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
    img.save(dst, optimize=True)
    print(f"{dst} <- {os.path.basename(src)}")


def main():
    demo = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "demo_out"))
    os.makedirs(OUT, exist_ok=True)
    for name, src in PICKS.items():
        shrink(os.path.join(demo, src), os.path.join(OUT, name))
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    subprocess.run(["bash", os.path.join(REPO, "docs", "beyond.sh"), os.path.relpath(demo, REPO)], check=True, env=env,
                   cwd=REPO)
    for name, src in BEYOND.items():
        shrink(os.path.join(demo, src), os.path.join(OUT, name), 1000 if "compare" in name else 900)
    lm = glob.glob(os.path.join(REPO, "examples", "charlm_out", "*x[[]-1.0,1.0,21[]].h5_train_loss_2dcontour.png"))
    if lm:  # the README's language-model figure, when examples/README.md's commands have been run
        shrink(lm[0], os.path.join(OUT, "charlm_contour.png"))
    large = glob.glob(os.path.join(demo, "trained_nets", "*bs=1024*", "model_60.t7"))[0]
    surf = os.path.join(demo, "eig_large.h5")
    subprocess.run([sys.executable, os.path.join(REPO, "plot_hessian_eigen.py"), "--dataset", "digits", "--model",
                    "digits_cnn", "--model_file", large, "--x=-1:1:11", "--y=-1:1:11", "--xnorm", "filter",
                    "--xignore", "biasbn", "--ynorm", "filter", "--yignore", "biasbn", "--batch_size", "2048",
                    "--surf_file", surf, "--plot", "--format", "png"], check=True, env=env)
    shrink(surf + "_min_eig_max_eig_abs_ratio_heat_sns.png", os.path.join(OUT, "eig_abs_ratio_large.png"))
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--use-gl=swiftshader", "--enable-unsafe-swiftshader", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 680})
        page.goto("file://" + os.path.join(demo, "random_2d_large.h5_train_loss_viewer.html"))
        page.wait_for_timeout(3000)
        page.screenshot(path=os.path.join(OUT, "viewer.png"))
        browser.close()
    shrink(os.path.join(OUT, "viewer.png"), os.path.join(OUT, "viewer.png"), 1000)


if __name__ == "__main__":
    main()
