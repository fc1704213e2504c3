"""--precision bf16 on a CPU without native bf16 instructions: one warning line before the run (command
line and API), read from the CPU's flags (LL_ASSUME_CPU_BF16 overrides), and the README says so."""
import os
import warnings

import torch
import torch.nn as nn

import landscape
from helpers import FILTER_X, MLP, REPO, copy_ckpt, ok


def _bf16_warnings(stderr):
    lines = [ln.strip() for ln in stderr.replace("\r", "\n").splitlines() if ln.strip()]
    return lines, [i for i, ln in enumerate(lines)
                   if ln.lower().startswith("warning") and ("bf16" in ln.lower() or "bfloat16" in ln.lower())]


def test_bf16_on_a_cpu_without_native_bf16_warns_once_before_the_run(tmp_path, mlp_ckpt, cli):
    copy_ckpt(mlp_ckpt, tmp_path, "m.t7")
    args = MLP + ["--model_file", "m.t7", "--x=-1:1:3", *FILTER_X, "--precision", "bf16", "--surf_file", "s.h5"]
    r = ok(cli(args, tmp_path, env={"LL_ASSUME_CPU_BF16": "0"}))
    lines, found = _bf16_warnings(r.stderr)
    assert len(found) == 1 and "emulated" in lines[found[0]], f"expected one bf16 warning line: {r.stderr!r}"
    progress = [i for i, ln in enumerate(lines) if "pt/s" in ln or "%|" in ln]
    assert not progress or found[0] < progress[0], "the warning must come before the run"
    r = ok(cli(args[:-1] + ["s2.h5"], tmp_path, env={"LL_ASSUME_CPU_BF16": "1"}))
    assert _bf16_warnings(r.stderr)[1] == [], r.stderr


def test_api_warns_too(monkeypatch, capsys):
    monkeypatch.setenv("LL_ASSUME_CPU_BF16", "0")
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    landscape.surface(net, (torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))), x="-1:1:2", precision="bf16",
                      device="cpu")
    assert len(_bf16_warnings(capsys.readouterr().err)[1]) == 1


def test_cpu_detection_reads_the_flags(monkeypatch):
    from landscape import evaluation
    monkeypatch.delenv("LL_ASSUME_CPU_BF16", raising=False)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if flags:
        assert evaluation.cpu_has_native_bf16() == any(f in flags.split() for f in ("avx512_bf16", "amx_bf16", "bf16"))
    with warnings.catch_warnings():
        monkeypatch.setenv("LL_ASSUME_CPU_BF16", "0")
        assert evaluation.bf16_warning("bf16", "cpu") and not evaluation.bf16_warning("fp32", "cpu")


def test_readme_says_bf16_is_emulated_without_cpu_support():
    lines = open(os.path.join(REPO, "README.md")).read().splitlines()
    rows = [i for i, ln in enumerate(lines) if ln.startswith("| `bf16`")]
    assert rows, "the README's precision table has no bf16 row"
    near = "\n".join(lines[max(0, rows[0] - 3):rows[0] + 6]).lower()
    assert "emulat" in near, "the README's bf16 figures do not say bf16 is emulated on CPUs without bf16 instructions"
